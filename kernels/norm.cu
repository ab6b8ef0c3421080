/* norm.cu: layer norm over the rows of [M, N] and group norm over the channel groups of
 * [N, C, HW] (with silu fused in on request), forward and backward, computing what
 * core/cpu/norm.c does: statistics as sums in double (kept as f32 for f16, bf16 and f32 inputs),
 * elementwise work in float (double for f64). gw and gb are summed across rows
 * deterministically: per-block partials, then one pass over them in a fixed order. */
#include "cuda.h"
#include "../core/unary.h"

/* ---- shared pieces ---------------------------------------------------------------------------- */
/* an optional per-feature vector (w or b) of any float dtype and stride */
typedef struct {
    const void *p; /* NULL: absent */
    tc_dtype dt;
    int64_t stride;
} vec;

static vec vec_of(const tc_tensor *t) {
    vec v = {t ? tcu_ptr(t) : NULL, t ? t->dtype : TC_F32, t ? t->stride[0] : 0};
    return v;
}
__device__ static inline double vec_at(const vec &v, int64_t i, double fill) {
    return v.p ? tcu_load(v.p, v.dt, i * v.stride) : fill;
}

/* the sum of v over the block (blockDim.x a multiple of 32), in every thread; red: 32
 * doubles of shared memory. A fixed tree, so the result does not depend on timing. */
__device__ static double block_sum(double v, double *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads(); /* red may still be read from the previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* threads for a block that walks a row of n elements: about 4 each, 32 to 256 */
static unsigned row_threads(int64_t n) {
    int64_t t = ((n + 3) / 4 + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : t > 256 ? 256 : t);
}
/* blocks for a loop of one block per item over n items */
static unsigned grid_of(int64_t n) { return (unsigned)(n < 1 ? 1 : n > 65535 * 8 ? 65535 * 8 : n); }

/* a device workspace of n doubles, freed by the caller with tc_cuda_free */
static double *workspace(int64_t n, const char *op) {
    double *p = (double *)tc_cuda_alloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!p) tc_error("%s: out of GPU memory for a workspace of %lld doubles", op, (long long)n);
    return p;
}
static void workspace_free(double *p) {
    if (p) tc_cuda_free(p);
}

/* t itself when it has dtype dt, else a contiguous copy in dt (*tmp, to release) */
static const tc_tensor *in_dtype(const tc_tensor *t, tc_dtype dt, tc_tensor **tmp) {
    *tmp = NULL;
    if (t->dtype == dt) return t;
    *tmp = tc_empty_like(t, dt);
    if (*tmp && tc_cuda_copy_device(*tmp, t) != TC_OK) {
        tc_tensor_release(*tmp);
        *tmp = NULL;
    }
    return *tmp;
}

/* ---- layer norm ------------------------------------------------------------------------------
 * One block per row: the mean, then the centred sum of squares (two passes, as the CPU's),
 * then y = (x - mean) rstd w + b with the double mean split in two floats (hi + lo) so that
 * rows far from 0 keep their bits. */
template <typename T>
__global__ void ln_forward(T *y, typename tcu_acc<T>::type *mean, typename tcu_acc<T>::type *rstd, const T *x,
                           int64_t xs0, int64_t xs1, vec w, vec b, int64_t M, int64_t N, double eps) {
    typedef typename tcu_acc<T>::type A;
    __shared__ double red[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const T *r = x + m * xs0;
        double s = 0;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += (double)tcu_float(r[i * xs1]);
        double mu = N ? block_sum(s, red) / (double)N : 0, v = 0;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
            double d = (double)tcu_float(r[i * xs1]) - mu;
            v += d * d;
        }
        double var = N ? block_sum(v, red) / (double)N : 0, rs = 1 / sqrt(var + eps);
        A hi = (A)mu, lo = (A)(mu - (double)hi), a = (A)rs;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
            A xv = tcu_float(r[i * xs1]);
            tcu_put(y[m * N + i], ((xv - hi) - lo) * a * (A)vec_at(w, i, 1) + (A)vec_at(b, i, 0));
        }
        if (threadIdx.x == 0) {
            mean[m] = (A)mu;
            rstd[m] = a;
        }
    }
}

template <typename T>
static int layer_norm_run(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x, const tc_tensor *w,
                          const tc_tensor *b, double eps) {
    typedef typename tcu_acc<T>::type A;
    int64_t M = x->shape[0], N = x->shape[1];
    if (M == 0) return TC_OK;
    TCU_LAUNCH(ln_forward<T>, grid_of(M), row_threads(N), 0, (T *)tcu_ptr(y), (A *)tcu_ptr(mean), (A *)tcu_ptr(rstd),
               (const T *)tcu_ptr(x), x->stride[0], x->stride[1], vec_of(w), vec_of(b), M, N, eps);
    TCU_LAUNCHED("layer_norm");
    return TC_OK;
}

/* gx = rstd (gh - mean(gh) - xh mean(gh xh)) with xh = (x - mean) rstd and gh = gy w; a block per row */
template <typename T>
__global__ void ln_backward_x(T *gx, const T *gy, int64_t gs0, int64_t gs1, const T *x, int64_t xs0, int64_t xs1,
                              const typename tcu_acc<T>::type *mean, const typename tcu_acc<T>::type *rstd, vec w,
                              int64_t M, int64_t N) {
    typedef typename tcu_acc<T>::type A;
    __shared__ double red[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const T *xr = x + m * xs0, *gr = gy + m * gs0;
        A mu = mean[m], rs = rstd[m];
        double s1 = 0, s2 = 0;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
            A h = ((A)tcu_float(xr[i * xs1]) - mu) * rs, gh = (A)tcu_float(gr[i * gs1]) * (A)vec_at(w, i, 1);
            s1 += gh;
            s2 += (double)(gh * h);
        }
        A a = (A)(block_sum(s1, red) / (double)N), c = (A)(block_sum(s2, red) / (double)N);
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
            A h = ((A)tcu_float(xr[i * xs1]) - mu) * rs, gh = (A)tcu_float(gr[i * gs1]) * (A)vec_at(w, i, 1);
            tcu_put(gx[m * N + i], rs * (gh - a - h * c));
        }
    }
}

/* partial sums for gw (gy xh) and gb (gy) over rows chunk p of a column tile: 256 threads,
 * 32 columns by 8 row lanes; part [P, 2, N] */
#define WB_ROWS 8
template <typename T>
__global__ void ln_backward_wb(double *part, const T *gy, int64_t gs0, int64_t gs1, const T *x, int64_t xs0,
                               int64_t xs1, const typename tcu_acc<T>::type *mean,
                               const typename tcu_acc<T>::type *rstd, int64_t M, int64_t N, int64_t R, int64_t P) {
    typedef typename tcu_acc<T>::type A;
    __shared__ double sw[WB_ROWS][32], sb[WB_ROWS][32];
    int64_t ntile = (N + 31) / 32;
    int lane = threadIdx.x % 32, rl = threadIdx.x / 32;
    for (int64_t bid = blockIdx.x; bid < ntile * P; bid += gridDim.x) {
        int64_t col = bid % ntile * 32 + lane, p = bid / ntile, end = (p + 1) * R < M ? (p + 1) * R : M;
        double aw = 0, ab = 0;
        if (col < N)
            for (int64_t m = p * R + rl; m < end; m += WB_ROWS) {
                A g = tcu_float(gy[m * gs0 + col * gs1]);
                A h = ((A)tcu_float(x[m * xs0 + col * xs1]) - mean[m]) * rstd[m];
                aw += (double)(g * h);
                ab += g;
            }
        sw[rl][lane] = aw;
        sb[rl][lane] = ab;
        __syncthreads();
        if (rl == 0 && col < N) {
            for (int k = 1; k < WB_ROWS; k++) {
                aw += sw[k][lane];
                ab += sb[k][lane];
            }
            part[(p * 2) * N + col] = aw;
            part[(p * 2 + 1) * N + col] = ab;
        }
        __syncthreads();
    }
}

/* gw[c] and gb[c] (either may be NULL): the sums over p of part[p, 0, c] and part[p, 1, c] */
__global__ void wb_final(void *gw, tc_dtype wdt, void *gb, tc_dtype bdt, const double *part, int64_t P, int64_t N) {
    TCU_GRID_STRIDE(c, N) {
        double aw = 0, ab = 0;
        for (int64_t p = 0; p < P; p++) {
            aw += part[(p * 2) * N + c];
            ab += part[(p * 2 + 1) * N + c];
        }
        if (gw) tcu_store(gw, wdt, c, aw);
        if (gb) tcu_store(gb, bdt, c, ab);
    }
}

/* rows of each chunk of the gw, gb partials: about 256 chunks, at least 32 rows each */
static int64_t wb_rows(int64_t M) { return (M + 255) / 256 < 32 ? 32 : (M + 255) / 256; }

/* part [P, 2, N]: workspace for the gw, gb partials (NULL when neither is wanted) */
template <typename T>
static int layer_norm_backward_run(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                   const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                   const tc_tensor *w, double *part) {
    typedef typename tcu_acc<T>::type A;
    int64_t M = x->shape[0], N = x->shape[1], R = wb_rows(M), P = M > 0 ? (M + R - 1) / R : 1;
    const T *xp = (const T *)tcu_ptr(x), *gp = (const T *)tcu_ptr(gy);
    const A *mp = (const A *)tcu_ptr(mean), *rp = (const A *)tcu_ptr(rstd);
    if (gx && M > 0) {
        TCU_LAUNCH(ln_backward_x<T>, grid_of(M), row_threads(N), 0, (T *)tcu_ptr(gx), gp, gy->stride[0],
                   gy->stride[1], xp, x->stride[0], x->stride[1], mp, rp, vec_of(w), M, N);
        TCU_LAUNCHED("layer_norm backward");
    }
    if (!part) return TC_OK;
    TCU_LAUNCH(ln_backward_wb<T>, grid_of((N + 31) / 32 * P), 32 * WB_ROWS, 0, part, gp, gy->stride[0],
               gy->stride[1], xp, x->stride[0], x->stride[1], mp, rp, M, N, R, P);
    TCU_LAUNCHED("layer_norm backward");
    TCU_LAUNCH(wb_final, tcu_blocks(N), TCU_THREADS, 0, gw ? tcu_ptr(gw) : NULL, gw ? gw->dtype : TC_F32,
               gb ? tcu_ptr(gb) : NULL, gb ? gb->dtype : TC_F32, (const double *)part, P, N);
    TCU_LAUNCHED("layer_norm backward");
    return TC_OK;
}

/* ---- group norm ------------------------------------------------------------------------------
 * Group (n, g) holds channels g C / G .. (g + 1) C / G - 1 of sample n, cnt = C / G HW elements.
 * Forward: partial moments of chunks of each group (shifted by the group's first element, in
 * double, as the CPU's), a pass per group that combines them in order, then one block per
 * (n, c) row normalizes. */
typedef struct {
    int64_t N, C, HW, G, cg;
    int64_t s0, s1, s2; /* x's strides */
} gn_shape;

/* an output's strides over [N, C, HW]: channels-last outputs are written in place */
typedef struct {
    int64_t s0, s1, s2;
} gn_strides;

static gn_strides gn_strides_of(const tc_tensor *t) {
    gn_strides g = {t->stride[0], t->stride[1], t->stride[2]};
    return g;
}

/* t [N, C, HW] is dense channels-last (strides {HW C, 1, C}): the NHWC kernels below walk it in
 * memory order */
static bool gn_nhwc(const tc_tensor *t) {
    return t->shape[1] > 1 && t->stride[1] == 1 && t->stride[2] == t->shape[1] &&
           (t->shape[0] == 1 || t->stride[0] == t->shape[1] * t->shape[2]);
}

static gn_shape gn_shape_of(const tc_tensor *x, int groups) {
    gn_shape g = {x->shape[0], x->shape[1], x->shape[2], groups, x->shape[1] / groups,
                  x->stride[0], x->stride[1], x->stride[2]};
    return g;
}

/* sums of (x - shift) and its square over elements [p R, (p + 1) R) of group ng, for every
 * (ng, p): part [NG, P, 2] */
template <typename T>
__global__ void gn_moments(double *part, const T *x, gn_shape s, int64_t P, int64_t R) {
    __shared__ double red[32];
    int64_t cnt = s.cg * s.HW, NG = s.N * s.G;
    int64_t dc = blockDim.x / s.HW, di = blockDim.x % s.HW;
    for (int64_t bid = blockIdx.x; bid < NG * P; bid += gridDim.x) {
        int64_t ng = bid / P, p = bid % P, n = ng / s.G;
        const T *base = x + n * s.s0 + ng % s.G * s.cg * s.s1;
        double shift = tcu_float(base[0]), a = 0, b = 0;
        int64_t e = p * R + threadIdx.x, end = (p + 1) * R < cnt ? (p + 1) * R : cnt;
        if (s.s1 == 1 && s.cg > 1) { /* channels-last: e = i cg + c, neighbouring threads on neighbouring channels */
            for (; e < end; e += blockDim.x) {
                double d = (double)tcu_float(base[e % s.cg + e / s.cg * s.s2]) - shift;
                a += d;
                b += d * d;
            }
            e = end;
        }
        int64_t c = e / s.HW, i = e % s.HW; /* e = c HW + i, stepped without dividing */
        for (; e < end; e += blockDim.x) {
            double d = (double)tcu_float(base[c * s.s1 + i * s.s2]) - shift;
            a += d;
            b += d * d;
            c += dc;
            i += di;
            if (i >= s.HW) { i -= s.HW; c++; }
        }
        a = block_sum(a, red);
        b = block_sum(b, red);
        if (threadIdx.x == 0) {
            part[bid * 2] = a;
            part[bid * 2 + 1] = b;
        }
    }
}

/* per group: mean and rstd from the partial moments, into mean, rstd (x's statistic dtype) and
 * st [NG, 2] (double, for the normalize pass) */
template <typename T>
__global__ void gn_stats(typename tcu_acc<T>::type *mean, typename tcu_acc<T>::type *rstd, double *st,
                         const double *part, const T *x, gn_shape s, int64_t P, double eps) {
    typedef typename tcu_acc<T>::type A;
    int64_t cnt = s.cg * s.HW;
    TCU_GRID_STRIDE(ng, s.N * s.G) {
        double mu = 0, var = 0;
        if (cnt > 0) {
            double a = 0, b = 0;
            for (int64_t p = 0; p < P; p++) {
                a += part[(ng * P + p) * 2];
                b += part[(ng * P + p) * 2 + 1];
            }
            double m1 = a / (double)cnt;
            var = b / (double)cnt - m1 * m1;
            mu = (double)tcu_float(x[ng / s.G * s.s0 + ng % s.G * s.cg * s.s1]) + m1;
        }
        double rs = 1 / sqrt((var > 0 ? var : 0) + eps);
        mean[ng] = (A)mu;
        rstd[ng] = (A)rs;
        st[ng * 2] = mu;
        st[ng * 2 + 1] = rs;
    }
}

#define M_(fn) tcu_##fn /* the math functions of core/unary.h's formulas */

/* y = (x - mean) rstd w + b, and with silu the silu of that (one read of x, one write of y), a
 * block per (n, c) row of HW; y's strides ys (NCHW: {C HW, HW, 1}) */
template <typename T>
__global__ void gn_normalize(T *y, gn_strides ys, const T *x, gn_shape s, const double *st, vec w, vec b, bool silu) {
    typedef typename tcu_acc<T>::type A;
    for (int64_t row = blockIdx.x; row < s.N * s.C; row += gridDim.x) {
        int64_t n = row / s.C, c = row % s.C, ng = n * s.G + c / s.cg;
        double mu = st[ng * 2], rs = st[ng * 2 + 1];
        A hi = (A)mu, lo = (A)(mu - (double)hi), a = (A)(rs * vec_at(w, c, 1)), o = (A)vec_at(b, c, 0);
        const T *xr = x + n * s.s0 + c * s.s1;
        for (int64_t i = threadIdx.x; i < s.HW; i += blockDim.x) {
            A h = (((A)tcu_float(xr[i * s.s2]) - hi) - lo) * a + o;
            tcu_put(y[n * ys.s0 + c * ys.s1 + i * ys.s2], silu ? TC_SILU(M_, h) : h);
        }
    }
}

/* gn_normalize for x and y dense channels-last: a thread per element, in memory order */
template <typename T>
__global__ void gn_normalize_nhwc(T *y, const T *x, gn_shape s, const double *st, vec w, vec b, bool silu) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(e, s.N * s.HW * s.C) {
        int64_t c = e % s.C, n = e / (s.HW * s.C), ng = n * s.G + c / s.cg;
        double mu = st[ng * 2], rs = st[ng * 2 + 1];
        A hi = (A)mu, lo = (A)(mu - (double)hi), a = (A)(rs * vec_at(w, c, 1)), o = (A)vec_at(b, c, 0);
        A h = (((A)tcu_float(x[e]) - hi) - lo) * a + o;
        tcu_put(y[e], silu ? TC_SILU(M_, h) : h);
    }
}

/* the gradient reaching the norm at element i of row (n, c): gy itself, or with silu
 * gy silu'(h), h recomputed from x as gn_normalize did from the saved statistics */
template <typename T>
__device__ static inline double gn_grad_in(const T *gr, int64_t gs2, const T *xr, int64_t xs2, int64_t i, bool silu,
                                           double mu, double rs, const vec &w, const vec &b, int64_t c) {
    typedef typename tcu_acc<T>::type A;
    A g = tcu_float(gr[i * gs2]);
    if (!silu) return g;
    A hi = (A)mu, lo = (A)(mu - (double)hi), a = (A)(rs * vec_at(w, c, 1)), o = (A)vec_at(b, c, 0);
    A h = (((A)tcu_float(xr[i * xs2]) - hi) - lo) * a + o;
    return g * TC_SILU_GRAD(M_, h);
}

/* chunks per group for the moments: at least 2048 elements each, about 1024 blocks in all */
static int64_t gn_chunks(const gn_shape &s) {
    int64_t NG = s.N * s.G, P = (s.cg * s.HW + 2047) / 2048, want = (1024 + NG - 1) / (NG > 0 ? NG : 1);
    if (P > want) P = want;
    return P < 1 ? 1 : P;
}

/* ws: NG (2 P + 2) doubles */
template <typename T>
static int group_norm_run(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x, const tc_tensor *w,
                          const tc_tensor *b, const gn_shape &s, double eps, bool silu, double *ws) {
    typedef typename tcu_acc<T>::type A;
    int64_t NG = s.N * s.G, cnt = s.cg * s.HW, P = gn_chunks(s), R = (cnt + P - 1) / P;
    double *part = ws, *st = ws + NG * 2 * P;
    const T *xp = (const T *)tcu_ptr(x);
    if (cnt > 0) {
        TCU_LAUNCH(gn_moments<T>, grid_of(NG * P), TCU_THREADS, 0, part, xp, s, P, R);
        TCU_LAUNCHED("group_norm");
    }
    TCU_LAUNCH(gn_stats<T>, tcu_blocks(NG), TCU_THREADS, 0, (A *)tcu_ptr(mean), (A *)tcu_ptr(rstd), st,
               (const double *)part, xp, s, P, eps);
    TCU_LAUNCHED("group_norm");
    if (cnt == 0) return TC_OK;
    if (gn_nhwc(x) && gn_nhwc(y))
        TCU_LAUNCH(gn_normalize_nhwc<T>, tcu_blocks(s.N * s.HW * s.C), TCU_THREADS, 0, (T *)tcu_ptr(y), xp, s,
                   (const double *)st, vec_of(w), vec_of(b), silu);
    else
        TCU_LAUNCH(gn_normalize<T>, grid_of(s.N * s.C), row_threads(s.HW), 0, (T *)tcu_ptr(y), gn_strides_of(y), xp, s,
                   (const double *)st, vec_of(w), vec_of(b), silu);
    TCU_LAUNCHED("group_norm");
    return TC_OK;
}

/* Backward, with xh = (x - mean) rstd and gh = gy w over each group (gy through silu's
 * derivative first, where the forward applied it: gn_grad_in):
 * per (n, c) row: pw = sum gy xh, pb = sum gy (a block per row, into [N, C] doubles);
 * per group: s1 = mean of gh = sum_c pb w / cnt, s2 = mean of gh xh = sum_c pw w / cnt;
 * gx = rstd (gy w - s1 - xh s2); gw[c] = sum_n pw[n, c], gb[c] = sum_n pb[n, c]. */
template <typename T>
__global__ void gn_backward_rows(double *pw, double *pb, const T *gy, int64_t gs0, int64_t gs1, int64_t gs2,
                                 const T *x, gn_shape s, const typename tcu_acc<T>::type *mean,
                                 const typename tcu_acc<T>::type *rstd, vec w, vec b, bool silu) {
    __shared__ double red[32];
    for (int64_t row = blockIdx.x; row < s.N * s.C; row += gridDim.x) {
        int64_t n = row / s.C, c = row % s.C, ng = n * s.G + c / s.cg;
        double mu = mean[ng], sg = 0, sgx = 0;
        const T *xr = x + n * s.s0 + c * s.s1, *gr = gy + n * gs0 + c * gs1;
        for (int64_t i = threadIdx.x; i < s.HW; i += blockDim.x) {
            double g = gn_grad_in(gr, gs2, xr, s.s2, i, silu, mu, rstd[ng], w, b, c);
            sg += g;
            sgx += g * ((double)tcu_float(xr[i * s.s2]) - mu);
        }
        sg = block_sum(sg, red);
        sgx = block_sum(sgx, red);
        if (threadIdx.x == 0) {
            pw[row] = sgx * (double)rstd[ng];
            pb[row] = sg;
        }
    }
}

/* gn_backward_rows for x and gy dense channels-last: a block of 8 warps per (n, 32 channels),
 * a warp's lanes on neighbouring channels of one pixel, its warps on every 8th pixel */
template <typename T>
__global__ void gn_backward_rows_nhwc(double *pw, double *pb, const T *gy, const T *x, gn_shape s,
                                      const typename tcu_acc<T>::type *mean, const typename tcu_acc<T>::type *rstd,
                                      vec w, vec b, bool silu) {
    __shared__ double red[2][8][33];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int64_t tiles = (s.C + 31) / 32;
    for (int64_t bid = blockIdx.x; bid < s.N * tiles; bid += gridDim.x) {
        int64_t n = bid / tiles, c = bid % tiles * 32 + lane, ng = n * s.G + (c < s.C ? c : 0) / s.cg;
        double sg = 0, sgx = 0, mu = mean[ng], rs = rstd[ng];
        if (c < s.C) {
            const T *xr = x + n * s.s0 + c, *gr = gy + n * s.s0 + c;
            for (int64_t i = warp; i < s.HW; i += 8) {
                double g = gn_grad_in(gr, s.C, xr, s.C, i, silu, mu, rs, w, b, c);
                sg += g;
                sgx += g * ((double)tcu_float(xr[i * s.C]) - mu);
            }
        }
        __syncthreads(); /* red is free again after the previous tile */
        red[0][warp][lane] = sg;
        red[1][warp][lane] = sgx;
        __syncthreads();
        if (warp == 0 && c < s.C) {
            double tg = 0, tgx = 0;
            for (int k = 0; k < 8; k++) {
                tg += red[0][k][lane];
                tgx += red[1][k][lane];
            }
            pw[n * s.C + c] = tgx * rs;
            pb[n * s.C + c] = tg;
        }
    }
}

/* per group: co [NG, 2] = (s1, s2) */
__global__ void gn_backward_groups(double *co, const double *pw, const double *pb, vec w, gn_shape s) {
    double cnt = (double)(s.cg * s.HW);
    TCU_GRID_STRIDE(ng, s.N * s.G) {
        int64_t n = ng / s.G, c0 = ng % s.G * s.cg;
        double s1 = 0, s2 = 0;
        for (int64_t c = c0; c < c0 + s.cg; c++) {
            double wc = vec_at(w, c, 1);
            s1 += pb[n * s.C + c] * wc;
            s2 += pw[n * s.C + c] * wc;
        }
        co[ng * 2] = s1 / cnt;
        co[ng * 2 + 1] = s2 / cnt;
    }
}

/* gw[c], gb[c] (either may be NULL) = sums over n of pw[n, c], pb[n, c] */
__global__ void gn_backward_channels(void *gw, tc_dtype wdt, void *gb, tc_dtype bdt, const double *pw, const double *pb,
                                     int64_t N, int64_t C) {
    TCU_GRID_STRIDE(c, C) {
        double aw = 0, ab = 0;
        for (int64_t n = 0; n < N; n++) {
            aw += pw[n * C + c];
            ab += pb[n * C + c];
        }
        if (gw) tcu_store(gw, wdt, c, aw);
        if (gb) tcu_store(gb, bdt, c, ab);
    }
}

/* gx = gy (rstd w) + (x - mean) (-rstd^2 s2) - rstd s1, a block per (n, c) row */
template <typename T>
__global__ void gn_backward_x(T *gx, gn_strides xs, const T *gy, int64_t gs0, int64_t gs1, int64_t gs2, const T *x,
                              gn_shape s,
                              const typename tcu_acc<T>::type *mean, const typename tcu_acc<T>::type *rstd,
                              const double *co, vec w, vec b, bool silu) {
    typedef typename tcu_acc<T>::type A;
    for (int64_t row = blockIdx.x; row < s.N * s.C; row += gridDim.x) {
        int64_t n = row / s.C, c = row % s.C, ng = n * s.G + c / s.cg;
        double mu = mean[ng], rs = rstd[ng];
        A hi = (A)mu, lo = (A)(mu - (double)hi), a = (A)(rs * vec_at(w, c, 1));
        A bb = (A)(-rs * rs * co[ng * 2 + 1]), cc = (A)(-rs * co[ng * 2]);
        const T *xr = x + n * s.s0 + c * s.s1, *gr = gy + n * gs0 + c * gs1;
        for (int64_t i = threadIdx.x; i < s.HW; i += blockDim.x)
            tcu_put(gx[n * xs.s0 + c * xs.s1 + i * xs.s2],
                    (A)gn_grad_in(gr, gs2, xr, s.s2, i, silu, mu, rs, w, b, c) * a +
                        (((A)tcu_float(xr[i * s.s2]) - hi) - lo) * bb + cc);
    }
}

/* gn_backward_x for gx, gy and x dense channels-last: a thread per element, in memory order */
template <typename T>
__global__ void gn_backward_x_nhwc(T *gx, const T *gy, const T *x, gn_shape s, const typename tcu_acc<T>::type *mean,
                                   const typename tcu_acc<T>::type *rstd, const double *co, vec w, vec b, bool silu) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(e, s.N * s.HW * s.C) {
        int64_t c = e % s.C, n = e / (s.HW * s.C), i = e / s.C % s.HW, ng = n * s.G + c / s.cg;
        double mu = mean[ng], rs = rstd[ng];
        A hi = (A)mu, lo = (A)(mu - (double)hi), a = (A)(rs * vec_at(w, c, 1));
        A bb = (A)(-rs * rs * co[ng * 2 + 1]), cc = (A)(-rs * co[ng * 2]);
        const T *xr = x + n * s.s0 + c, *gr = gy + n * s.s0 + c;
        tcu_put(gx[e], (A)gn_grad_in(gr, s.C, xr, s.C, i, silu, mu, rs, w, b, c) * a +
                           (((A)tcu_float(x[e]) - hi) - lo) * bb + cc);
    }
}

/* ws: 2 N C + 2 N G doubles */
template <typename T>
static int group_norm_backward_run(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                   const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                   const tc_tensor *w, const tc_tensor *b, const gn_shape &s, bool silu, double *ws) {
    typedef typename tcu_acc<T>::type A;
    int64_t NC = s.N * s.C, NG = s.N * s.G;
    double *pw = ws, *pb = ws + NC, *co = pb + NC;
    const T *xp = (const T *)tcu_ptr(x), *gp = (const T *)tcu_ptr(gy);
    const A *mp = (const A *)tcu_ptr(mean), *rp = (const A *)tcu_ptr(rstd);
    /* x and gy channels-last with one sample stride (gx too, when wanted): the NHWC kernels */
    bool nhwc = gn_nhwc(x) && gn_nhwc(gy) && gy->stride[0] == x->stride[0] && (!gx || gn_nhwc(gx));
    if (NC > 0 && nhwc) {
        int64_t tiles = s.N * ((s.C + 31) / 32);
        TCU_LAUNCH(gn_backward_rows_nhwc<T>, grid_of(tiles), 256, 0, pw, pb, gp, xp, s, mp, rp, vec_of(w), vec_of(b),
                   silu);
        TCU_LAUNCHED("group_norm backward");
    } else if (NC > 0) {
        TCU_LAUNCH(gn_backward_rows<T>, grid_of(NC), row_threads(s.HW), 0, pw, pb, gp, gy->stride[0], gy->stride[1],
                   gy->stride[2], xp, s, mp, rp, vec_of(w), vec_of(b), silu);
        TCU_LAUNCHED("group_norm backward");
    }
    if (gw || gb) {
        TCU_LAUNCH(gn_backward_channels, tcu_blocks(s.C), TCU_THREADS, 0, gw ? tcu_ptr(gw) : NULL,
                   gw ? gw->dtype : TC_F32, gb ? tcu_ptr(gb) : NULL, gb ? gb->dtype : TC_F32, (const double *)pw,
                   (const double *)pb, s.N, s.C);
        TCU_LAUNCHED("group_norm backward");
    }
    if (!gx || NC == 0 || s.HW == 0) return TC_OK;
    TCU_LAUNCH(gn_backward_groups, tcu_blocks(NG), TCU_THREADS, 0, co, (const double *)pw, (const double *)pb,
               vec_of(w), s);
    TCU_LAUNCHED("group_norm backward");
    if (nhwc) {
        TCU_LAUNCH(gn_backward_x_nhwc<T>, tcu_blocks(NC * s.HW), TCU_THREADS, 0, (T *)tcu_ptr(gx), gp, xp, s, mp, rp,
                   (const double *)co, vec_of(w), vec_of(b), silu);
        TCU_LAUNCHED("group_norm backward");
        return TC_OK;
    }
    TCU_LAUNCH(gn_backward_x<T>, grid_of(NC), row_threads(s.HW), 0, (T *)tcu_ptr(gx), gn_strides_of(gx), gp,
               gy->stride[0], gy->stride[1], gy->stride[2], xp, s, mp, rp, (const double *)co, vec_of(w), vec_of(b),
               silu);
    TCU_LAUNCHED("group_norm backward");
    return TC_OK;
}

/* the launches for x's dtype */
static int layer_norm_backward_typed(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                     const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                     const tc_tensor *w, double *part) {
    TCU_FLOAT_DISPATCH(x->dtype, T, "layer_norm backward",
                       return layer_norm_backward_run<T>(gx, gw, gb, gy, x, mean, rstd, w, part));
    return TC_OK;
}

static int group_norm_typed(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x, const tc_tensor *w,
                            const tc_tensor *b, const gn_shape &s, double eps, bool silu, double *ws) {
    TCU_FLOAT_DISPATCH(x->dtype, T, "group_norm", return group_norm_run<T>(y, mean, rstd, x, w, b, s, eps, silu, ws));
    return TC_OK;
}

static int group_norm_backward_typed(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                     const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                     const tc_tensor *w, const tc_tensor *b, const gn_shape &s, bool silu, double *ws) {
    TCU_FLOAT_DISPATCH(x->dtype, T, "group_norm backward",
                       return group_norm_backward_run<T>(gx, gw, gb, gy, x, mean, rstd, w, b, s, silu, ws));
    return TC_OK;
}

/* ---- exported entries: workspace, launches, workspace back ---------------------------------- */
extern "C" {
int tc_cuda_layer_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x, const tc_tensor *w,
                       const tc_tensor *b, double eps) {
    TCU_FLOAT_DISPATCH(x->dtype, T, "layer_norm", return layer_norm_run<T>(y, mean, rstd, x, w, b, eps));
    return TC_OK;
}

int tc_cuda_layer_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                                const tc_tensor *mean, const tc_tensor *rstd, const tc_tensor *w) {
    int64_t M = x->shape[0], N = x->shape[1], R = wb_rows(M), P = M > 0 ? (M + R - 1) / R : 1;
    if (N == 0) return TC_OK;
    tc_tensor *tmp;
    const tc_tensor *g = in_dtype(gy, x->dtype, &tmp);
    double *part = g && (gw || gb) ? workspace(2 * P * N, "layer_norm backward") : NULL;
    int rc = g && (part || !(gw || gb)) ? layer_norm_backward_typed(gx, gw, gb, g, x, mean, rstd, w, part) : TC_ERR;
    workspace_free(part);
    tc_tensor_release(tmp);
    return rc;
}

int tc_cuda_group_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x, const tc_tensor *w,
                       const tc_tensor *b, int groups, double eps, bool silu) {
    gn_shape s = gn_shape_of(x, groups);
    int64_t NG = s.N * s.G;
    if (NG == 0) return TC_OK;
    double *ws = workspace(NG * (2 * gn_chunks(s) + 2), "group_norm");
    int rc = ws ? group_norm_typed(y, mean, rstd, x, w, b, s, eps, silu, ws) : TC_ERR;
    workspace_free(ws);
    return rc;
}

int tc_cuda_group_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                                const tc_tensor *mean, const tc_tensor *rstd, const tc_tensor *w, const tc_tensor *b,
                                int groups, bool silu) {
    gn_shape s = gn_shape_of(x, groups);
    if (s.C == 0 || (!gx && !gw && !gb)) return TC_OK;
    tc_tensor *tmp;
    const tc_tensor *g = in_dtype(gy, x->dtype, &tmp);
    double *ws = g ? workspace(2 * s.N * s.C + 2 * s.N * s.G, "group_norm backward") : NULL;
    int rc = ws ? group_norm_backward_typed(gx, gw, gb, g, x, mean, rstd, w, b, s, silu, ws) : TC_ERR;
    workspace_free(ws);
    tc_tensor_release(tmp);
    return rc;
}
}
