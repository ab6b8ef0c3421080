/* elementwise.c (cpu): copy, fill, unary ops and their derivatives, binary ops and where.
 * f32 and f64 get typed loops (one switch per run, not per element); other dtypes go
 * through a double-precision path with load/store. The unary formulas are core/unary.h's,
 * shared with the CUDA kernels; contiguous f32 runs of the hot ops take vectorised loops
 * (vecmath.h) first. */
#include "cpu.h"
#include "unary.h"
#include "vecmath.h"

#include <string.h>
#include <tgmath.h> /* the binary ops' pow: powf for f32, pow for f64 */

typedef struct { tc_op op; double a, b; tc_dtype dt[4]; } ew_ctx;

/* ---- copy and fill ---------------------------------------------------------------------- */
/* d (dtype dd) from s (dtype ds), one of them f32 and the other f16 or bf16 (half.c) */
static void half_run(int64_t n, char *d, int64_t sd, tc_dtype dd, const char *s, int64_t ss, tc_dtype ds) {
    if (dd == TC_F32) tc_cpu_f32_from_half((float *)d, sd, (const uint16_t *)s, ss, n, ds);
    else tc_cpu_half_from_f32((uint16_t *)d, sd, (const float *)s, ss, n, dd);
}

static bool is_half(tc_dtype dt) { return dt == TC_F16 || dt == TC_BF16; }

/* a run whose operands are all one half dtype, through an f32 run in chunks: inputs
 * widened, the f32 kernel, the output rounded back (as PyTorch computes half ops in f32);
 * the double-precision path per element costs ten times more */
#define HALF_CHUNK 256
static void through_f32(int64_t n, char **p, const int64_t *st, ew_ctx *c, int nops, tc_iter_fn f32_run) {
    float buf[4][HALF_CHUNK];
    char *q[4];
    int64_t unit[4] = {1, 1, 1, 1};
    tc_dtype dt = c->dt[0];
    for (int k = 0; k < nops; k++) q[k] = (char *)buf[k];
    for (int64_t i0 = 0; i0 < n; i0 += HALF_CHUNK) {
        int64_t m = n - i0 < HALF_CHUNK ? n - i0 : HALF_CHUNK;
        for (int k = 1; k < nops; k++) half_run(m, q[k], 1, TC_F32, p[k] + i0 * st[k] * 2, st[k], dt);
        f32_run(m, q, unit, c);
        half_run(m, p[0] + i0 * st[0] * 2, st[0], dt, q[0], 1, TC_F32);
    }
}

static void copy_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    size_t es = tc_dtype_size(c->dt[0]);
    if (c->dt[0] == c->dt[1]) {
        if (st[0] == 1 && st[1] == 1) { memcpy(p[0], p[1], (size_t)n * es); return; }
        /* strided (transposes, expanded gradients): typed moves, not a memcpy per element */
        if (es == 4) {
            uint32_t *d = (uint32_t *)p[0];
            const uint32_t *s = (const uint32_t *)p[1];
            if (st[0] == 1 && st[1] == 0) { /* one value repeated (an expanded gradient) */
                uint32_t v = s[0];
#pragma omp simd
                for (int64_t i = 0; i < n; i++) d[i] = v;
            } else
                for (int64_t i = 0; i < n; i++) d[i * st[0]] = s[i * st[1]];
        } else if (es == 8) {
            uint64_t *d = (uint64_t *)p[0];
            const uint64_t *s = (const uint64_t *)p[1];
            for (int64_t i = 0; i < n; i++) d[i * st[0]] = s[i * st[1]];
        } else
            for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * st[0] * (int64_t)es, p[1] + i * st[1] * (int64_t)es, es);
        return;
    }
    if ((c->dt[0] == TC_F32 && is_half(c->dt[1])) || (is_half(c->dt[0]) && c->dt[1] == TC_F32)) {
        half_run(n, p[0], st[0], c->dt[0], p[1], st[1], c->dt[1]);
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

/* ---- transposing copies: dst steps by 1 along its last dim and src along the one before (a
 * permuted activation or its gradient made contiguous). Run by run, each element read came from
 * a cache line of its own; in tiles of 16 x 16, each line read serves 16 elements, and 4-byte
 * elements move as 4 x 4 blocks turned in registers (8 shuffles for 16 elements, where the
 * element-wise loop took 8 instructions an element). */
#define TILE 16
typedef uint32_t v4u __attribute__((vector_size(16)));
/* the 4 x 4 block at d (rows ds apart) = the transpose of the one at s (rows ss apart) */
static inline void transpose4(uint32_t *d, const uint32_t *s, int64_t ds, int64_t ss) {
    v4u r0, r1, r2, r3;
    memcpy(&r0, s, sizeof r0);
    memcpy(&r1, s + ss, sizeof r1);
    memcpy(&r2, s + 2 * ss, sizeof r2);
    memcpy(&r3, s + 3 * ss, sizeof r3);
    v4u t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5), t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
    v4u t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5), t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
    r0 = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
    r1 = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
    r2 = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
    r3 = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
    memcpy(d, &r0, sizeof r0);
    memcpy(d + ds, &r1, sizeof r1);
    memcpy(d + 2 * ds, &r2, sizeof r2);
    memcpy(d + 3 * ds, &r3, sizeof r3);
}

/* d[i ds + j] = s[i + j ss] for i in [i0, i1), j in [j0, j1) */
#define TRANSPOSE_(E) \
    for (int64_t i = i0; i < i1; i++) \
        for (int64_t j = j0; j < j1; j++) ((E *)d)[i * ds + j] = ((const E *)s)[i + j * ss];
static void transpose_part(char *d, const char *s, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t ds,
                           int64_t ss, size_t es) {
    switch (es) {
    case 2: TRANSPOSE_(uint16_t) break;
    case 4: TRANSPOSE_(uint32_t) break;
    default: TRANSPOSE_(uint64_t) break;
    }
}
#undef TRANSPOSE_

/* d[i ds + j] = s[i + j ss] for i in [a0, a1), j < B (strides in elements of es bytes); a0 a
 * multiple of TILE */
static void transpose(char *d, const char *s, int64_t a0, int64_t a1, int64_t B, int64_t ds, int64_t ss, size_t es) {
    int64_t A4 = es == 4 ? a0 + (a1 - a0) / 4 * 4 : a0, B4 = es == 4 ? B / 4 * 4 : 0; /* the blocks' part */
    for (int64_t i0 = a0; i0 < A4; i0 += TILE)
        for (int64_t j0 = 0; j0 < B4; j0 += TILE) {
            int64_t i1 = i0 + TILE < A4 ? i0 + TILE : A4, j1 = j0 + TILE < B4 ? j0 + TILE : B4;
            for (int64_t i = i0; i < i1; i += 4)
                for (int64_t j = j0; j < j1; j += 4)
                    transpose4((uint32_t *)d + i * ds + j, (const uint32_t *)s + i + j * ss, ds, ss);
        }
    transpose_part(d, s, a0, A4, B4, B, ds, ss, es); /* the columns right of the blocks */
    for (int64_t i0 = A4; i0 < a1; i0 += TILE)        /* the rows below them, all columns */
        for (int64_t j0 = 0; j0 < B; j0 += TILE)
            transpose_part(d, s, i0, i0 + TILE < a1 ? i0 + TILE : a1, j0, j0 + TILE < B ? j0 + TILE : B, ds, ss, es);
}

/* a copy between one dtype of the transposing kind, done: true; false when it is not one */
static bool copy_transposed(const tc_iter *it) {
    int nd = it->ndim;
    size_t es = it->esize[0];
    if (nd < 2 || it->esize[1] != es || (es != 2 && es != 4 && es != 8)) return false;
    int64_t A = it->shape[nd - 2], B = it->shape[nd - 1], ds = it->stride[0][nd - 2], ss = it->stride[1][nd - 1];
    if (it->stride[0][nd - 1] != 1 || it->stride[1][nd - 2] != 1 || ss == 0 || A < TILE / 2 || B < TILE / 2)
        return false;
    int64_t slabs = 1, bands = (A + TILE - 1) / TILE; /* each slab in bands of a tile's rows */
    for (int d = 0; d < nd - 2; d++) slabs *= it->shape[d];
#pragma omp parallel for schedule(static) if (slabs * bands > 1 && tc_cpu_parallel(2 * slabs * A * B, TC_PAR_MEMORY))
    for (int64_t k = 0; k < slabs * bands; k++) {
        int64_t od = tc_cpu_offset_of(k / bands, nd - 2, it->shape, it->stride[0]);
        int64_t os = tc_cpu_offset_of(k / bands, nd - 2, it->shape, it->stride[1]);
        int64_t a0 = k % bands * TILE, a1 = a0 + TILE < A ? a0 + TILE : A;
        transpose(it->base[0] + od * (int64_t)es, it->base[1] + os * (int64_t)es, a0, a1, B, ds, ss, es);
    }
    return true;
}
#undef TILE

int tc_cpu_copy(tc_tensor *dst, const tc_tensor *src) {
    const tc_tensor *ts[2] = {dst, src};
    tc_iter it;
    tc_iter_init(&it, 2, ts);
    if (dst->dtype == src->dtype && copy_transposed(&it)) return TC_OK;
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
#define FWD_CASE_(op, fk, f, dk, uses, d) case TC_OP_##op: RET_(f)
#define RET_(e) { for (int64_t i = 0; i < n; i++) { E x = X(i); (void)x; Y(i) = (E)(e); } return; }
#define DEF_UNARY(NAME, T, M)                                                              \
    static void NAME(int64_t n, char **p, const int64_t *st, void *vctx) { typedef T E;    \
        ew_ctx *c = vctx;                                                                  \
        T a = (T)c->a, b = (T)c->b;                                                        \
        (void)a; (void)b;                                                                  \
        switch (c->op) { TC_UNARY_OPS(FWD_CASE_, T, M) default: return; }                 \
    }
#define X(i) ((E *)p[1])[(i) * st[1]]
#define Y(i) ((E *)p[0])[(i) * st[0]]
DEF_UNARY(unary_f32, float, TC_LIBM_F32)
DEF_UNARY(unary_f64, double, TC_LIBM_F64)
#undef Y
#undef X
#undef RET_

#define RET_(e) { for (int64_t i = 0; i < n; i++) { double x = tc_load(p[1] + i * st[1] * ei, c->dt[1]); \
                      tc_store(p[0] + i * st[0] * eo, c->dt[0], (e)); } return; }
static void unary_any(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    int64_t eo = (int64_t)tc_dtype_size(c->dt[0]), ei = (int64_t)tc_dtype_size(c->dt[1]);
    double a = c->a, b = c->b;
    (void)b;
    switch (c->op) { TC_UNARY_OPS(FWD_CASE_, double, TC_LIBM_F64) default: return; }
}
#undef RET_
#undef FWD_CASE_

/* contiguous f32 runs of the ops whose formula vectorises (V in the list), vectorised;
 * false: not one of them */
#define SIMD_(e) { _Pragma("omp simd") for (int64_t i = 0; i < n; i++) { float x = xs[i]; y[i] = (e); } return true; }
#define VEC_CASE_(op, fk, f, dk, uses, d) TC_UNARY_IF_VEC_##fk(case TC_OP_##op: SIMD_(f))
TC_SIMD_CLONES
static bool unary_f32_simd(int64_t n, float *restrict y, const float *restrict xs, tc_op op, float a) {
    switch (op) {
    TC_UNARY_OPS(VEC_CASE_, float, TC_VECMATH)
    default: return false;
    }
}
#undef VEC_CASE_
#undef SIMD_

/* the vectorised sin and cos hold for |x| < TC_TRIG_MAX: the rare larger arguments (and inf,
 * NaN) are redone with libm, forward (g NULL: y = f(x)) or derivative (g = gy f'(x)) */
static void trig_redo(int64_t n, float *out, const float *gy, const float *x, tc_op op) {
    if (op != TC_OP_SIN && op != TC_OP_COS) return;
    for (int64_t i = 0; i < n; i++) {
        if (fabsf(x[i]) < TC_TRIG_MAX) continue;
        bool sin_ = (op == TC_OP_SIN) != (gy != NULL); /* the derivative of sin is cos */
        float v = sin_ ? sinf(x[i]) : cosf(x[i]);
        out[i] = gy ? gy[i] * (op == TC_OP_COS ? -v : v) : v;
    }
}

/* f32 runs: contiguous ones straight through unary_f32_simd, strided ones through it in
 * chunks, so that a result never depends on the layout; other ops in the typed loop */
#define CHUNK 256
static void unary_f32_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    float *y = (float *)p[0], a = (float)c->a;
    const float *x = (const float *)p[1];
    if (st[0] == 1 && st[1] == 1) {
        if (!unary_f32_simd(n, y, x, c->op, a)) unary_f32(n, p, st, vctx);
        else trig_redo(n, y, NULL, x, c->op);
        return;
    }
    float xb[CHUNK], yb[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        for (int64_t j = 0; j < m; j++) xb[j] = x[(i0 + j) * st[1]];
        if (!unary_f32_simd(m, yb, xb, c->op, a)) { unary_f32(n, p, st, vctx); return; } /* the first chunk */
        trig_redo(m, yb, NULL, xb, c->op);
        for (int64_t j = 0; j < m; j++) y[(i0 + j) * st[0]] = yb[j];
    }
}

static void unary_half(int64_t n, char **p, const int64_t *st, void *vctx) { through_f32(n, p, st, vctx, 2, unary_f32_run); }

/* the ops whose formula calls exp, log, erf, tanh, sin, cos or pow (forward or derivative):
 * tens of operations an element, so their loops go parallel at the compute minimum (a
 * quick_gelu of 200K elements takes 85 us on one thread, a copy of that size 15 us) */
static tc_par_kind par_kind(tc_op op, double a) {
    switch (op) {
    case TC_OP_EXP: case TC_OP_LOG: case TC_OP_SIN: case TC_OP_COS: case TC_OP_TANH: case TC_OP_SIGMOID:
    case TC_OP_SILU: case TC_OP_GELU: case TC_OP_GELU_TANH: case TC_OP_QUICK_GELU: case TC_OP_SOFTPLUS:
    case TC_OP_RPOW_SCALAR: case TC_OP_POW:
        return TC_PAR_COMPUTE;
    case TC_OP_POW_SCALAR: return a == 2 ? TC_PAR_MEMORY : TC_PAR_COMPUTE;
    default: return TC_PAR_MEMORY;
    }
}

int tc_cpu_unary(tc_tensor *out, const tc_tensor *x, tc_op op, double a, double b) {
    const tc_tensor *ts[2] = {out, x};
    tc_iter it;
    tc_iter_init(&it, 2, ts);
    it.kind = par_kind(op, a);
    ew_ctx c = {op, a, b, {out->dtype, x->dtype}};
    bool same = out->dtype == x->dtype;
    tc_iter_run(&it, same && x->dtype == TC_F32 ? unary_f32_run : same && x->dtype == TC_F64 ? unary_f64
                     : same && is_half(x->dtype) ? unary_half : unary_any, &c);
    return TC_OK;
}

/* operands: gx, gy, x, y (x or y may be absent: then gy stands in, never read) */
#define DER_CASE_(op, fk, f, dk, uses, d) TC_UNARY_IF_DIFF_##dk(case TC_OP_##op: RET_(d))
#define RET_(e) { for (int64_t i = 0; i < n; i++) { E x = X(i), y = YY(i); (void)x; (void)y; \
                      G(i) = GY(i) * (E)(e); } return; }
#define DEF_UNARY_BW(NAME, T, M)                                                           \
    static void NAME(int64_t n, char **p, const int64_t *st, void *vctx) { typedef T E;    \
        ew_ctx *c = vctx;                                                                  \
        T a = (T)c->a, b = (T)c->b;                                                        \
        (void)a; (void)b;                                                                  \
        switch (c->op) { TC_UNARY_OPS(DER_CASE_, T, M) default: return; }                 \
    }
#define G(i) ((E *)p[0])[(i) * st[0]]
#define GY(i) ((E *)p[1])[(i) * st[1]]
#define X(i) ((E *)p[2])[(i) * st[2]]
#define YY(i) ((E *)p[3])[(i) * st[3]]
DEF_UNARY_BW(unary_bw_f32, float, TC_LIBM_F32)
DEF_UNARY_BW(unary_bw_f64, double, TC_LIBM_F64)
#undef G
#undef GY
#undef X
#undef YY
#undef RET_

#define RET_(e) { for (int64_t i = 0; i < n; i++) {                                          \
        double x = tc_load(p[2] + i * st[2] * e2, c->dt[2]), y = tc_load(p[3] + i * st[3] * e3, c->dt[3]); \
        (void)x; (void)y;                                                                   \
        tc_store(p[0] + i * st[0] * e0, c->dt[0], tc_load(p[1] + i * st[1] * e1, c->dt[1]) * (e)); } return; }
static void unary_bw_any(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    int64_t e0 = (int64_t)tc_dtype_size(c->dt[0]), e1 = (int64_t)tc_dtype_size(c->dt[1]),
            e2 = (int64_t)tc_dtype_size(c->dt[2]), e3 = (int64_t)tc_dtype_size(c->dt[3]);
    double a = c->a, b = c->b;
    (void)b;
    switch (c->op) { TC_UNARY_OPS(DER_CASE_, double, TC_LIBM_F64) default: return; }
}
#undef RET_
#undef DER_CASE_

/* contiguous f32 runs of the derivatives that vectorise, vectorised; x or y may alias gy
 * where absent */
#define SIMD_(e) { _Pragma("omp simd") for (int64_t i = 0; i < n; i++) { float x = xs[i], y = ys[i]; (void)x; (void)y; \
                       g[i] = gy[i] * (e); } return true; }
#define VEC_CASE_(op, fk, f, dk, uses, d) TC_UNARY_IF_VEC_##dk(case TC_OP_##op: SIMD_(d))
TC_SIMD_CLONES
static bool unary_bw_f32_simd(int64_t n, float *restrict g, const float *restrict gy, const float *restrict xs,
                              const float *restrict ys, tc_op op, float a) {
    switch (op) {
    TC_UNARY_OPS(VEC_CASE_, float, TC_VECMATH)
    default: return false;
    }
}
#undef VEC_CASE_
#undef SIMD_

/* as unary_f32_run: operands gx, gy, x, y */
static void unary_bw_f32_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    float *g = (float *)p[0], a = (float)c->a;
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
        if (!unary_bw_f32_simd(n, g, (const float *)p[1], (const float *)p[2], (const float *)p[3], c->op, a))
            unary_bw_f32(n, p, st, vctx);
        else trig_redo(n, g, (const float *)p[1], (const float *)p[2], c->op);
        return;
    }
    float in[3][CHUNK], gb[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        for (int k = 0; k < 3; k++)
            for (int64_t j = 0; j < m; j++) in[k][j] = ((const float *)p[k + 1])[(i0 + j) * st[k + 1]];
        if (!unary_bw_f32_simd(m, gb, in[0], in[1], in[2], c->op, a)) { unary_bw_f32(n, p, st, vctx); return; }
        trig_redo(m, gb, in[0], in[1], c->op);
        for (int64_t j = 0; j < m; j++) g[(i0 + j) * st[0]] = gb[j];
    }
}
#undef CHUNK

static void unary_bw_half(int64_t n, char **p, const int64_t *st, void *vctx) {
    through_f32(n, p, st, vctx, 4, unary_bw_f32_run);
}

int tc_cpu_unary_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x, const tc_tensor *y,
                          tc_op op, double a, double b) {
    const tc_tensor *ts[4] = {gx, gy, x ? x : gy, y ? y : gy};
    tc_iter it;
    tc_iter_init(&it, 4, ts);
    it.kind = par_kind(op, a);
    ew_ctx c = {op, a, b, {gx->dtype, gy->dtype, ts[2]->dtype, ts[3]->dtype}};
    bool f32 = true, f64 = true, half = is_half(gx->dtype);
    for (int k = 0; k < 4; k++) {
        f32 &= ts[k]->dtype == TC_F32;
        f64 &= ts[k]->dtype == TC_F64;
        half &= ts[k]->dtype == gx->dtype;
    }
    tc_iter_run(&it, f32 ? unary_bw_f32_run : f64 ? unary_bw_f64 : half ? unary_bw_half : unary_bw_any, &c);
    return TC_OK;
}

/* ---- binary -------------------------------------------------------------------------------- */
/* i64 add, sub and mul wrap around as PyTorch's do: computed on uint64_t, where overflow
 * is defined, not on int64_t, where it is undefined behaviour; other types as written */
#define WRAPPING_(x, op, y) _Generic((x), int64_t: (int64_t)((uint64_t)(x) op (uint64_t)(y)), default: (x) op (y))
#define BINARY_CASES(x, y, F)                                                              \
    case TC_OP_ADD: F(WRAPPING_(x, +, y));                                                 \
    case TC_OP_SUB: F(WRAPPING_(x, -, y));                                                 \
    case TC_OP_MUL: F(WRAPPING_(x, *, y));                                                 \
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

/* f32 runs where each input is contiguous or one broadcast value (stride 0: a bias, a
 * per-channel scale), vectorised; su and sv are 0 or 1, constants once inlined */
#define SIMD_(e) { _Pragma("omp simd") for (int64_t i = 0; i < n; i++) { float x = u[i * su], y = v[i * sv]; \
                       o[i] = (e); } return true; }
static inline __attribute__((always_inline)) bool binary_f32_run(int64_t n, float *restrict o, const float *restrict u,
                                                                 const float *restrict v, int64_t su, int64_t sv, tc_op op) {
    switch (op) {
    case TC_OP_ADD: SIMD_(x + y)
    case TC_OP_SUB: SIMD_(x - y)
    case TC_OP_MUL: SIMD_(x * y)
    case TC_OP_DIV: SIMD_(x / y)
    case TC_OP_POW: SIMD_(tc_powf(x, y))
    default: return false;
    }
}
#undef SIMD_

TC_SIMD_CLONES
static bool binary_f32_simd(int64_t n, char **p, const int64_t *st, tc_op op) {
    float *o = (float *)p[0];
    const float *u = (const float *)p[1], *v = (const float *)p[2];
    if (st[0] != 1) return false;
    if (st[1] == 1 && st[2] == 1) return binary_f32_run(n, o, u, v, 1, 1, op);
    if (st[1] == 1 && st[2] == 0) return binary_f32_run(n, o, u, v, 1, 0, op);
    if (st[1] == 0 && st[2] == 1) return binary_f32_run(n, o, u, v, 0, 1, op);
    return false;
}

#define RETB_(e) { for (int64_t i = 0; i < n; i++) { E x = A(i), y = B(i); OUT(i) = (E)(e); } return; }
#define RETC_(e) { for (int64_t i = 0; i < n; i++) { E x = A(i), y = B(i); CMP(i) = (uint8_t)(e); } return; }
#define DEF_BINARY(NAME, T)                                                                \
    static void NAME(int64_t n, char **p, const int64_t *st, void *vctx) { typedef T E;                \
        ew_ctx *c = vctx;                                                                  \
        if (st[0] == 1 && st[1] == 1 && st[2] == 1) { /* the common case, vectorisable */ \
            T *restrict o = (T *)p[0];                                                     \
            const T *restrict u = (const T *)p[1], *restrict v = (const T *)p[2];          \
            switch (c->op) {                                                               \
            case TC_OP_ADD: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) o[i] = WRAPPING_(u[i], +, v[i]); return; \
            case TC_OP_SUB: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) o[i] = WRAPPING_(u[i], -, v[i]); return; \
            case TC_OP_MUL: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) o[i] = WRAPPING_(u[i], *, v[i]); return; \
            default: break;                                                                \
            }                                                                              \
        }                                                                                  \
        switch (c->op) { BINARY_CASES(x, y, RETB_) COMPARE_CASES(x, y, RETC_) default: return; } \
    }
#define A(i) ((E *)p[1])[(i) * st[1]]
#define B(i) ((E *)p[2])[(i) * st[2]]
#define OUT(i) ((E *)p[0])[(i) * st[0]]
#define CMP(i) ((uint8_t *)p[0])[(i) * st[0]]
DEF_BINARY(binary_f32_any, float)
DEF_BINARY(binary_f64, double)
DEF_BINARY(binary_i64, int64_t)
#undef A
#undef B
#undef OUT
#undef CMP
#undef RETB_
#undef RETC_

static void binary_f32(int64_t n, char **p, const int64_t *st, void *vctx) {
    ew_ctx *c = vctx;
    if (!binary_f32_simd(n, p, st, c->op)) binary_f32_any(n, p, st, vctx);
}

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

static void binary_half(int64_t n, char **p, const int64_t *st, void *vctx) { through_f32(n, p, st, vctx, 3, binary_f32); }

int tc_cpu_binary(tc_tensor *out, const tc_tensor *a, const tc_tensor *b, tc_op op) {
    const tc_tensor *ts[3] = {out, a, b};
    tc_iter it;
    tc_iter_init(&it, 3, ts);
    it.kind = par_kind(op, 0);
    ew_ctx c = {op, 0, 0, {out->dtype, a->dtype, b->dtype}};
    tc_iter_fn fn = binary_any;
    bool pow_int = op == TC_OP_POW && !tc_dtype_is_float(a->dtype);
    if (a->dtype == b->dtype && (out->dtype == a->dtype || out->dtype == TC_BOOL) && !pow_int) {
        if (a->dtype == TC_F32) fn = binary_f32;
        else if (a->dtype == TC_F64) fn = binary_f64;
        else if (a->dtype == TC_I64 && op != TC_OP_DIV) fn = binary_i64;
        else if (is_half(a->dtype) && out->dtype == a->dtype) fn = binary_half;
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
