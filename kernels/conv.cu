/* conv.cu: conv2d's forward and both backward passes (contiguous NCHW, or every operand
 * channels-last: cuDNN's NHWC descriptors, no transposes) through cuDNN's legacy API;
 * conv_transpose2d reaches the same two entries (core/ops/conv.c). Per (dtype, layout, shapes,
 * params, math mode) key, a plan holds the descriptors and, once chosen, the algorithm of each
 * direction: cuDNN's heuristics' first that runs, or with T.backends.cudnn_benchmark(true) the
 * fastest by timing. All of tocha's cuDNN code lives here, behind kernels/cudnn.h. */
#include "cudnn.h"

#include <limits.h>
#include <stdio.h>

/* ---- status, handle, workspace ---------------------------------------------------------------- */
extern "C" int tcu_cudnn_fail(const char *call, cudnnStatus_t status, const char *file, int line) {
    /* name the function, not its whole argument list */
    int n = 0;
    while (call[n] && call[n] != '(') n++;
    return tc_error("%.*s failed: %s (%s:%d)", n, call, cudnnGetErrorString(status), file, line);
}

static cudnnHandle_t handle;
static cudaStream_t handle_stream;

extern "C" int tcu_cudnn_handle(cudnnHandle_t *out) {
    if (!handle) {
        cudnnHandle_t h;
        TCU_CUDNN(cudnnCreate(&h));
        handle = h;
        handle_stream = tcu_stream();
        TCU_CUDNN(cudnnSetStream(handle, handle_stream));
    }
    if (handle_stream != tcu_stream()) {
        handle_stream = tcu_stream();
        TCU_CUDNN(cudnnSetStream(handle, handle_stream));
    }
    *out = handle;
    return TC_OK;
}

/* one workspace for every call, grown to the largest an algorithm has asked for; every call
 * runs on tcu_stream(), so one call's use of it ends before the next begins */
static void *workspace;
static size_t workspace_size;

static int workspace_reserve(size_t n, void **out) {
    if (n > workspace_size) {
        if (workspace) tc_cuda_free(workspace);
        workspace_size = 0;
        workspace = tc_cuda_alloc(n);
        if (!workspace) return TC_ERR;
        workspace_size = n;
    }
    *out = workspace;
    return TC_OK;
}

/* ---- plans: a key, its descriptors and the algorithm chosen for each direction ----------------- */
enum { FWD, BWD_DATA, BWD_FILTER, NDIRS };
static const char *const dir_names[NDIRS] = {"forward", "backward data", "backward filter"};

/* every field an int, so that keys compare with memcmp */
typedef struct {
    int dtype, tf32, benchmark;
    int nhwc;                           /* every operand channels-last (strides of [N, H, W, C]) */
    int x[4], w[4];                     /* input [N, C, H, W], weight [O, C / groups, kh, kw] */
    int pad[2], stride[2], dilation[2], groups;
} conv_key;

typedef struct {
    bool chosen;
    int algo;
    cudnnMathType_t math;
    size_t memory;
} algo_choice;

typedef struct {
    conv_key key;
    int y[4]; /* the output cuDNN computes: [N, O, OH, OW] */
    cudnnDataType_t dt;
    cudnnMathType_t math; /* the mode the heuristics are asked under */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    algo_choice choice[NDIRS];
} conv_plan;

static conv_plan **plans;
static int nplans, plans_cap;

static void plan_free(conv_plan *pl) {
    if (!pl) return;
    if (pl->xd) cudnnDestroyTensorDescriptor(pl->xd);
    if (pl->yd) cudnnDestroyTensorDescriptor(pl->yd);
    if (pl->wd) cudnnDestroyFilterDescriptor(pl->wd);
    if (pl->cd) cudnnDestroyConvolutionDescriptor(pl->cd);
    free(pl);
}

extern "C" void tcu_cudnn_release(void) {
    tcu_cudnn_attention_release(); /* its plans name the handle */
    for (int i = 0; i < nplans; i++) plan_free(plans[i]);
    free(plans);
    plans = NULL;
    nplans = plans_cap = 0;
    if (workspace) tc_cuda_free(workspace);
    workspace = NULL;
    workspace_size = 0;
    if (handle) cudnnDestroy(handle);
    handle = NULL;
}

/* f16 and bf16 compute in f32 on tensor cores; f32 uses TF32 tensor cores only when allowed
 * (T.backends.allow_tf32), else FMA kernels alone; f64 has only FMA kernels */
static int describe(conv_plan *pl) {
    const conv_key *k = &pl->key;
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    switch (k->dtype) {
    case TC_F32: pl->dt = CUDNN_DATA_FLOAT; pl->math = k->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH; break;
    case TC_F64: pl->dt = compute = CUDNN_DATA_DOUBLE; pl->math = CUDNN_DEFAULT_MATH; break;
    case TC_F16: pl->dt = CUDNN_DATA_HALF; pl->math = CUDNN_TENSOR_OP_MATH; break;
    case TC_BF16: pl->dt = CUDNN_DATA_BFLOAT16; pl->math = CUDNN_TENSOR_OP_MATH; break;
    default: return tc_error("conv2d: dtype %s is not supported on cuda", tc_dtype_name((tc_dtype)k->dtype));
    }
    TCU_CUDNN(cudnnCreateTensorDescriptor(&pl->xd));
    TCU_CUDNN(cudnnCreateTensorDescriptor(&pl->yd));
    TCU_CUDNN(cudnnCreateFilterDescriptor(&pl->wd));
    TCU_CUDNN(cudnnCreateConvolutionDescriptor(&pl->cd));
    /* sizes are given as [N, C, H, W] in both formats; the format says how they lie in memory */
    cudnnTensorFormat_t fmt = k->nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    TCU_CUDNN(cudnnSetTensor4dDescriptor(pl->xd, fmt, pl->dt, k->x[0], k->x[1], k->x[2], k->x[3]));
    TCU_CUDNN(cudnnSetFilter4dDescriptor(pl->wd, pl->dt, fmt, k->w[0], k->w[1], k->w[2], k->w[3]));
    TCU_CUDNN(cudnnSetConvolution2dDescriptor(pl->cd, k->pad[0], k->pad[1], k->stride[0], k->stride[1],
                                              k->dilation[0], k->dilation[1], CUDNN_CROSS_CORRELATION, compute));
    TCU_CUDNN(cudnnSetConvolutionGroupCount(pl->cd, k->groups));
    TCU_CUDNN(cudnnSetConvolutionMathType(pl->cd, pl->math));
    TCU_CUDNN(cudnnSetTensor4dDescriptor(pl->yd, fmt, pl->dt, pl->y[0], pl->y[1], pl->y[2], pl->y[3]));
    return TC_OK;
}

/* the plan of key k (found, or made with output y [N, O, OH, OW]) */
static conv_plan *plan_for(const conv_key *k, const int *y) {
    for (int i = 0; i < nplans; i++)
        if (memcmp(&plans[i]->key, k, sizeof *k) == 0) return plans[i];
    if (nplans == plans_cap) {
        int cap = plans_cap ? 2 * plans_cap : 32;
        conv_plan **p = (conv_plan **)realloc(plans, (size_t)cap * sizeof *p);
        if (!p) { tc_error("conv2d: out of memory"); return NULL; }
        plans = p;
        plans_cap = cap;
    }
    conv_plan *pl = (conv_plan *)calloc(1, sizeof *pl);
    if (!pl) { tc_error("conv2d: out of memory"); return NULL; }
    pl->key = *k;
    memcpy(pl->y, y, sizeof pl->y);
    if (describe(pl) != TC_OK) { plan_free(pl); return NULL; }
    plans[nplans++] = pl;
    return pl;
}

/* ---- choosing an algorithm -----------------------------------------------------------------------
 * The three directions' calls differ only in their argument order and perf struct, so each
 * comes in one switch; x, w, y are the buffers of the direction (its output among them, which
 * timing overwrites). */
typedef struct {
    int algo;
    cudnnStatus_t status;
    size_t memory;
    cudnnMathType_t math;
} candidate;

#define MAX_ALGOS 8 /* at least each direction's CUDNN_CONVOLUTION_*_ALGO_COUNT */
static_assert(CUDNN_CONVOLUTION_FWD_ALGO_COUNT <= MAX_ALGOS && CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT <= MAX_ALGOS &&
              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT <= MAX_ALGOS, "MAX_ALGOS too small");

/* the workspace timing may use: enough for every algorithm the heuristics list, up to this */
#define BENCHMARK_WORKSPACE_MAX ((size_t)1 << 30)

template <typename Perf>
static void to_candidates(const Perf *perf, int n, candidate *out) {
    for (int i = 0; i < n; i++) out[i] = candidate{(int)perf[i].algo, perf[i].status, perf[i].memory, perf[i].mathType};
}

/* the heuristics' ranking (timed: cuDNN's timings, fastest first, with the workspace given) */
static int list_algos(cudnnHandle_t h, conv_plan *pl, int d, bool timed, void *x, void *w, void *y, void *ws,
                      size_t wsize, candidate *out, int *n) {
    *n = 0;
    switch (d) {
    case FWD: {
        cudnnConvolutionFwdAlgoPerf_t perf[MAX_ALGOS];
        if (timed)
            TCU_CUDNN(cudnnFindConvolutionForwardAlgorithmEx(h, pl->xd, x, pl->wd, w, pl->cd, pl->yd, y,
                                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, n, perf, ws, wsize));
        else
            TCU_CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(h, pl->xd, pl->wd, pl->cd, pl->yd,
                                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, n, perf));
        to_candidates(perf, *n, out);
    } break;
    case BWD_DATA: {
        cudnnConvolutionBwdDataAlgoPerf_t perf[MAX_ALGOS];
        if (timed)
            TCU_CUDNN(cudnnFindConvolutionBackwardDataAlgorithmEx(h, pl->wd, w, pl->yd, y, pl->cd, pl->xd, x,
                                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, n, perf, ws,
                                                                  wsize));
        else
            TCU_CUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, pl->wd, pl->yd, pl->cd, pl->xd,
                                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, n, perf));
        to_candidates(perf, *n, out);
    } break;
    default: {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[MAX_ALGOS];
        if (timed)
            TCU_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, pl->xd, x, pl->yd, y, pl->cd, pl->wd, w,
                                                                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, n, perf, ws,
                                                                    wsize));
        else
            TCU_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, pl->xd, pl->yd, pl->cd, pl->wd,
                                                                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, n, perf));
        to_candidates(perf, *n, out);
    } break;
    }
    return TC_OK;
}

/* the workspace algo needs under the math mode set on pl->cd */
static int workspace_need(cudnnHandle_t h, conv_plan *pl, int d, int algo, size_t *n) {
    switch (d) {
    case FWD:
        TCU_CUDNN(cudnnGetConvolutionForwardWorkspaceSize(h, pl->xd, pl->wd, pl->cd, pl->yd,
                                                          (cudnnConvolutionFwdAlgo_t)algo, n));
        break;
    case BWD_DATA:
        TCU_CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(h, pl->wd, pl->yd, pl->cd, pl->xd,
                                                               (cudnnConvolutionBwdDataAlgo_t)algo, n));
        break;
    default:
        TCU_CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, pl->xd, pl->yd, pl->cd, pl->wd,
                                                                 (cudnnConvolutionBwdFilterAlgo_t)algo, n));
        break;
    }
    return TC_OK;
}

/* the math mode to run candidate c under, or -1 to skip it: never a down-conversion of f32
 * to f16, and f32 without TF32 only on FMA kernels */
static int math_for(const conv_plan *pl, const candidate *c) {
    if (c->status != CUDNN_STATUS_SUCCESS || c->math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return -1;
    if (pl->dt == CUDNN_DATA_FLOAT && pl->math == CUDNN_FMA_MATH)
        return c->math == CUDNN_FMA_MATH || c->math == CUDNN_DEFAULT_MATH ? (int)CUDNN_FMA_MATH : -1;
    return (int)c->math;
}

/* picks the algorithm of direction d once per plan: the first candidate whose workspace can be
 * had, in the order of the timings (cudnn_benchmark) and then of the heuristics. Timing writes
 * the direction's output, so it is skipped (may_time false) where that output holds a sum in
 * progress; where it fails (out of memory), the heuristics' ranking stands. */
static int choose(cudnnHandle_t h, conv_plan *pl, int d, void *x, void *w, void *y, bool may_time) {
    algo_choice *ch = &pl->choice[d];
    if (ch->chosen) return TC_OK;
    candidate c[2 * MAX_ALGOS], heur[MAX_ALGOS];
    int n = 0, nh;
    TCU_CUDNN(cudnnSetConvolutionMathType(pl->cd, pl->math));
    if (list_algos(h, pl, d, false, x, w, y, NULL, 0, heur, &nh) != TC_OK) return TC_ERR;
    if (pl->key.benchmark && may_time) {
        size_t most = 0;
        void *ws;
        for (int i = 0; i < nh; i++)
            if (math_for(pl, &heur[i]) >= 0 && heur[i].memory <= BENCHMARK_WORKSPACE_MAX && heur[i].memory > most)
                most = heur[i].memory;
        if (workspace_reserve(most, &ws) != TC_OK ||
            list_algos(h, pl, d, true, x, w, y, ws, workspace_size, c, &n) != TC_OK)
            n = 0;
        TCU_CUDNN(cudnnSetConvolutionMathType(pl->cd, pl->math));
    }
    for (int i = 0; i < nh; i++) c[n++] = heur[i];
    char why[256] = "none runs in this math mode";
    for (int i = 0; i < n; i++) {
        int math = math_for(pl, &c[i]);
        size_t need;
        void *ws;
        if (math < 0) continue;
        TCU_CUDNN(cudnnSetConvolutionMathType(pl->cd, (cudnnMathType_t)math));
        /* out of memory for the workspace: a leaner algorithm */
        if (workspace_need(h, pl, d, c[i].algo, &need) != TC_OK ||
            workspace_reserve(need > c[i].memory ? need : c[i].memory, &ws) != TC_OK) {
            snprintf(why, sizeof why, "%s", tc_last_error());
            continue;
        }
        *ch = algo_choice{true, c[i].algo, (cudnnMathType_t)math, need > c[i].memory ? need : c[i].memory};
        return TC_OK;
    }
    const conv_key *k = &pl->key;
    return tc_error("cuDNN has no usable %s algorithm for input [%d x %d x %d x %d], weight "
                    "[%d x %d x %d x %d], groups %d, %s (%d offered; %s)", dir_names[d], k->x[0], k->x[1],
                    k->x[2], k->x[3], k->w[0], k->w[1], k->w[2], k->w[3], k->groups,
                    tc_dtype_name((tc_dtype)k->dtype), n, why);
}

/* runs direction d on one batch chunk: FWD y = conv(x, w); BWD_DATA x = its adjoint applied
 * to y; BWD_FILTER w = (accumulate ? w : 0) + the weight gradient of x and y */
static int run(conv_plan *pl, int d, void *x, void *w, void *y, bool accumulate) {
    cudnnHandle_t h;
    void *ws;
    if (tcu_cudnn_handle(&h) != TC_OK || choose(h, pl, d, x, w, y, !accumulate) != TC_OK) return TC_ERR;
    const algo_choice *ch = &pl->choice[d];
    if (workspace_reserve(ch->memory, &ws) != TC_OK) return TC_ERR;
    TCU_CUDNN(cudnnSetConvolutionMathType(pl->cd, ch->math));
    /* scaling factors: double for f64 data, else float (cuDNN reads them on the host) */
    float f1 = 1, fb = accumulate ? 1.f : 0.f;
    double d1 = 1, db = accumulate ? 1.0 : 0.0;
    bool f64 = pl->dt == CUDNN_DATA_DOUBLE;
    const void *one = f64 ? (const void *)&d1 : (const void *)&f1, *beta = f64 ? (const void *)&db : (const void *)&fb;
    switch (d) {
    case FWD:
        TCU_CUDNN(cudnnConvolutionForward(h, one, pl->xd, x, pl->wd, w, pl->cd, (cudnnConvolutionFwdAlgo_t)ch->algo,
                                          ws, ch->memory, beta, pl->yd, y));
        break;
    case BWD_DATA:
        TCU_CUDNN(cudnnConvolutionBackwardData(h, one, pl->wd, w, pl->yd, y, pl->cd,
                                               (cudnnConvolutionBwdDataAlgo_t)ch->algo, ws, ch->memory, beta, pl->xd,
                                               x));
        break;
    default:
        TCU_CUDNN(cudnnConvolutionBackwardFilter(h, one, pl->xd, x, pl->yd, y, pl->cd,
                                                 (cudnnConvolutionBwdFilterAlgo_t)ch->algo, ws, ch->memory, beta,
                                                 pl->wd, w));
        break;
    }
    return TC_OK;
}

/* ---- small kernels: bias, its gradient, and resizing an output-shaped buffer ------------------- */
__device__ static inline void store(float *p, float v) { *p = v; }
__device__ static inline void store(double *p, double v) { *p = v; }
__device__ static inline void store(__half *p, float v) { *p = __float2half_rn(v); }
__device__ static inline void store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* y [rows = N * O, hw] += b [O]: a block per row */
template <typename T>
__global__ void add_bias_kernel(T *y, const T *b, int64_t rows, int64_t O, int64_t hw) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        typename tcu_acc<T>::type v = tcu_float(b[r % O]);
        T *row = y + r * hw;
        for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) store(&row[i], tcu_float(row[i]) + v);
    }
}

/* y [rows, O] += b [O] (channels-last: O innermost) */
template <typename T>
__global__ void add_bias_nhwc_kernel(T *y, const T *b, int64_t n, int64_t O) {
    TCU_GRID_STRIDE(i, n) store(&y[i], tcu_float(y[i]) + tcu_float(b[i % O]));
}

/* gb [O] = the column sums of gy [rows, O] (channels-last), in double: a block per 32
 * channels, its 8 warps taking every 8th row so that a warp reads 32 neighbouring channels */
template <typename T>
__global__ void bias_grad_nhwc_kernel(T *gb, const T *gy, int64_t rows, int64_t O) {
    __shared__ double part[8][33];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int64_t o0 = (int64_t)blockIdx.x * 32; o0 < O; o0 += (int64_t)gridDim.x * 32) {
        int64_t o = o0 + lane;
        double s = 0;
        if (o < O)
            for (int64_t r = warp; r < rows; r += 8) s += tcu_float(gy[r * O + o]);
        __syncthreads(); /* part is free again after the previous channels */
        part[warp][lane] = s;
        __syncthreads();
        if (warp == 0 && o < O) {
            double t = 0;
            for (int k = 0; k < 8; k++) t += part[k][lane];
            store(&gb[o], (typename tcu_acc<T>::type)t);
        }
    }
}

/* gb [O] = the sums of gy [N, O, hw] over N and hw, in double: a block per channel */
template <typename T>
__global__ void bias_grad_kernel(T *gb, const T *gy, int64_t N, int64_t O, int64_t hw) {
    __shared__ double part[TCU_THREADS / 32];
    for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
        double s = 0;
        for (int64_t n = 0; n < N; n++) {
            const T *row = gy + (n * O + o) * hw;
            for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) s += tcu_float(row[i]);
        }
        for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
        __syncthreads(); /* part is free again after the previous channel */
        if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
        __syncthreads();
        if (threadIdx.x == 0) {
            double t = 0;
            for (unsigned k = 0; k < blockDim.x / 32; k++) t += part[k];
            store(&gb[o], (typename tcu_acc<T>::type)t);
        }
    }
}

/* dst [planes, dh, dw, c] = src [planes, sh, sw, c] cropped, or extended with zeros (NCHW:
 * c = 1; channels-last: planes = N, c = channels); E is an integer of the element's size (the
 * bits are copied) */
template <typename E>
__global__ void resize_kernel(E *dst, const E *src, int64_t planes, int64_t dh, int64_t dw, int64_t sh, int64_t sw,
                              int64_t c) {
    TCU_GRID_STRIDE(i, planes * dh * dw * c) {
        int64_t k = i % c, w = i / c % dw, h = i / (c * dw) % dh, p = i / (c * dw * dh);
        dst[i] = h < sh && w < sw ? src[((p * sh + h) * sw + w) * c + k] : (E)0;
    }
}

template <typename T>
static int add_bias(tc_tensor *y, const tc_tensor *b, bool nhwc) {
    if (nhwc) {
        TCU_LAUNCH(add_bias_nhwc_kernel<T>, tcu_blocks(tc_numel(y)), TCU_THREADS, 0, (T *)tcu_ptr(y),
                   (const T *)tcu_ptr(b), tc_numel(y), y->shape[1]);
        TCU_LAUNCHED("conv2d bias");
        return TC_OK;
    }
    int64_t rows = y->shape[0] * y->shape[1], hw = y->shape[2] * y->shape[3];
    TCU_LAUNCH(add_bias_kernel<T>, (unsigned)(rows < 65535 * 8 ? rows : 65535 * 8), TCU_THREADS, 0, (T *)tcu_ptr(y),
               (const T *)tcu_ptr(b), rows, y->shape[1], hw);
    TCU_LAUNCHED("conv2d bias");
    return TC_OK;
}

template <typename T>
static int bias_grad(tc_tensor *gb, const tc_tensor *gy, bool nhwc) {
    int64_t O = gy->shape[1];
    if (nhwc) {
        int64_t blocks = (O + 31) / 32;
        TCU_LAUNCH(bias_grad_nhwc_kernel<T>, (unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, (T *)tcu_ptr(gb),
                   (const T *)tcu_ptr(gy), tc_numel(gy) / O, O);
        TCU_LAUNCHED("conv2d backward bias");
        return TC_OK;
    }
    TCU_LAUNCH(bias_grad_kernel<T>, (unsigned)(O < 65535 * 8 ? O : 65535 * 8), TCU_THREADS, 0, (T *)tcu_ptr(gb),
               (const T *)tcu_ptr(gy), gy->shape[0], O, gy->shape[2] * gy->shape[3]);
    TCU_LAUNCHED("conv2d backward bias");
    return TC_OK;
}

template <typename E>
static int resize_launch(void *dst, const void *src, int64_t planes, int64_t dh, int64_t dw, int64_t sh, int64_t sw,
                         int64_t c) {
    TCU_LAUNCH(resize_kernel<E>, tcu_blocks(planes * dh * dw * c), TCU_THREADS, 0, (E *)dst, (const E *)src, planes,
               dh, dw, sh, sw, c);
    TCU_LAUNCHED("conv2d resize");
    return TC_OK;
}

/* resizes the output-shaped buffer of y's [N, O] images (layout as y's) */
static int resize(void *dst, const void *src, const tc_tensor *y, bool nhwc, int64_t dh, int64_t dw, int64_t sh,
                  int64_t sw) {
    int64_t planes = nhwc ? y->shape[0] : y->shape[0] * y->shape[1], c = nhwc ? y->shape[1] : 1;
    switch (tc_dtype_size(y->dtype)) {
    case 2: return resize_launch<uint16_t>(dst, src, planes, dh, dw, sh, sw, c);
    case 4: return resize_launch<uint32_t>(dst, src, planes, dh, dw, sh, sw, c);
    default: return resize_launch<uint64_t>(dst, src, planes, dh, dw, sh, sw, c);
    }
}

/* ---- the shape of a call ------------------------------------------------------------------------
 * Sizes come from the tensors given: x (or gx) [N, C, H, W], w (or gw) [O, C / groups, kh, kw],
 * y (or gy) [N, O, OH, OW]. cuDNN's output has OH = (H + 2 ph - dh (kh - 1) - 1) / sh + 1, which
 * conv_transpose2d's output_padding can make larger than the y given (by the rows no input
 * reaches); then a bigger, zero-extended copy of y stands in. Batches too large for cuDNN's
 * 32-bit sizes go through in chunks of images. */
typedef struct {
    const tc_tensor *x, *w, *y;   /* the tensors giving the sizes */
    bool nhwc;                    /* every operand channels-last */
    int64_t oh, ow;               /* cuDNN's output size */
    int64_t chunk;                /* images per call */
    bool empty;                   /* a size is 0: the convolution sums nothing */
    conv_key key;                 /* of a full chunk */
} conv_shape;

static int shape_of(conv_shape *s, const tc_tensor *x, const tc_tensor *w, const tc_tensor *y, const tc_conv_params *p) {
    memset(s, 0, sizeof *s);
    s->x = x;
    s->w = w;
    s->y = y;
    int64_t oh = (x->shape[2] + 2 * p->padding[0] - (int64_t)p->dilation[0] * (w->shape[2] - 1) - 1) / p->stride[0] + 1;
    int64_t ow = (x->shape[3] + 2 * p->padding[1] - (int64_t)p->dilation[1] * (w->shape[3] - 1) - 1) / p->stride[1] + 1;
    s->empty = tc_numel(x) == 0 || tc_numel(w) == 0 || tc_numel(y) == 0;
    if (s->empty) return TC_OK;
    /* one layout for all: a tensor both layouts describe (C = 1, or H = W = 1) fits either */
    s->nhwc = !tc_is_contiguous(x) || !tc_is_contiguous(w) || !tc_is_contiguous(y);
    const tc_tensor *ops[3] = {x, w, y};
    for (int i = 0; i < 3; i++)
        if (!tc_is_contiguous_format(ops[i], s->nhwc ? TC_CHANNELS_LAST : TC_CONTIGUOUS_FORMAT))
            return tc_error("conv2d: the operands must all be contiguous NCHW or all channels-last");
    if (oh < y->shape[2] || ow < y->shape[3])
        return tc_error("conv2d: the output [%lld x %lld] is larger than the convolution's [%lld x %lld]",
                        (long long)y->shape[2], (long long)y->shape[3], (long long)oh, (long long)ow);
    s->oh = oh;
    s->ow = ow;
    int64_t per = x->shape[1] * x->shape[2] * x->shape[3], yper = y->shape[1] * oh * ow;
    if (yper > per) per = yper;
    s->chunk = INT_MAX / per;
    if (s->chunk > x->shape[0]) s->chunk = x->shape[0];
    if (s->chunk < 1 || tc_numel(w) > INT_MAX)
        return tc_error("conv2d: one image of input [%lld x %lld x %lld] or the weight is too large for cuDNN",
                        (long long)x->shape[1], (long long)x->shape[2], (long long)x->shape[3]);
    conv_key *k = &s->key;
    k->dtype = x->dtype;
    k->tf32 = x->dtype == TC_F32 && tc_cuda_allow_tf32();
    k->benchmark = tc_cuda_cudnn_benchmark();
    k->nhwc = s->nhwc;
    for (int i = 0; i < 4; i++) {
        k->x[i] = (int)x->shape[i];
        k->w[i] = (int)w->shape[i];
    }
    k->x[0] = (int)s->chunk;
    for (int i = 0; i < 2; i++) {
        k->pad[i] = p->padding[i];
        k->stride[i] = p->stride[i];
        k->dilation[i] = p->dilation[i];
    }
    k->groups = p->groups;
    return TC_OK;
}

/* the plan for images [n0, n0 + chunk) */
static conv_plan *plan_of(const conv_shape *s, int64_t n0) {
    conv_key k = s->key;
    int64_t n = s->x->shape[0] - n0 < s->chunk ? s->x->shape[0] - n0 : s->chunk;
    k.x[0] = (int)n;
    int y[4] = {(int)n, (int)s->y->shape[1], (int)s->oh, (int)s->ow};
    return plan_for(&k, y);
}

/* runs direction d over the batch: x, w, y are the buffers (y of cuDNN's output size) */
static int run_batch(const conv_shape *s, int d, char *x, char *w, char *y) {
    size_t es = tc_dtype_size(s->x->dtype);
    int64_t xper = s->x->shape[1] * s->x->shape[2] * s->x->shape[3], yper = s->y->shape[1] * s->oh * s->ow;
    for (int64_t n0 = 0; n0 < s->x->shape[0]; n0 += s->chunk) {
        conv_plan *pl = plan_of(s, n0);
        /* the weight gradient sums over the chunks */
        bool accumulate = d == BWD_FILTER && n0 > 0;
        if (!pl || run(pl, d, x + (size_t)(n0 * xper) * es, w, y + (size_t)(n0 * yper) * es, accumulate) != TC_OK)
            return TC_ERR;
    }
    return TC_OK;
}

/* y's buffer at cuDNN's output size: y itself, or a new one (*tmp, to free) holding y
 * zero-extended when copy is set */
static int output_buffer(const conv_shape *s, tc_tensor *y, bool copy, char **buf, void **tmp) {
    *tmp = NULL;
    *buf = tcu_ptr(y);
    if (s->oh == y->shape[2] && s->ow == y->shape[3]) return TC_OK;
    size_t es = tc_dtype_size(y->dtype);
    *tmp = tc_cuda_alloc((size_t)(y->shape[0] * y->shape[1] * s->oh * s->ow) * es);
    if (!*tmp) return TC_ERR;
    *buf = (char *)*tmp;
    return copy ? resize(*tmp, tcu_ptr(y), y, s->nhwc, s->oh, s->ow, y->shape[2], y->shape[3]) : TC_OK;
}

/* prefixes the error with the op and its shapes */
static int failed(const char *op, const tc_tensor *x, const tc_tensor *w) {
    char msg[1024], sx[128], sw[128];
    snprintf(msg, sizeof msg, "%s", tc_last_error());
    tc_shape_str(x->ndim, x->shape, sx, sizeof sx);
    tc_shape_str(w->ndim, w->shape, sw, sizeof sw);
    return tc_error("%s %s * %s: %s", op, sx, sw, msg);
}

static int zero(tc_tensor *t) {
    if (t && tc_numel(t) > 0)
        TCU_CHECK(cudaMemsetAsync(tcu_ptr(t), 0, (size_t)tc_numel(t) * tc_dtype_size(t->dtype), tcu_stream()));
    return TC_OK;
}

/* ---- forward: y [N, O, OH, OW] = conv(x [N, C, H, W], w [O, C / groups, kh, kw]) + b [O] ------- */
static int conv2d(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b, const tc_conv_params *p) {
    conv_shape s;
    if (shape_of(&s, x, w, y, p) != TC_OK) return TC_ERR;
    if (tc_numel(y) == 0) return TC_OK;
    int rc = TC_OK;
    if (s.empty) {
        rc = zero(y);
    } else {
        char *out;
        void *tmp;
        rc = output_buffer(&s, y, false, &out, &tmp);
        if (rc == TC_OK) rc = run_batch(&s, FWD, tcu_ptr(x), tcu_ptr(w), out);
        if (rc == TC_OK && tmp)
            rc = resize(tcu_ptr(y), tmp, y, s.nhwc, y->shape[2], y->shape[3], s.oh, s.ow);
        if (tmp) tc_cuda_free(tmp);
    }
    if (rc == TC_OK && b) TCU_FLOAT_DISPATCH(y->dtype, T, "conv2d", rc = add_bias<T>(y, b, !tc_is_contiguous(y)));
    return rc;
}

extern "C" int tc_cuda_conv2d(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,
                              const tc_conv_params *p) {
    return conv2d(y, x, w, b, p) == TC_OK ? TC_OK : failed("conv2d", x, w);
}

/* ---- backward: gx = the adjoint of the convolution applied to gy (conv_transpose2d's forward),
 * gw = the weight gradient, gb = gy summed over N, OH, OW; each NULL when not wanted ------------- */
static int conv2d_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                           const tc_tensor *w, const tc_conv_params *p) {
    int rc = TC_OK;
    if (gb && tc_numel(gb) > 0)
        TCU_FLOAT_DISPATCH(gy->dtype, T, "conv2d backward", rc = bias_grad<T>(gb, gy, !tc_is_contiguous(gy)));
    if (rc != TC_OK || (!gx && !gw)) return rc;
    conv_shape s;
    if (shape_of(&s, gx ? gx : x, w ? w : gw, gy, p) != TC_OK) return TC_ERR;
    if (s.empty) return zero(gx) == TC_OK && zero(gw) == TC_OK ? TC_OK : TC_ERR;
    char *dy;
    void *tmp;
    rc = output_buffer(&s, (tc_tensor *)gy, true, &dy, &tmp);
    if (rc == TC_OK && gx) rc = run_batch(&s, BWD_DATA, tcu_ptr(gx), tcu_ptr(w), dy);
    if (rc == TC_OK && gw) rc = run_batch(&s, BWD_FILTER, tcu_ptr(x), tcu_ptr(gw), dy);
    if (tmp) tc_cuda_free(tmp);
    return rc;
}

extern "C" int tc_cuda_conv2d_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                       const tc_tensor *x, const tc_tensor *w, const tc_conv_params *p) {
    if (conv2d_backward(gx, gw, gb, gy, x, w, p) == TC_OK) return TC_OK;
    return failed("conv2d backward", gx ? gx : x ? x : gy, w ? w : gw ? gw : gy);
}
