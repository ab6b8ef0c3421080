/* cudnn.cpp (cudaemu): cuDNN's legacy convolution API (include/cudnn.h) on the CPU. Each
 * direction is one walk over every (image, output channel, output pixel, input channel of the
 * group, filter tap) that sums products in double, then writes alpha * sum + beta * old (old
 * not read when beta is 0, as cuDNN). Tensors and filters are 4-d, NCHW or NHWC. */
#include "emu.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>

#include <stdlib.h>
#include <string.h>

struct tcu_emu_cudnn_context {
    cudaStream_t stream;
};

struct tcu_emu_cudnn_tensor {
    bool set;
    cudnnTensorFormat_t format;
    cudnnDataType_t dt;
    int d[4]; /* [N, C, H, W] (a filter: [K, C, kh, kw]) whatever the format */
};

struct tcu_emu_cudnn_conv {
    bool set;
    int pad[2], stride[2], dil[2], groups;
    cudnnConvolutionMode_t mode;
    cudnnMathType_t math;
};

/* what every algorithm asks for: small, but not 0, so that the caller's workspace is checked */
#define WORKSPACE ((size_t)1024)

const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    default: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
}

cudaStream_t tcu_emu_cudnn_stream(tcu_emu_cudnn_context *h) { return h->stream; }

/* ---- handle and descriptors ------------------------------------------------------------------ */
cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    if (tcu_emu_no_device()) return CUDNN_STATUS_NOT_INITIALIZED;
    *handle = (cudnnHandle_t)calloc(1, sizeof **handle);
    return *handle ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_INITIALIZED;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    free(handle);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    if (!handle || !tcu_emu_stream_ok(stream)) return CUDNN_STATUS_BAD_PARAM;
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

template <typename D>
static cudnnStatus_t create(D **d) {
    *d = (D *)calloc(1, sizeof **d);
    return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_INITIALIZED;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) { return create(d); }
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) { return create(d); }
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) { return create(d); }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) { free(d); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) { free(d); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) { free(d); return CUDNN_STATUS_SUCCESS; }

static bool known_dtype(cudnnDataType_t dt) {
    return dt == CUDNN_DATA_FLOAT || dt == CUDNN_DATA_DOUBLE || dt == CUDNN_DATA_HALF || dt == CUDNN_DATA_BFLOAT16;
}

static cudnnStatus_t set4d(tcu_emu_cudnn_tensor *d, cudnnTensorFormat_t format, cudnnDataType_t dt, int n, int c,
                           int h, int w) {
    if (!d || !known_dtype(dt) || (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC) || n < 1 || c < 1 ||
        h < 1 || w < 1)
        return CUDNN_STATUS_BAD_PARAM;
    *d = tcu_emu_cudnn_tensor{true, format, dt, {n, c, h, w}};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format, cudnnDataType_t dt,
                                         int n, int c, int h, int w) {
    return set4d(d, format, dt, n, c, h, w);
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dt, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
    return set4d(d, format, dt, k, c, h, w);
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (!d || pad_h < 0 || pad_w < 0 || u < 1 || v < 1 || dilation_h < 1 || dilation_w < 1 || !known_dtype(compute))
        return CUDNN_STATUS_BAD_PARAM;
    d->set = true;
    d->pad[0] = pad_h, d->pad[1] = pad_w;
    d->stride[0] = u, d->stride[1] = v;
    d->dil[0] = dilation_h, d->dil[1] = dilation_w;
    d->mode = mode;
    if (d->groups < 1) d->groups = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groups) {
    if (!d || groups < 1) return CUDNN_STATUS_BAD_PARAM;
    d->groups = groups;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    d->math = math;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- the shapes of a call: x [N, C, H, W], w [K, C / G, kh, kw], y [N, K, OH, OW] ------------- */
static cudnnStatus_t check(const tcu_emu_cudnn_tensor *x, const tcu_emu_cudnn_tensor *w,
                           const tcu_emu_cudnn_conv *c, const tcu_emu_cudnn_tensor *y) {
    if (!x || !w || !c || !y || !x->set || !w->set || !c->set || !y->set) return CUDNN_STATUS_BAD_PARAM;
    if (c->mode != CUDNN_CROSS_CORRELATION) return CUDNN_STATUS_NOT_SUPPORTED;
    if (x->dt != w->dt || x->dt != y->dt) return CUDNN_STATUS_BAD_PARAM;
    if (x->d[1] != w->d[1] * c->groups || w->d[0] % c->groups != 0) return CUDNN_STATUS_BAD_PARAM;
    if (y->d[0] != x->d[0] || y->d[1] != w->d[0]) return CUDNN_STATUS_BAD_PARAM;
    for (int i = 0; i < 2; i++) {
        int span = c->dil[i] * (w->d[2 + i] - 1) + 1, in = x->d[2 + i] + 2 * c->pad[i];
        if (in < span || y->d[2 + i] != (in - span) / c->stride[i] + 1) return CUDNN_STATUS_BAD_PARAM;
    }
    return CUDNN_STATUS_SUCCESS;
}

static size_t elem_size(cudnnDataType_t dt) {
    return dt == CUDNN_DATA_DOUBLE ? 8 : dt == CUDNN_DATA_FLOAT ? 4 : 2;
}

static int64_t numel(const tcu_emu_cudnn_tensor *t) { return (int64_t)t->d[0] * t->d[1] * t->d[2] * t->d[3]; }

/* the buffer of t lies in one device allocation */
static bool on_device(const void *p, const tcu_emu_cudnn_tensor *t) {
    return p && tcu_emu_is_device(p, (size_t)numel(t) * elem_size(t->dt));
}

/* the element offset of [a, b, h, w] in t's format */
static inline int64_t at(const tcu_emu_cudnn_tensor *t, int64_t a, int64_t b, int64_t h, int64_t w) {
    const int *d = t->d;
    return t->format == CUDNN_TENSOR_NCHW ? ((a * d[1] + b) * d[2] + h) * d[3] + w
                                          : ((a * d[2] + h) * d[3] + w) * d[1] + b;
}

static double load(const void *p, cudnnDataType_t dt, int64_t i) {
    switch (dt) {
    case CUDNN_DATA_DOUBLE: return ((const double *)p)[i];
    case CUDNN_DATA_FLOAT: return ((const float *)p)[i];
    case CUDNN_DATA_HALF: return __half2float(((const __half *)p)[i]);
    default: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    }
}

static void store(void *p, cudnnDataType_t dt, int64_t i, double v) {
    switch (dt) {
    case CUDNN_DATA_DOUBLE: ((double *)p)[i] = v; break;
    case CUDNN_DATA_FLOAT: ((float *)p)[i] = (float)v; break;
    case CUDNN_DATA_HALF: ((__half *)p)[i] = __float2half_rn((float)v); break;
    default: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v); break;
    }
}

/* ---- the convolution ----------------------------------------------------------------------------- */
enum { FWD, BWD_DATA, BWD_FILTER };

/* out (the direction's output: y, dx or dw, described by od) = alpha * the direction's sums +
 * beta * out; scalars are doubles for double data, floats otherwise */
static cudnnStatus_t convolve(int dir, const tcu_emu_cudnn_tensor *xd, const void *x, const tcu_emu_cudnn_tensor *wd,
                              const void *w, const tcu_emu_cudnn_conv *c, const tcu_emu_cudnn_tensor *yd,
                              const void *y, const void *alpha, const void *beta, void *ws, size_t wsize,
                              const tcu_emu_cudnn_tensor *od, void *out) {
    cudnnStatus_t st = check(xd, wd, c, yd);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!alpha || !beta || (ws == NULL && wsize > 0) || wsize < WORKSPACE || !tcu_emu_is_device(ws, WORKSPACE))
        return CUDNN_STATUS_BAD_PARAM;
    if ((dir != BWD_DATA && !on_device(x, xd)) || (dir != BWD_FILTER && !on_device(w, wd)) ||
        (dir != FWD && !on_device(y, yd)) || !on_device(out, od))
        return CUDNN_STATUS_BAD_PARAM;
    bool f64 = xd->dt == CUDNN_DATA_DOUBLE;
    double a = f64 ? *(const double *)alpha : *(const float *)alpha;
    double b = f64 ? *(const double *)beta : *(const float *)beta;
    int64_t n_out = numel(od);
    double *acc = (double *)calloc((size_t)n_out, sizeof *acc);
    if (!acc) return CUDNN_STATUS_EXECUTION_FAILED;
    int N = xd->d[0], H = xd->d[2], W = xd->d[3], K = wd->d[0], Cg = wd->d[1], KH = wd->d[2], KW = wd->d[3];
    int OH = yd->d[2], OW = yd->d[3], Kg = K / c->groups;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    int64_t yi = at(yd, n, k, oh, ow);
                    double dy = dir == FWD ? 0 : load(y, yd->dt, yi), sum = 0;
                    for (int ci = 0; ci < Cg; ci++)
                        for (int i = 0; i < KH; i++) {
                            int h = oh * c->stride[0] - c->pad[0] + i * c->dil[0];
                            if (h < 0 || h >= H) continue;
                            for (int j = 0; j < KW; j++) {
                                int v = ow * c->stride[1] - c->pad[1] + j * c->dil[1];
                                if (v < 0 || v >= W) continue;
                                int64_t xi = at(xd, n, k / Kg * Cg + ci, h, v), wi = at(wd, k, ci, i, j);
                                if (dir == FWD) sum += load(x, xd->dt, xi) * load(w, wd->dt, wi);
                                else if (dir == BWD_DATA) acc[xi] += dy * load(w, wd->dt, wi);
                                else acc[wi] += dy * load(x, xd->dt, xi);
                            }
                        }
                    if (dir == FWD) acc[yi] = sum;
                }
    for (int64_t i = 0; i < n_out; i++)
        store(out, od->dt, i, b == 0 ? a * acc[i] : a * acc[i] + b * load(out, od->dt, i));
    free(acc);
    return CUDNN_STATUS_SUCCESS;
}

/* a convolution on a capturing stream: checked now, recorded with copies of its descriptors
 * and scalars, run at each graph launch */
struct recorded_conv {
    int dir;
    tcu_emu_cudnn_tensor xd, wd, yd, od;
    tcu_emu_cudnn_conv c;
    const void *x, *w, *y;
    double alpha[1], beta[1]; /* room for either a float or a double */
    void *ws, *out;
    size_t wsize;
};
static recorded_conv *recording(int dir, const tcu_emu_cudnn_tensor *xd, const void *x, const tcu_emu_cudnn_tensor *wd,
                                const void *w, const tcu_emu_cudnn_conv *c, const tcu_emu_cudnn_tensor *yd,
                                const void *y, const void *alpha, const void *beta, void *ws, size_t wsize,
                                const tcu_emu_cudnn_tensor *od, void *out) {
    recorded_conv *r = new recorded_conv{dir, *xd, *wd, *yd, *od, *c, x, w, y, {0}, {0}, ws, out, wsize};
    size_t n = xd->dt == CUDNN_DATA_DOUBLE ? sizeof(double) : sizeof(float);
    memcpy(r->alpha, alpha, n);
    memcpy(r->beta, beta, n);
    return r;
}
static void run_recorded(void *ctx) {
    const recorded_conv *r = (const recorded_conv *)ctx;
    (void)convolve(r->dir, &r->xd, r->x, &r->wd, r->w, &r->c, &r->yd, r->y, r->alpha, r->beta, r->ws, r->wsize,
                   &r->od, r->out);
}
static void free_recorded(void *ctx) { delete (recorded_conv *)ctx; }

static cudnnStatus_t convolve_on(cudnnHandle_t h, int dir, const tcu_emu_cudnn_tensor *xd, const void *x,
                                 const tcu_emu_cudnn_tensor *wd, const void *w, const tcu_emu_cudnn_conv *c,
                                 const tcu_emu_cudnn_tensor *yd, const void *y, const void *alpha, const void *beta,
                                 void *ws, size_t wsize, const tcu_emu_cudnn_tensor *od, void *out) {
    if (!tcu_emu_capturing(h->stream)) return convolve(dir, xd, x, wd, w, c, yd, y, alpha, beta, ws, wsize, od, out);
    cudnnStatus_t st = check(xd, wd, c, yd);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    tcu_emu_record(h->stream, dim3(0), dim3(1), 0, run_recorded,
                   recording(dir, xd, x, wd, w, c, yd, y, alpha, beta, ws, wsize, od, out), free_recorded);
    return cudaPeekAtLastError() == cudaErrorStreamCaptureInvalidated ? CUDNN_STATUS_EXECUTION_FAILED
                                                                      : CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
                                      cudnnFilterDescriptor_t wd, const void *w, cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t wsize, const void *beta,
                                      cudnnTensorDescriptor_t yd, void *y) {
    if (!h || algo != 0) return CUDNN_STATUS_BAD_PARAM;
    return convolve_on(h, FWD, xd, x, wd, w, conv, yd, y, alpha, beta, ws, wsize, yd, y);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, cudnnFilterDescriptor_t wd,
                                           const void *w, cudnnTensorDescriptor_t dyd, const void *dy,
                                           cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *ws, size_t wsize, const void *beta, cudnnTensorDescriptor_t dxd,
                                           void *dx) {
    if (!h || algo != 0) return CUDNN_STATUS_BAD_PARAM;
    return convolve_on(h, BWD_DATA, dxd, dx, wd, w, conv, dyd, dy, alpha, beta, ws, wsize, dxd, dx);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd,
                                             const void *x, cudnnTensorDescriptor_t dyd, const void *dy,
                                             cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdFilterAlgo_t algo,
                                             void *ws, size_t wsize, const void *beta, cudnnFilterDescriptor_t dwd,
                                             void *dw) {
    if (!h || algo != 0) return CUDNN_STATUS_BAD_PARAM;
    return convolve_on(h, BWD_FILTER, xd, x, dwd, dw, conv, dyd, dy, alpha, beta, ws, wsize, dwd, dw);
}

/* ---- algorithms: one per direction, asking for WORKSPACE bytes under the descriptor's math mode -- */
template <typename Perf>
static cudnnStatus_t one_algo(cudnnStatus_t shapes, const tcu_emu_cudnn_conv *c, int requested, int *returned,
                              Perf *perf) {
    if (shapes != CUDNN_STATUS_SUCCESS) return shapes;
    if (requested < 1 || !returned || !perf) return CUDNN_STATUS_BAD_PARAM;
    memset(perf, 0, sizeof *perf);
    perf->status = CUDNN_STATUS_SUCCESS;
    perf->memory = WORKSPACE;
    perf->determinism = CUDNN_DETERMINISTIC;
    perf->mathType = c->math;
    *returned = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                                                     cudnnTensorDescriptor_t y, int requested, int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
    return h ? one_algo(check(x, w, conv, y), conv, requested, returned, perf) : CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, cudnnFilterDescriptor_t w,
                                                          cudnnTensorDescriptor_t dy, cudnnConvolutionDescriptor_t conv,
                                                          cudnnTensorDescriptor_t dx, int requested, int *returned,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return h ? one_algo(check(dx, w, conv, dy), conv, requested, returned, perf) : CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                            cudnnTensorDescriptor_t dy,
                                                            cudnnConvolutionDescriptor_t conv,
                                                            cudnnFilterDescriptor_t dw, int requested, int *returned,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return h ? one_algo(check(x, dw, conv, dy), conv, requested, returned, perf) : CUDNN_STATUS_BAD_PARAM;
}

/* timing runs the algorithm, overwriting the direction's output, as cuDNN does */
static const float one_f = 1, zero_f = 0;
static const double one_d = 1, zero_d = 0;
#define SCALARS(t) ((t)->dt == CUDNN_DATA_DOUBLE ? (const void *)&one_d : (const void *)&one_f), \
                   ((t)->dt == CUDNN_DATA_DOUBLE ? (const void *)&zero_d : (const void *)&zero_f)

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void *x,
                                                     cudnnFilterDescriptor_t wd, const void *w,
                                                     cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t yd,
                                                     void *y, int requested, int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf, void *ws, size_t wsize) {
    cudnnStatus_t st = cudnnGetConvolutionForwardAlgorithm_v7(h, xd, wd, conv, yd, requested, returned, perf);
    return st != CUDNN_STATUS_SUCCESS ? st : convolve(FWD, xd, x, wd, w, conv, yd, y, SCALARS(xd), ws, wsize, yd, y);
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t h, cudnnFilterDescriptor_t wd, const void *w,
                                                          cudnnTensorDescriptor_t dyd, const void *dy,
                                                          cudnnConvolutionDescriptor_t conv,
                                                          cudnnTensorDescriptor_t dxd, void *dx, int requested,
                                                          int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf,
                                                          void *ws, size_t wsize) {
    cudnnStatus_t st = cudnnGetConvolutionBackwardDataAlgorithm_v7(h, wd, dyd, conv, dxd, requested, returned, perf);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    return convolve(BWD_DATA, dxd, dx, wd, w, conv, dyd, dy, SCALARS(dxd), ws, wsize, dxd, dx);
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void *x,
                                                            cudnnTensorDescriptor_t dyd, const void *dy,
                                                            cudnnConvolutionDescriptor_t conv,
                                                            cudnnFilterDescriptor_t dwd, void *dw, int requested,
                                                            int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf,
                                                            void *ws, size_t wsize) {
    cudnnStatus_t st = cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, xd, dyd, conv, dwd, requested, returned, perf);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    return convolve(BWD_FILTER, xd, x, dwd, dw, conv, dyd, dy, SCALARS(xd), ws, wsize, dwd, dw);
}

static cudnnStatus_t workspace(cudnnHandle_t h, cudnnStatus_t shapes, int algo, size_t *size) {
    if (!h || !size || algo != 0) return CUDNN_STATUS_BAD_PARAM;
    if (shapes != CUDNN_STATUS_SUCCESS) return shapes;
    *size = WORKSPACE;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *size) {
    return workspace(h, check(x, w, conv, y), algo, size);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, cudnnFilterDescriptor_t w,
                                                           cudnnTensorDescriptor_t dy,
                                                           cudnnConvolutionDescriptor_t conv,
                                                           cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *size) {
    return workspace(h, check(dx, w, conv, dy), algo, size);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                             cudnnTensorDescriptor_t dy,
                                                             cudnnConvolutionDescriptor_t conv,
                                                             cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *size) {
    return workspace(h, check(x, dw, conv, dy), algo, size);
}
