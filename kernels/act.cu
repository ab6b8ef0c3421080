/* act.cu: bias + activation and GEGLU over the rows of [M, K], forward and backward: the twins of
 * core/cpu/act.c, with the activations' formulas of core/unary.h. Elementwise work in float
 * (double for f64); the bias gradient is summed deterministically: per-block partials in double
 * over chunks of rows, then one pass over them in a fixed order, as norm.cu's gw and gb. */
#include "cuda.h"
#include "../core/unary.h"

#define M_(fn) m_##fn
__device__ static inline float m_exp(float x) { return expf(x); }
__device__ static inline double m_exp(double x) { return exp(x); }
__device__ static inline float m_tanh(float x) { return tanhf(x); }
__device__ static inline double m_tanh(double x) { return tanh(x); }
__device__ static inline float m_erf(float x) { return erff(x); }
__device__ static inline double m_erf(double x) { return erf(x); }

/* f = act(z) and d = act'(z) */
#define ACT_(OP) case TC_OP_##OP: f = TC_ACT_##OP(A, M_, z); d = TC_ACT_##OP##_D(A, M_, z, f); return;
template <typename A>
__device__ static inline void act_eval(tc_op op, A z, A &f, A &d) {
    switch (op) {
    TC_FUSED_ACTS(ACT_)
    default: f = d = 0; return;
    }
}
#undef ACT_

#define KNOWN_(OP) case TC_OP_##OP:
static bool act_known(tc_op op) {
    switch (op) {
    TC_FUSED_ACTS(KNOWN_) return true;
    default: return false;
    }
}
#undef KNOWN_

/* ---- forward: one thread per output element ------------------------------------------------ */
/* y [M, C] from x [M, K] and b [K] (NULL: 0); gate = C for glu (the activated half), else 0 */
template <typename T>
__global__ void bias_act_kernel(T *y, const T *x, const T *b, int64_t M, int64_t K, int64_t C, tc_op op, bool glu) {
    typedef typename tcu_acc<T>::type A;
    int64_t gate = glu ? C : 0;
    TCU_GRID_STRIDE(i, M * C) {
        int64_t m = i / C, c = i - m * C;
        const T *r = x + m * K;
        A z = (A)tcu_float(r[gate + c]) + (b ? (A)tcu_float(b[gate + c]) : (A)0), f, d;
        act_eval<A>(op, z, f, d);
        if (glu) f *= (A)tcu_float(r[c]) + (b ? (A)tcu_float(b[c]) : (A)0);
        tcu_put(y[i], f);
    }
}

/* ---- backward: 32 columns by 8 row lanes a block, over chunks of R rows ---------------------
 * gx for every element of the chunk, and (part not NULL) the chunk's bias sums part[p, K] */
#define ROW_LANES 8
template <typename T>
__global__ void bias_act_backward_kernel(T *gx, double *part, const T *gy, const T *x, const T *b, int64_t M, int64_t K,
                                         int64_t C, int64_t R, int64_t P, tc_op op, bool glu) {
    typedef typename tcu_acc<T>::type A;
    __shared__ double su[ROW_LANES][32], sv[ROW_LANES][32];
    int64_t ntile = (C + 31) / 32, gate = glu ? C : 0;
    int lane = threadIdx.x % 32, rl = threadIdx.x / 32;
    for (int64_t bid = blockIdx.x; bid < ntile * P; bid += gridDim.x) {
        int64_t c = bid % ntile * 32 + lane, p = bid / ntile, end = (p + 1) * R < M ? (p + 1) * R : M;
        double au = 0, av = 0;
        if (c < C) {
            A bu = b ? (A)tcu_float(b[gate + c]) : (A)0, bv = b && glu ? (A)tcu_float(b[c]) : (A)0;
            for (int64_t m = p * R + rl; m < end; m += ROW_LANES) {
                const T *r = x + m * K;
                A z = (A)tcu_float(r[gate + c]) + bu, g = (A)tcu_float(gy[m * C + c]), f, d;
                act_eval<A>(op, z, f, d);
                if (glu) {
                    A h = (A)tcu_float(r[c]) + bv, gh = g * f;
                    g *= h;
                    tcu_put(gx[m * K + c], gh);
                    av += (double)gh;
                }
                A gu = g * d;
                tcu_put(gx[m * K + gate + c], gu);
                au += (double)gu;
            }
        }
        if (!part) continue; /* the same for every thread of the block */
        su[rl][lane] = au;
        sv[rl][lane] = av;
        __syncthreads();
        if (rl == 0 && c < C) {
            for (int k = 1; k < ROW_LANES; k++) {
                au += su[k][lane];
                av += sv[k][lane];
            }
            part[p * K + gate + c] = au;
            if (glu) part[p * K + c] = av;
        }
        __syncthreads();
    }
}

/* gb[k] = the sum over p of part[p, k] */
template <typename T>
__global__ void bias_grad_final(T *gb, const double *part, int64_t P, int64_t K) {
    TCU_GRID_STRIDE(k, K) {
        double s = 0;
        for (int64_t p = 0; p < P; p++) s += part[p * K + k];
        tcu_put(gb[k], (typename tcu_acc<T>::type)s);
    }
}

/* ---- launchers -------------------------------------------------------------------------------- */
static unsigned grid_of(int64_t n) { return (unsigned)(n < 1 ? 1 : n > 65535 * 8 ? 65535 * 8 : n); }
/* rows of each chunk of the bias partials: about 256 chunks, at least 32 rows each */
static int64_t chunk_rows(int64_t M) { return (M + 255) / 256 < 32 ? 32 : (M + 255) / 256; }

extern "C" int tc_cuda_bias_act(tc_tensor *y, const tc_tensor *x, const tc_tensor *b, tc_op act, bool glu) {
    if (!act_known(act)) return tc_error("bias_act: %s is not a fused activation", tc_op_name(act));
    int64_t M = x->shape[0], K = x->shape[1], C = glu ? K / 2 : K;
    if (M * C == 0) return TC_OK;
    TCU_FLOAT_DISPATCH(x->dtype, T, "bias_act",
        TCU_LAUNCH(bias_act_kernel<T>, tcu_blocks(M * C), TCU_THREADS, 0, (T *)tcu_ptr(y), (const T *)tcu_ptr(x),
                   b ? (const T *)tcu_ptr(b) : (const T *)NULL, M, K, C, act, glu));
    TCU_LAUNCHED(glu ? "geglu" : "bias_act");
    return TC_OK;
}

extern "C" int tc_cuda_bias_act_backward(tc_tensor *gx, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                                         const tc_tensor *b, tc_op act, bool glu) {
    if (!act_known(act)) return tc_error("bias_act backward: %s is not a fused activation", tc_op_name(act));
    int64_t M = x->shape[0], K = x->shape[1], C = glu ? K / 2 : K, R = chunk_rows(M), P = M > 0 ? (M + R - 1) / R : 1;
    if (K == 0) return TC_OK;
    double *part = NULL;
    if (gb) {
        part = (double *)tc_cuda_alloc((size_t)(P * K) * sizeof(double));
        if (!part) return tc_error("bias_act backward: out of GPU memory for %lld partial sums", (long long)(P * K));
    }
    int rc = TC_OK;
    switch (x->dtype) { /* TCU_FLOAT_DISPATCH, with the workspace freed on every path */
#define RUN_(T)                                                                                              \
    if (M > 0) {                                                                                             \
        TCU_LAUNCH(bias_act_backward_kernel<T>, grid_of((C + 31) / 32 * P), 32 * ROW_LANES, 0, (T *)tcu_ptr(gx), \
                   part, (const T *)tcu_ptr(gy), (const T *)tcu_ptr(x), b ? (const T *)tcu_ptr(b) : (const T *)NULL, \
                   M, K, C, R, P, act, glu);                                                                 \
        rc = tcu_after_launch(glu ? "geglu backward" : "bias_act backward", __FILE__, __LINE__);                                     \
    }                                                                                                        \
    if (rc == TC_OK && gb) {                                                                                 \
        TCU_LAUNCH(bias_grad_final<T>, tcu_blocks(K), TCU_THREADS, 0, (T *)tcu_ptr(gb), (const double *)part,   \
                   M > 0 ? P : 0, K);                                                                        \
        rc = tcu_after_launch(glu ? "geglu backward" : "bias_act backward", __FILE__, __LINE__);                                     \
    }                                                                                                        \
    break;
    case TC_F32: RUN_(float)
    case TC_F64: RUN_(double)
    case TC_F16: RUN_(__half)
    case TC_BF16: RUN_(__nv_bfloat16)
#undef RUN_
    default: rc = tc_error("bias_act backward: dtype %s is not supported on cuda", tc_dtype_name(x->dtype));
    }
    if (part) tc_cuda_free(part);
    return rc;
}
