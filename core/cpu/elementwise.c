/* elementwise.c (cpu): copy, fill, unary ops and their derivatives, binary ops and where.
 * f32 and f64 get typed loops (one switch per run, not per element); other dtypes go
 * through a double-precision path with load/store. */
#include "cpu.h"

#include <string.h>
#include <tgmath.h> /* exp, log, ... pick the float or double version by type */

#define SQRT1_2 0.70710678118654752440
#define SQRT2_PI 0.79788456080286535588 /* sqrt(2/pi) */

/* one formula per op, in double; the typed loops below instantiate them for f32 too */
#define UNARY_CASES(x, a, b, F)                                                           \
    case TC_OP_NEG: F(-(x));                                                              \
    case TC_OP_EXP: F(exp(x));                                                            \
    case TC_OP_LOG: F(log(x));                                                            \
    case TC_OP_SQRT: F(sqrt(x));                                                          \
    case TC_OP_RSQRT: F(1 / sqrt(x));                                                     \
    case TC_OP_ABS: F(fabs(x));                                                           \
    case TC_OP_SIN: F(sin(x));                                                            \
    case TC_OP_COS: F(cos(x));                                                            \
    case TC_OP_TANH: F(tanh(x));                                                          \
    case TC_OP_SIGMOID: F(1 / (1 + exp(-(x))));                                           \
    case TC_OP_RELU: F((x) > 0 ? (x) : 0);                                                \
    case TC_OP_SILU: F((x) / (1 + exp(-(x))));                                            \
    case TC_OP_GELU: F(0.5 * (x) * (1 + erf((x) * SQRT1_2)));                             \
    case TC_OP_GELU_TANH: F(0.5 * (x) * (1 + tanh(SQRT2_PI * ((x) + 0.044715 * (x) * (x) * (x))))); \
    case TC_OP_QUICK_GELU: F((x) / (1 + exp(-1.702 * (x))));                              \
    case TC_OP_SOFTPLUS: F((x) > 20 ? (x) : log1p(exp(x)));                               \
    case TC_OP_SIGN: F((x) > 0 ? 1 : (x) < 0 ? -1 : 0);                                   \
    case TC_OP_RECIPROCAL: F(1 / (x));                                                    \
    case TC_OP_SQUARE: F((x) * (x));                                                      \
    case TC_OP_LOGICAL_NOT: F((x) == 0);                                                  \
    case TC_OP_ISFINITE: F(isfinite(x) ? 1 : 0);                                          \
    case TC_OP_ADD_SCALAR: F((x) + (a));                                                  \
    case TC_OP_MUL_SCALAR: F((x) * (a));                                                  \
    case TC_OP_POW_SCALAR: F((a) == 2 ? (x) * (x) : pow(x, a));                           \
    case TC_OP_RPOW_SCALAR: F(pow(a, x));                                                 \
    case TC_OP_RSUB_SCALAR: F((a) - (x));                                                 \
    case TC_OP_RDIV_SCALAR: F((a) / (x));                                                 \
    case TC_OP_CLAMP: F(isnan(x) ? (x) : (x) < (a) ? (a) : (x) > (b) ? (b) : (x));        \
    case TC_OP_LEAKY_RELU: F((x) > 0 ? (x) : (x) * (a));

/* d y / d x given x and y (repeated subexpressions are left to the compiler) */
#define SIG_(v) (1 / (1 + exp(-(v))))
#define TANHU_(v) tanh(SQRT2_PI * ((v) + 0.044715 * (v) * (v) * (v)))
#define DERIV_CASES(x, y, a, b, F)                                                        \
    case TC_OP_NEG: F(-1);                                                                \
    case TC_OP_EXP: F(y);                                                                 \
    case TC_OP_LOG: F(1 / (x));                                                           \
    case TC_OP_SQRT: F(0.5 / (y));                                                        \
    case TC_OP_RSQRT: F(-0.5 * (y) * (y) * (y));                                          \
    case TC_OP_ABS: F((x) > 0 ? 1 : (x) < 0 ? -1 : 0);                                    \
    case TC_OP_SIN: F(cos(x));                                                            \
    case TC_OP_COS: F(-sin(x));                                                           \
    case TC_OP_TANH: F(1 - (y) * (y));                                                    \
    case TC_OP_SIGMOID: F((y) * (1 - (y)));                                               \
    case TC_OP_RELU: F((x) > 0 ? 1 : 0);                                                  \
    case TC_OP_SILU: F(SIG_(x) * (1 + (x) * (1 - SIG_(x))));                                 \
    case TC_OP_GELU: F(0.5 * (1 + erf((x) * SQRT1_2)) + (x) * exp(-0.5 * (x) * (x)) * 0.39894228040143267794); \
    case TC_OP_GELU_TANH: F(0.5 * (1 + TANHU_(x)) + 0.5 * (x) * (1 - TANHU_(x) * TANHU_(x)) * SQRT2_PI * (1 + 3 * 0.044715 * (x) * (x))); \
    case TC_OP_QUICK_GELU: F(SIG_(1.702 * (x)) + 1.702 * (x) * SIG_(1.702 * (x)) * (1 - SIG_(1.702 * (x))));   \
    case TC_OP_SOFTPLUS: F((x) > 20 ? 1 : 1 / (1 + exp(-(x))));                           \
    case TC_OP_RECIPROCAL: F(-(y) * (y));                                                 \
    case TC_OP_SQUARE: F(2 * (x));                                                        \
    case TC_OP_ADD_SCALAR: F(1);                                                          \
    case TC_OP_MUL_SCALAR: F(a);                                                          \
    case TC_OP_POW_SCALAR: F((a) == 0 ? 0 : (a) * pow(x, (a) - 1));                       \
    case TC_OP_RPOW_SCALAR: F((y) * log(a));                                              \
    case TC_OP_RSUB_SCALAR: F(-1);                                                        \
    case TC_OP_RDIV_SCALAR: F(-(a) / ((x) * (x)));                                        \
    case TC_OP_CLAMP: F((x) >= (a) && (x) <= (b) ? 1 : 0);                                \
    case TC_OP_LEAKY_RELU: F((x) > 0 ? 1 : (a));

typedef struct { tc_op op; double a, b; tc_dtype dt[4]; } ew_ctx;

/* ---- copy and fill ---------------------------------------------------------------------- */
static void copy_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    size_t es = tc_dtype_size(c->dt[0]);
    if (c->dt[0] == c->dt[1]) {
        if (st[0] == 1 && st[1] == 1) { memcpy(p[0], p[1], (size_t)n * es); return; }
        for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * st[0] * (int64_t)es, p[1] + i * st[1] * (int64_t)es, es);
        return;
    }
    if (c->dt[0] == TC_F32 && c->dt[1] == TC_F64) {
        for (int64_t i = 0; i < n; i++) ((float *)p[0])[i * st[0]] = (float)((double *)p[1])[i * st[1]];
        return;
    }
    if (c->dt[0] == TC_F64 && c->dt[1] == TC_F32) {
        for (int64_t i = 0; i < n; i++) ((double *)p[0])[i * st[0]] = ((float *)p[1])[i * st[1]];
        return;
    }
    size_t ei = tc_dtype_size(c->dt[1]);
    for (int64_t i = 0; i < n; i++)
        tc_store(p[0] + i * st[0] * (int64_t)es, c->dt[0], tc_load(p[1] + i * st[1] * (int64_t)ei, c->dt[1]));
}

int tc_cpu_copy(tc_tensor *dst, const tc_tensor *src) {
    const tc_tensor *ts[2] = {dst, src};
    tc_iter it;
    tc_iter_init(&it, 2, ts);
    ew_ctx c = {.dt = {dst->dtype, src->dtype}};
    tc_iter_run(&it, copy_run, &c);
    return TC_OK;
}

static void fill_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    size_t es = tc_dtype_size(c->dt[0]);
    if (c->dt[0] == TC_F32) {
        float v = (float)c->a;
        for (int64_t i = 0; i < n; i++) ((float *)p[0])[i * st[0]] = v;
        return;
    }
    char one[8];
    tc_store(one, c->dt[0], c->a);
    for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * st[0] * (int64_t)es, one, es);
}

int tc_cpu_fill(tc_tensor *dst, double v) {
    const tc_tensor *ts[1] = {dst};
    tc_iter it;
    tc_iter_init(&it, 1, ts);
    ew_ctx c = {.a = v, .dt = {dst->dtype}};
    tc_iter_run(&it, fill_run, &c);
    return TC_OK;
}

/* ---- unary ------------------------------------------------------------------------------- */
#define RET_(e) { for (int64_t i = 0; i < n; i++) { E x = X(i); (void)x; Y(i) = (E)(e); } return; }
#define DEF_UNARY(NAME, T)                                                                 \
    static void NAME(int64_t n, char **p, const int64_t *st, void *vctx) { typedef T E;                \
        ew_ctx *c = vctx;                                                                  \
        T a = (T)c->a, b = (T)c->b;                                                        \
        (void)a; (void)b;                                                                  \
        switch (c->op) { UNARY_CASES(x, a, b, RET_) default: return; }                     \
    }
#define X(i) ((E *)p[1])[(i) * st[1]]
#define Y(i) ((E *)p[0])[(i) * st[0]]
DEF_UNARY(unary_f32, float)
DEF_UNARY(unary_f64, double)
#undef Y
#undef X
#undef RET_

#define RETD_(e) { for (int64_t i = 0; i < n; i++) { double x = tc_load(p[1] + i * st[1] * ei, c->dt[1]); \
                       tc_store(p[0] + i * st[0] * eo, c->dt[0], (e)); } return; }
static void unary_any(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    int64_t eo = (int64_t)tc_dtype_size(c->dt[0]), ei = (int64_t)tc_dtype_size(c->dt[1]);
    double a = c->a, b = c->b;
    switch (c->op) { UNARY_CASES(x, a, b, RETD_) default: return; }
}
#undef RETD_

int tc_cpu_unary(tc_tensor *out, const tc_tensor *x, tc_op op, double a, double b) {
    const tc_tensor *ts[2] = {out, x};
    tc_iter it;
    tc_iter_init(&it, 2, ts);
    ew_ctx c = {op, a, b, {out->dtype, x->dtype}};
    bool same = out->dtype == x->dtype;
    tc_iter_run(&it, same && x->dtype == TC_F32 ? unary_f32 : same && x->dtype == TC_F64 ? unary_f64 : unary_any, &c);
    return TC_OK;
}

/* operands: gx, gy, x, y (x or y may be absent: then gy stands in, never read) */
#define RETG_(e) { for (int64_t i = 0; i < n; i++) { E x = X(i), y = YY(i); (void)x; (void)y; \
                       G(i) = GY(i) * (E)(e); } return; }
#define DEF_UNARY_BW(NAME, T)                                                              \
    static void NAME(int64_t n, char **p, const int64_t *st, void *vctx) { typedef T E;                \
        ew_ctx *c = vctx;                                                                  \
        T a = (T)c->a, b = (T)c->b;                                                        \
        (void)a; (void)b;                                                                  \
        switch (c->op) { DERIV_CASES(x, y, a, b, RETG_) default: return; }                 \
    }
#define G(i) ((E *)p[0])[(i) * st[0]]
#define GY(i) ((E *)p[1])[(i) * st[1]]
#define X(i) ((E *)p[2])[(i) * st[2]]
#define YY(i) ((E *)p[3])[(i) * st[3]]
DEF_UNARY_BW(unary_bw_f32, float)
DEF_UNARY_BW(unary_bw_f64, double)
#undef G
#undef GY
#undef X
#undef YY
#undef RETG_

#define RETGD_(e) { for (int64_t i = 0; i < n; i++) {                                       \
        double x = tc_load(p[2] + i * st[2] * e2, c->dt[2]), y = tc_load(p[3] + i * st[3] * e3, c->dt[3]); \
        (void)x; (void)y;                                                                   \
        tc_store(p[0] + i * st[0] * e0, c->dt[0], tc_load(p[1] + i * st[1] * e1, c->dt[1]) * (e)); } return; }
static void unary_bw_any(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    int64_t e0 = (int64_t)tc_dtype_size(c->dt[0]), e1 = (int64_t)tc_dtype_size(c->dt[1]),
            e2 = (int64_t)tc_dtype_size(c->dt[2]), e3 = (int64_t)tc_dtype_size(c->dt[3]);
    double a = c->a, b = c->b;
    switch (c->op) { DERIV_CASES(x, y, a, b, RETGD_) default: return; }
}
#undef RETGD_

int tc_cpu_unary_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x, const tc_tensor *y,
                          tc_op op, double a, double b) {
    const tc_tensor *ts[4] = {gx, gy, x ? x : gy, y ? y : gy};
    tc_iter it;
    tc_iter_init(&it, 4, ts);
    ew_ctx c = {op, a, b, {gx->dtype, gy->dtype, ts[2]->dtype, ts[3]->dtype}};
    bool f32 = true, f64 = true;
    for (int k = 0; k < 4; k++) { f32 &= ts[k]->dtype == TC_F32; f64 &= ts[k]->dtype == TC_F64; }
    tc_iter_run(&it, f32 ? unary_bw_f32 : f64 ? unary_bw_f64 : unary_bw_any, &c);
    return TC_OK;
}

/* ---- binary -------------------------------------------------------------------------------- */
#define BINARY_CASES(x, y, F)                                                              \
    case TC_OP_ADD: F((x) + (y));                                                          \
    case TC_OP_SUB: F((x) - (y));                                                          \
    case TC_OP_MUL: F((x) * (y));                                                          \
    case TC_OP_DIV: F((x) / (y));                                                          \
    case TC_OP_POW: F(pow(x, y));                                                          \
    case TC_OP_MAXIMUM: F((x) != (x) || (x) > (y) ? (x) : (y)); /* x != x: NaN wins */                              \
    case TC_OP_MINIMUM: F((x) != (x) || (x) < (y) ? (x) : (y));
#define COMPARE_CASES(x, y, F)                                                             \
    case TC_OP_EQ: F((x) == (y));                                                          \
    case TC_OP_NE: F((x) != (y));                                                          \
    case TC_OP_LT: F((x) < (y));                                                           \
    case TC_OP_LE: F((x) <= (y));                                                          \
    case TC_OP_GT: F((x) > (y));                                                           \
    case TC_OP_GE: F((x) >= (y));                                                          \
    case TC_OP_LOGICAL_AND: F((x) != 0 && (y) != 0);                                       \
    case TC_OP_LOGICAL_OR: F((x) != 0 || (y) != 0);

#define RETB_(e) { for (int64_t i = 0; i < n; i++) { E x = A(i), y = B(i); OUT(i) = (E)(e); } return; }
#define RETC_(e) { for (int64_t i = 0; i < n; i++) { E x = A(i), y = B(i); CMP(i) = (uint8_t)(e); } return; }
#define DEF_BINARY(NAME, T)                                                                \
    static void NAME(int64_t n, char **p, const int64_t *st, void *vctx) { typedef T E;                \
        ew_ctx *c = vctx;                                                                  \
        if (st[0] == 1 && st[1] == 1 && st[2] == 1) { /* the common case, vectorisable */ \
            T *restrict o = (T *)p[0];                                                     \
            const T *restrict u = (const T *)p[1], *restrict v = (const T *)p[2];          \
            switch (c->op) {                                                               \
            case TC_OP_ADD: for (int64_t i = 0; i < n; i++) o[i] = u[i] + v[i]; return;    \
            case TC_OP_SUB: for (int64_t i = 0; i < n; i++) o[i] = u[i] - v[i]; return;    \
            case TC_OP_MUL: for (int64_t i = 0; i < n; i++) o[i] = u[i] * v[i]; return;    \
            default: break;                                                                \
            }                                                                              \
        }                                                                                  \
        switch (c->op) { BINARY_CASES(x, y, RETB_) COMPARE_CASES(x, y, RETC_) default: return; } \
    }
#define A(i) ((E *)p[1])[(i) * st[1]]
#define B(i) ((E *)p[2])[(i) * st[2]]
#define OUT(i) ((E *)p[0])[(i) * st[0]]
#define CMP(i) ((uint8_t *)p[0])[(i) * st[0]]
DEF_BINARY(binary_f32, float)
DEF_BINARY(binary_f64, double)
DEF_BINARY(binary_i64, int64_t)
#undef A
#undef B
#undef OUT
#undef CMP
#undef RETB_
#undef RETC_

#define RETBD_(e) { for (int64_t i = 0; i < n; i++) { double x = LD(1, i), y = LD(2, i);   \
                        tc_store(p[0] + i * st[0] * e0, c->dt[0], (e)); } return; }
#define LD(k, i) tc_load(p[k] + (i) * st[k] * e##k, c->dt[k])
static void binary_any(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    int64_t e0 = (int64_t)tc_dtype_size(c->dt[0]), e1 = (int64_t)tc_dtype_size(c->dt[1]),
            e2 = (int64_t)tc_dtype_size(c->dt[2]);
    switch (c->op) { BINARY_CASES(x, y, RETBD_) COMPARE_CASES(x, y, RETBD_) default: return; }
}
#undef LD
#undef RETBD_

int tc_cpu_binary(tc_tensor *out, const tc_tensor *a, const tc_tensor *b, tc_op op) {
    const tc_tensor *ts[3] = {out, a, b};
    tc_iter it;
    tc_iter_init(&it, 3, ts);
    ew_ctx c = {op, 0, 0, {out->dtype, a->dtype, b->dtype}};
    tc_iter_fn fn = binary_any;
    bool pow_int = op == TC_OP_POW && !tc_dtype_is_float(a->dtype);
    if (a->dtype == b->dtype && (out->dtype == a->dtype || out->dtype == TC_BOOL) && !pow_int) {
        if (a->dtype == TC_F32) fn = binary_f32;
        else if (a->dtype == TC_F64) fn = binary_f64;
        else if (a->dtype == TC_I64 && op != TC_OP_DIV) fn = binary_i64;
    }
    tc_iter_run(&it, fn, &c);
    return TC_OK;
}

static void where_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    int64_t es = (int64_t)tc_dtype_size(c->dt[0]);
    for (int64_t i = 0; i < n; i++) {
        const char *src = p[1][i * st[1]] ? p[2] + i * st[2] * es : p[3] + i * st[3] * es;
        memcpy(p[0] + i * st[0] * es, src, (size_t)es);
    }
}

int tc_cpu_where(tc_tensor *out, const tc_tensor *cond, const tc_tensor *a, const tc_tensor *b) {
    const tc_tensor *ts[4] = {out, cond, a, b};
    tc_iter it;
    tc_iter_init(&it, 4, ts);
    ew_ctx c = {.dt = {out->dtype}};
    tc_iter_run(&it, where_run, &c);
    return TC_OK;
}
