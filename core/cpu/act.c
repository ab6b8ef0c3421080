/* act.c (cpu): bias + activation and GEGLU, forward and backward, over the rows of [M, K]. f32
 * takes vectorised row loops (the activations' formulas from core/unary.h with vecmath.h's
 * functions, built per instruction set), f16 and bf16 too, a row at a time widened to f32 and
 * rounded back (as PyTorch computes them); f64 goes through double rows with libm. The bias
 * gradient (when wanted) is summed per thread, in float over blocks of rows and in double
 * across them, then added in thread order. */
#include "cpu.h"
#include "unary.h"
#include "vecmath.h"

#define PAR_MIN tc_cpu_par_min(TC_PAR_COMPUTE) /* elements below which one thread runs (cpu.h) */

/* ---- f32 rows -------------------------------------------------------------------------------
 * forward: y[i] = act(u[i] + bu[i]) (glu: (v[i] + bv[i]) act(u[i] + bu[i]), v the first half,
 * u the gate); false when act is not one of TC_FUSED_ACTS */
#define FWD_(OP) case TC_OP_##OP:                                                                   \
    if (glu) {                                                                                      \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                       \
            float z = u[i] + bu[i];                                                                 \
            y[i] = (v[i] + bv[i]) * (TC_ACT_##OP(float, TC_VECMATH, z));                            \
        }                                                                                           \
    } else {                                                                                        \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                       \
            float z = u[i] + bu[i];                                                                 \
            y[i] = TC_ACT_##OP(float, TC_VECMATH, z);                                               \
        }                                                                                           \
    }                                                                                               \
    return true;
TC_SIMD_CLONES
static bool act_row_f32(float *restrict y, const float *restrict u, const float *restrict bu,
                        const float *restrict v, const float *restrict bv, int64_t n, tc_op op, bool glu) {
    switch (op) {
    TC_FUSED_ACTS(FWD_)
    default: return false;
    }
}
#undef FWD_

/* backward: gu[i] = g[i] act'(z) (glu: times (v[i] + bv[i]), and gv[i] = g[i] act(z)), z =
 * u[i] + bu[i]; with su (sv) not NULL, the gradients are also added to these bias sums */
#define BWD_LOOP_(OP, SUMS)                                                                         \
    if (glu) {                                                                                      \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                       \
            float z = u[i] + bu[i], a = TC_ACT_##OP(float, TC_VECMATH, z), h = v[i] + bv[i];        \
            float d = TC_ACT_##OP##_D(float, TC_VECMATH, z, a);                                     \
            float ga = g[i] * h * d, gh = g[i] * a;                                                 \
            gu[i] = ga;                                                                             \
            gv[i] = gh;                                                                             \
            if (SUMS) { su[i] += ga; sv[i] += gh; }                                                 \
        }                                                                                           \
    } else {                                                                                        \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                       \
            float z = u[i] + bu[i], a = TC_ACT_##OP(float, TC_VECMATH, z);                          \
            float ga = g[i] * (TC_ACT_##OP##_D(float, TC_VECMATH, z, a));                           \
            (void)a;                                                                                \
            gu[i] = ga;                                                                             \
            if (SUMS) su[i] += ga;                                                                  \
        }                                                                                           \
    }
#define BWD_(OP) case TC_OP_##OP:                                                                   \
    if (su) { BWD_LOOP_(OP, 1) } else { BWD_LOOP_(OP, 0) }                                          \
    return true;
TC_SIMD_CLONES
static bool act_row_backward_f32(float *restrict gu, float *restrict gv, const float *restrict g,
                                 const float *restrict u, const float *restrict bu, const float *restrict v,
                                 const float *restrict bv, float *restrict su, float *restrict sv, int64_t n,
                                 tc_op op, bool glu) {
    switch (op) {
    TC_FUSED_ACTS(BWD_)
    default: return false;
    }
}
#undef BWD_LOOP_
#undef BWD_

/* the shape of a call: M rows of K inputs, C outputs (K / 2 for glu) */
typedef struct { int64_t M, K, C; } act_shape;
static act_shape shape_of(const tc_tensor *x, bool glu) {
    act_shape s = {x->shape[0], x->shape[1], glu ? x->shape[1] / 2 : x->shape[1]};
    return s;
}

/* ---- f32, f16 and bf16: f32 rows (a half row widened into a buffer, its result rounded back) -- */
static bool is_half(const tc_tensor *t) { return t->dtype == TC_F16 || t->dtype == TC_BF16; }

/* row m of the [M, n] tensor t as f32: t's own memory when t is f32, else widened into buf */
static const float *row_in(const tc_tensor *t, int64_t m, int64_t n, float *buf) {
    if (!is_half(t)) return (const float *)tc_data(t) + m * n;
    tc_cpu_f32_from_half(buf, 1, (const uint16_t *)tc_data(t) + m * n, 1, n, t->dtype);
    return buf;
}

/* where row m of the [M, n] tensor t is computed: in place when f32, else buf (row_out stores it) */
static float *row_at(tc_tensor *t, int64_t m, int64_t n, float *buf) {
    return is_half(t) ? buf : (float *)tc_data(t) + m * n;
}
static void row_out(tc_tensor *t, int64_t m, int64_t n, const float *buf) {
    if (is_half(t)) tc_cpu_half_from_f32((uint16_t *)tc_data(t) + m * n, 1, buf, 1, n, t->dtype);
}

/* the bias as f32 (zeros without one); NULL when out of memory */
static float *bias_f32(const tc_tensor *b, int64_t K) {
    float *v = calloc((size_t)(K ? K : 1), sizeof *v);
    if (v && b) {
        if (is_half(b)) tc_cpu_f32_from_half(v, 1, tc_data(b), 1, K, b->dtype);
        else memcpy(v, tc_data(b), (size_t)K * sizeof *v);
    }
    return v;
}

static int forward_f32(tc_tensor *y, const tc_tensor *x, const tc_tensor *b, tc_op act, bool glu) {
    act_shape s = shape_of(x, glu);
    int64_t M = s.M, K = s.K, C = s.C, gate = glu ? C : 0; /* the activated half starts at gate */
    float *bp = bias_f32(b, K);
    if (!bp) return tc_error("bias_act: out of memory");
    int err = 0;
#pragma omp parallel reduction(max : err) if (M > 1 && M * K >= PAR_MIN)
    {
        float *xb = is_half(x) ? malloc((size_t)(K + C) * sizeof *xb) : NULL, *yb = xb ? xb + K : NULL;
        bool ok = !is_half(x) || xb;
        if (!ok) err = 1;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            if (!ok) continue;
            const float *r = row_in(x, m, K, xb);
            float *o = row_at(y, m, C, yb);
            if (!act_row_f32(o, r + gate, bp + gate, r, bp, C, act, glu)) err = 2;
            row_out(y, m, C, o);
        }
        free(xb);
    }
    free(bp);
    if (err == 2) return tc_error("bias_act: %s is not a fused activation", tc_op_name(act));
    return err ? tc_error("bias_act: out of memory") : TC_OK;
}

/* the bias sums: float over blocks of SUM_ROWS rows (the row loop stays in single precision),
 * each block's added to the thread's double sums, those added in thread order */
#define SUM_ROWS 64
static int backward_f32(tc_tensor *gx, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x, const tc_tensor *b,
                        tc_op act, bool glu) {
    act_shape s = shape_of(x, glu);
    int64_t M = s.M, K = s.K, C = s.C, gate = glu ? C : 0;
    float *bp = bias_f32(b, K);
    double *acc = gb ? calloc((size_t)(K + 1), sizeof *acc) : NULL;
    int err = bp && (acc || !gb) ? 0 : 1;
    bool half = is_half(x);
#pragma omp parallel reduction(max : err) if (!err && M > 1 && M * K >= PAR_MIN)
    {
        /* this thread's sums: double, and float for the current block of rows; half rows'
         * buffers (x, gy and gx) */
        double *part = gb ? calloc((size_t)(K + 1), sizeof *part) : NULL;
        float *blk = gb ? calloc((size_t)(K + 1), sizeof *blk) : NULL;
        float *xb = half ? malloc((size_t)(2 * K + C) * sizeof *xb) : NULL, *gyb = xb ? xb + K : NULL;
        float *gxb = xb ? xb + K + C : NULL;
        bool ok = (!gb || (part && blk)) && (!half || xb);
        int64_t rows = 0;
        if (!ok) err = 1;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            if (!ok) continue;
            const float *r = row_in(x, m, K, xb), *g = row_in(gy, m, C, gyb);
            float *gr = row_at(gx, m, K, gxb);
            if (!act_row_backward_f32(gr + gate, gr, g, r + gate, bp + gate, r, bp, blk ? blk + gate : NULL, blk,
                                      C, act, glu))
                err = 2;
            row_out(gx, m, K, gr);
            if (blk && ++rows % SUM_ROWS == 0)
                for (int64_t i = 0; i < K; i++) { part[i] += blk[i]; blk[i] = 0; }
        }
        if (ok && gb) {
            for (int64_t i = 0; i < K; i++) part[i] += blk[i];
#pragma omp critical(tc_bias_act_sums)
            for (int64_t i = 0; i < K; i++) acc[i] += part[i];
        }
        free(part);
        free(blk);
        free(xb);
    }
    if (!err && gb) tc_cpu_store_row(tc_data(gb), acc, K, 1, gb->dtype);
    free(bp);
    free(acc);
    if (err == 2) return tc_error("bias_act backward: %s is not a fused activation", tc_op_name(act));
    return err ? tc_error("bias_act backward: out of memory") : TC_OK;
}

/* ---- f64: double rows, the same formulas with libm (the gradient checks' precision) -------- */
#define ACT_D_(OP) case TC_OP_##OP: *f = TC_ACT_##OP(double, TC_LIBM_F64, z); \
                                    *d = TC_ACT_##OP##_D(double, TC_LIBM_F64, z, *f); return;
static void act_double(double z, tc_op op, double *f, double *d) {
    switch (op) {
    TC_FUSED_ACTS(ACT_D_)
    default: *f = *d = NAN; return;
    }
}
#undef ACT_D_

int tc_cpu_bias_act(tc_tensor *y, const tc_tensor *x, const tc_tensor *b, tc_op act, bool glu) {
    if (x->dtype != TC_F64) return forward_f32(y, x, b, act, glu);
    act_shape s = shape_of(x, glu);
    int64_t M = s.M, K = s.K, C = s.C, gate = glu ? C : 0; /* the activated half starts at gate */
    double *buf = malloc((size_t)(K + C + 1) * sizeof *buf), *bd = calloc((size_t)(K + 1), sizeof *bd);
    if (!buf || !bd) { free(buf); free(bd); return tc_error("bias_act: out of memory"); }
    if (b) tc_cpu_load_row(bd, tc_data(b), K, 1, b->dtype);
    size_t es = tc_dtype_size(x->dtype);
    for (int64_t m = 0; m < M; m++) {
        double *r = buf, *o = buf + K;
        tc_cpu_load_row(r, (const char *)tc_data(x) + m * K * (int64_t)es, K, 1, x->dtype);
        for (int64_t i = 0; i < C; i++) {
            double f, d;
            act_double(r[gate + i] + bd[gate + i], act, &f, &d);
            o[i] = glu ? (r[i] + bd[i]) * f : f;
        }
        tc_cpu_store_row((char *)tc_data(y) + m * C * (int64_t)es, o, C, 1, y->dtype);
    }
    free(buf);
    free(bd);
    return TC_OK;
}

int tc_cpu_bias_act_backward(tc_tensor *gx, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                             const tc_tensor *b, tc_op act, bool glu) {
    if (x->dtype != TC_F64) return backward_f32(gx, gb, gy, x, b, act, glu);
    act_shape s = shape_of(x, glu);
    int64_t M = s.M, K = s.K, C = s.C, gate = glu ? C : 0;
    double *buf = malloc((size_t)(2 * K + C + 1) * sizeof *buf), *bd = calloc((size_t)(2 * K + 1), sizeof *bd);
    if (!buf || !bd) { free(buf); free(bd); return tc_error("bias_act backward: out of memory"); }
    double *acc = bd + K, *r = buf, *g = buf + K, *o = buf + K + C;
    if (b) tc_cpu_load_row(bd, tc_data(b), K, 1, b->dtype);
    size_t es = tc_dtype_size(x->dtype);
    for (int64_t m = 0; m < M; m++) {
        tc_cpu_load_row(r, (const char *)tc_data(x) + m * K * (int64_t)es, K, 1, x->dtype);
        tc_cpu_load_row(g, (const char *)tc_data(gy) + m * C * (int64_t)es, C, 1, gy->dtype);
        for (int64_t i = 0; i < C; i++) {
            double f, d, h = glu ? r[i] + bd[i] : 1;
            act_double(r[gate + i] + bd[gate + i], act, &f, &d);
            o[gate + i] = g[i] * h * d;
            if (glu) o[i] = g[i] * f;
        }
        for (int64_t i = 0; i < K; i++) acc[i] += o[i];
        tc_cpu_store_row((char *)tc_data(gx) + m * K * (int64_t)es, o, K, 1, gx->dtype);
    }
    if (gb) tc_cpu_store_row(tc_data(gb), acc, K, 1, gb->dtype);
    free(buf);
    free(bd);
    return TC_OK;
}
