/* softmax.cu: softmax and log_softmax along any dim, and cross entropy, forward and backward,
 * computing what core/cpu/softmax.c does, in float (double for f64). Rows along the last dim
 * take a block each (coalesced, block reductions); rows along another dim a thread each, so
 * that neighbouring threads read neighbouring elements. */
#include "cuda.h"

/* ---- shared pieces ---------------------------------------------------------------------------- */

/* the sum (or max) of v over the block (blockDim.x a multiple of 32), in every thread; red:
 * 32 values of shared memory. A fixed tree, so the result does not depend on timing. */
template <typename A> __device__ static A block_reduce(A v, A *red, bool max) {
    for (int o = 16; o > 0; o >>= 1) {
        A u = __shfl_xor_sync(0xffffffffu, v, o);
        v = max ? tcu_max(v, u) : v + u;
    }
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads(); /* red may still be read from the previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : max ? (A)-INFINITY : (A)0;
    for (int o = 16; o > 0; o >>= 1) {
        A u = __shfl_xor_sync(0xffffffffu, v, o);
        v = max ? tcu_max(v, u) : v + u;
    }
    return v;
}

/* threads for a block that walks a row of n elements: about 4 each, 32 to 256 */
static unsigned row_threads(int64_t n) {
    int64_t t = ((n + 3) / 4 + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : t > 256 ? 256 : t);
}
/* blocks for a loop of one block per item over n items */
static unsigned grid_of(int64_t n) { return (unsigned)(n < 1 ? 1 : n > 65535 * 8 ? 65535 * 8 : n); }

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

/* ---- softmax along dim -------------------------------------------------------------------------
 * Row k = (o, i): o indexes the dims before dim, i those after it (inner of them). Element j
 * of row k is at outer(o) + inner(i) + j stride in a strided input; contiguous outputs hold
 * it at o n inner + i + j inner. */
typedef struct {
    tcu_layout outer, inner; /* the dims before and after dim */
    int64_t stride;          /* along dim */
} row_map;

static tcu_layout dims_layout(const tc_tensor *t, int from, int to) {
    tcu_layout l;
    l.ndim = 0;
    for (int d = from; d < to; d++) {
        l.shape[l.ndim] = t->shape[d];
        l.stride[l.ndim++] = t->stride[d];
    }
    if (l.ndim == 0) { /* no dims: one position at offset 0 */
        l.ndim = 1;
        l.shape[0] = 1;
        l.stride[0] = 0;
    }
    return l;
}

static row_map row_map_of(const tc_tensor *t, int dim) {
    row_map r = {dims_layout(t, 0, dim), dims_layout(t, dim + 1, t->ndim), t->stride[dim]};
    return r;
}
__device__ static inline int64_t row_at(const row_map &r, int64_t o, int64_t i) {
    return tcu_offset(r.outer, o) + tcu_offset(r.inner, i);
}

/* along the last dim (inner == 1): a block per row; max, sum of exp, then the outputs */
template <typename T>
__global__ void softmax_rows(T *y, const T *x, row_map xr, int64_t nrows, int64_t n, bool as_log) {
    typedef typename tcu_acc<T>::type A;
    __shared__ A red[32];
    for (int64_t k = blockIdx.x; k < nrows; k += gridDim.x) {
        const T *r = x + row_at(xr, k, 0);
        A m = -INFINITY, s = 0;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = tcu_max(m, (A)tcu_float(r[j * xr.stride]));
        m = block_reduce(m, red, true);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += tcu_exp((A)tcu_float(r[j * xr.stride]) - m);
        s = block_reduce(s, red, false);
        A lse = m + tcu_log(s), inv = 1 / s;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            A v = tcu_float(r[j * xr.stride]);
            tcu_put(y[k * n + j], as_log ? v - lse : tcu_exp(v - m) * inv);
        }
    }
}

/* along another dim: a thread per row */
template <typename T>
__global__ void softmax_cols(T *y, const T *x, row_map xr, int64_t nrows, int64_t n, int64_t inner, bool as_log) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(k, nrows) {
        int64_t o = k / inner, i = k % inner;
        const T *r = x + row_at(xr, o, i);
        T *yr = y + o * n * inner + i;
        A m = -INFINITY, s = 0;
        for (int64_t j = 0; j < n; j++) m = tcu_max(m, (A)tcu_float(r[j * xr.stride]));
        for (int64_t j = 0; j < n; j++) s += tcu_exp((A)tcu_float(r[j * xr.stride]) - m);
        A lse = m + tcu_log(s), inv = 1 / s;
        for (int64_t j = 0; j < n; j++) {
            A v = tcu_float(r[j * xr.stride]);
            tcu_put(yr[j * inner], as_log ? v - lse : tcu_exp(v - m) * inv);
        }
    }
}

template <typename T> static int softmax_run(tc_tensor *y, const tc_tensor *x, int dim, bool as_log) {
    int64_t n = x->shape[dim], nrows = n ? tc_numel(x) / n : 0, inner = 1;
    for (int d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
    if (nrows == 0 || n == 0) return TC_OK;
    if (inner == 1) TCU_LAUNCH(softmax_rows<T>, grid_of(nrows), row_threads(n), 0, (T *)tcu_ptr(y),
                               (const T *)tcu_ptr(x), row_map_of(x, dim), nrows, n, as_log);
    else TCU_LAUNCH(softmax_cols<T>, tcu_blocks(nrows), TCU_THREADS, 0, (T *)tcu_ptr(y), (const T *)tcu_ptr(x),
                    row_map_of(x, dim), nrows, n, inner, as_log);
    TCU_LAUNCHED("softmax");
    return TC_OK;
}

/* softmax: gx = y (gy - sum(gy y)); log_softmax: gx = gy - exp(y) sum(gy) */
template <typename T>
__global__ void softmax_backward_rows(T *gx, const T *gy, row_map gr, const T *y, row_map yr, int64_t nrows,
                                      int64_t n, bool as_log) {
    typedef typename tcu_acc<T>::type A;
    __shared__ A red[32];
    for (int64_t k = blockIdx.x; k < nrows; k += gridDim.x) {
        const T *g = gy + row_at(gr, k, 0), *yv = y + row_at(yr, k, 0);
        A s = 0;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            A gj = tcu_float(g[j * gr.stride]);
            s += as_log ? gj : gj * (A)tcu_float(yv[j * yr.stride]);
        }
        s = block_reduce(s, red, false);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            A gj = tcu_float(g[j * gr.stride]), yj = tcu_float(yv[j * yr.stride]);
            tcu_put(gx[k * n + j], as_log ? gj - tcu_exp(yj) * s : yj * (gj - s));
        }
    }
}

template <typename T>
__global__ void softmax_backward_cols(T *gx, const T *gy, row_map gr, const T *y, row_map yr, int64_t nrows,
                                      int64_t n, int64_t inner, bool as_log) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(k, nrows) {
        int64_t o = k / inner, i = k % inner;
        const T *g = gy + row_at(gr, o, i), *yv = y + row_at(yr, o, i);
        T *out = gx + o * n * inner + i;
        A s = 0;
        for (int64_t j = 0; j < n; j++) {
            A gj = tcu_float(g[j * gr.stride]);
            s += as_log ? gj : gj * (A)tcu_float(yv[j * yr.stride]);
        }
        for (int64_t j = 0; j < n; j++) {
            A gj = tcu_float(g[j * gr.stride]), yj = tcu_float(yv[j * yr.stride]);
            tcu_put(out[j * inner], as_log ? gj - tcu_exp(yj) * s : yj * (gj - s));
        }
    }
}

template <typename T>
static int softmax_backward_run(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool as_log) {
    int64_t n = y->shape[dim], nrows = n ? tc_numel(y) / n : 0, inner = 1;
    for (int d = dim + 1; d < y->ndim; d++) inner *= y->shape[d];
    if (nrows == 0 || n == 0) return TC_OK;
    if (inner == 1)
        TCU_LAUNCH(softmax_backward_rows<T>, grid_of(nrows), row_threads(n), 0, (T *)tcu_ptr(gx),
                   (const T *)tcu_ptr(gy), row_map_of(gy, dim), (const T *)tcu_ptr(y), row_map_of(y, dim), nrows, n,
                   as_log);
    else
        TCU_LAUNCH(softmax_backward_cols<T>, tcu_blocks(nrows), TCU_THREADS, 0, (T *)tcu_ptr(gx),
                   (const T *)tcu_ptr(gy), row_map_of(gy, dim), (const T *)tcu_ptr(y), row_map_of(y, dim), nrows, n,
                   inner, as_log);
    TCU_LAUNCHED("softmax backward");
    return TC_OK;
}

/* ---- cross entropy ------------------------------------------------------------------------------
 * A sample's loss is -sum_c a_c logp_c, with a_c = (1 - eps) w_t [c = t] + eps / C w_c for a
 * class target t, or a_c = w_c ((1 - eps) p_c + eps / C) for probabilities p; its gradient is
 * (sum_c a_c) softmax - a. A block per sample (n, d); a target out of range is counted in
 * bad[0], and the first one seen is kept in bad[1] for the error message. */
typedef struct {
    const void *logits, *target, *weight; /* weight NULL: all 1 */
    tc_dtype ldt, tdt, wdt;
    int64_t ls[3], ts[3], ws; /* strides: logits [N, C, D], target [N, D] or [N, C, D], weight */
    int64_t N, C, D, ignore_index;
    double eps;
    bool probs;
} ce_args;

static ce_args ce_args_of(const tc_tensor *logits, const tc_tensor *target, const tc_tensor *weight,
                          int64_t ignore_index, double smoothing) {
    ce_args c;
    c.logits = tcu_ptr(logits);
    c.target = tcu_ptr(target);
    c.weight = weight ? tcu_ptr(weight) : NULL;
    c.ldt = logits->dtype;
    c.tdt = target->dtype;
    c.wdt = weight ? weight->dtype : TC_F32;
    c.probs = tc_dtype_is_float(target->dtype);
    for (int i = 0; i < 3; i++) {
        c.ls[i] = logits->stride[i];
        c.ts[i] = i < target->ndim ? target->stride[i] : 0;
    }
    c.ws = weight ? weight->stride[0] : 0;
    c.N = logits->shape[0];
    c.C = logits->shape[1];
    c.D = logits->shape[2];
    c.ignore_index = ignore_index;
    c.eps = smoothing;
    return c;
}

/* one sample as a block sees it: its class (class targets) and status */
typedef struct {
    int64_t t;  /* the 1-based class (class targets) */
    int status; /* 0: counts; 1: ignored; -1: target out of range */
} ce_sample;

__device__ static ce_sample ce_sample_at(const ce_args &c, int64_t n, int64_t d) {
    ce_sample s = {0, 0};
    if (c.probs) return s;
    int64_t off = n * c.ts[0] + d * c.ts[1]; /* i64 or i32, read exactly */
    s.t = c.tdt == TC_I32 ? ((const int32_t *)c.target)[off] : ((const int64_t *)c.target)[off];
    s.status = s.t == c.ignore_index ? 1 : s.t < 1 || s.t > c.C ? -1 : 0;
    return s;
}

__device__ static inline double ce_weight(const ce_args &c, int64_t k) {
    return c.weight ? tcu_load(c.weight, c.wdt, k * c.ws) : 1;
}

/* a_k of sample (n, d), s.status == 0 */
template <typename A>
__device__ static A ce_coef(const ce_args &c, const ce_sample &s, int64_t n, int64_t d, int64_t k) {
    double w = ce_weight(c, k);
    if (c.probs) {
        double p = tcu_load(c.target, c.tdt, n * c.ts[0] + k * c.ts[1] + d * c.ts[2]);
        return (A)(w * ((1 - c.eps) * p + c.eps / (double)c.C));
    }
    A a = (A)(c.eps / (double)c.C * w);
    if (k == s.t - 1) a += (A)((1 - c.eps) * w);
    return a;
}

/* the logsumexp of sample (n, d)'s logits, in every thread of the block */
template <typename T>
__device__ static typename tcu_acc<T>::type ce_lse(const ce_args &c, const T *lg, typename tcu_acc<T>::type *red) {
    typedef typename tcu_acc<T>::type A;
    A m = -INFINITY, s = 0;
    for (int64_t k = threadIdx.x; k < c.C; k += blockDim.x) m = tcu_max(m, (A)tcu_float(lg[k * c.ls[1]]));
    m = block_reduce(m, red, true);
    for (int64_t k = threadIdx.x; k < c.C; k += blockDim.x) s += tcu_exp((A)tcu_float(lg[k * c.ls[1]]) - m);
    return m + tcu_log(block_reduce(s, red, false));
}

/* a bad target: counted, and the first one kept */
__device__ static void ce_bad(unsigned long long *bad, int64_t t) {
    if (atomicAdd(&bad[0], 1ull) == 0) bad[1] = (unsigned long long)t;
}

/* loss [N, D] (logits' dtype), tw [N, D] (f32 or f64): contiguous */
template <typename T>
__global__ void ce_forward(void *loss, tc_dtype lossdt, void *tw, tc_dtype twdt, ce_args c, unsigned long long *bad) {
    typedef typename tcu_acc<T>::type A;
    __shared__ A red[32];
    for (int64_t sd = blockIdx.x; sd < c.N * c.D; sd += gridDim.x) {
        int64_t n = sd / c.D, d = sd % c.D;
        ce_sample s = ce_sample_at(c, n, d);
        if (s.status != 0) { /* the whole block takes this branch */
            if (threadIdx.x == 0) {
                if (s.status < 0) ce_bad(bad, s.t);
                tcu_store(loss, lossdt, sd, 0);
                tcu_store(tw, twdt, sd, 0);
            }
            continue;
        }
        const T *lg = (const T *)c.logits + n * c.ls[0] + d * c.ls[2];
        A lse = ce_lse<T>(c, lg, red), l = 0;
        for (int64_t k = threadIdx.x; k < c.C; k += blockDim.x) {
            A a = ce_coef<A>(c, s, n, d, k);
            if (a != 0) l -= a * ((A)tcu_float(lg[k * c.ls[1]]) - lse); /* 0 * -inf terms do not count */
        }
        l = block_reduce(l, red, false);
        if (threadIdx.x == 0) {
            tcu_store(loss, lossdt, sd, (double)l);
            tcu_store(tw, twdt, sd, c.probs ? 1 : ce_weight(c, s.t - 1));
        }
    }
}

/* glogits [N, C, D] (logits' dtype) and gtarget [N, C, D] (target's), contiguous, either NULL;
 * gloss [N, D] any strides */
template <typename T>
__global__ void ce_backward(T *glogits, void *gtarget, tc_dtype gtdt, const void *gloss, tc_dtype gdt, int64_t gs0,
                            int64_t gs1, double scale, ce_args c, unsigned long long *bad) {
    typedef typename tcu_acc<T>::type A;
    __shared__ A red[32];
    for (int64_t sd = blockIdx.x; sd < c.N * c.D; sd += gridDim.x) {
        int64_t n = sd / c.D, d = sd % c.D, off = n * c.C * c.D + d; /* class stride D in the outputs */
        ce_sample s = ce_sample_at(c, n, d);
        if (s.status < 0) { /* the CPU's leaves the sample's gradients unwritten, and fails */
            if (threadIdx.x == 0) ce_bad(bad, s.t);
            continue;
        }
        if (s.status == 1) {
            for (int64_t k = threadIdx.x; k < c.C; k += blockDim.x) {
                if (glogits) tcu_put(glogits[off + k * c.D], (A)0);
                if (gtarget) tcu_store(gtarget, gtdt, off + k * c.D, 0);
            }
            continue;
        }
        const T *lg = (const T *)c.logits + n * c.ls[0] + d * c.ls[2];
        A lse = ce_lse<T>(c, lg, red), sa = 0;
        A gs = (A)(scale * tcu_load(gloss, gdt, n * gs0 + d * gs1));
        if (glogits) {
            for (int64_t k = threadIdx.x; k < c.C; k += blockDim.x) sa += ce_coef<A>(c, s, n, d, k);
            sa = block_reduce(sa, red, false);
        }
        for (int64_t k = threadIdx.x; k < c.C; k += blockDim.x) {
            A logp = (A)tcu_float(lg[k * c.ls[1]]) - lse;
            if (glogits) tcu_put(glogits[off + k * c.D], gs * (sa * tcu_exp(logp) - ce_coef<A>(c, s, n, d, k)));
            if (gtarget) /* d loss / d p_k = -(1 - eps) w_k logp_k */
                tcu_store(gtarget, gtdt, off + k * c.D, (double)(-gs * (A)(1 - c.eps) * (A)ce_weight(c, k) * logp));
        }
    }
}

/* bad: 2 counters on the device, zeroed here */
template <typename T>
static int ce_run(tc_tensor *loss, tc_tensor *tw, const ce_args &c, unsigned long long *bad) {
    TCU_CHECK(cudaMemsetAsync(bad, 0, 2 * sizeof *bad, tcu_stream()));
    TCU_LAUNCH(ce_forward<T>, grid_of(c.N * c.D), row_threads(c.C), 0, tcu_ptr(loss), loss->dtype, tcu_ptr(tw),
               tw->dtype, c, bad);
    TCU_LAUNCHED("cross_entropy");
    return TC_OK;
}

template <typename T>
static int ce_backward_run(tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, double scale,
                           const ce_args &c, unsigned long long *bad) {
    TCU_CHECK(cudaMemsetAsync(bad, 0, 2 * sizeof *bad, tcu_stream()));
    TCU_LAUNCH(ce_backward<T>, grid_of(c.N * c.D), row_threads(c.C), 0, glogits ? (T *)tcu_ptr(glogits) : NULL,
               gtarget ? tcu_ptr(gtarget) : NULL, gtarget ? gtarget->dtype : TC_F32, tcu_ptr(gloss), gloss->dtype,
               gloss->stride[0], gloss->stride[1], scale, c, bad);
    TCU_LAUNCHED("cross_entropy backward");
    return TC_OK;
}

/* the launches for a dtype */
static int softmax_typed(tc_tensor *y, const tc_tensor *x, int dim, bool as_log) {
    TCU_FLOAT_DISPATCH(x->dtype, T, "softmax", return softmax_run<T>(y, x, dim, as_log));
    return TC_OK;
}

static int softmax_backward_typed(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool as_log) {
    TCU_FLOAT_DISPATCH(y->dtype, T, "softmax backward", return softmax_backward_run<T>(gx, gy, y, dim, as_log));
    return TC_OK;
}

static int ce_typed(tc_tensor *loss, tc_tensor *tw, const tc_tensor *logits, const ce_args &c,
                    unsigned long long *bad) {
    TCU_FLOAT_DISPATCH(logits->dtype, T, "cross_entropy", return ce_run<T>(loss, tw, c, bad));
    return TC_OK;
}

static int ce_backward_typed(tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, double scale,
                             const tc_tensor *logits, const ce_args &c, unsigned long long *bad) {
    TCU_FLOAT_DISPATCH(logits->dtype, T, "cross_entropy backward",
                       return ce_backward_run<T>(glogits, gtarget, gloss, scale, c, bad));
    return TC_OK;
}

/* the bad-target counters of a cross entropy launch: allocated here, read back, checked and
 * freed by ce_finish (which returns rc, or the error for a bad target) */
static unsigned long long *ce_counters(void) {
    if (tc_cuda_is_capturing()) {
        tc_cuda_capture_error("cross_entropy (its targets are checked on the host)");
        return NULL;
    }
    unsigned long long *bad = (unsigned long long *)tc_cuda_alloc(2 * sizeof *bad);
    if (!bad) tc_error("cross_entropy: out of GPU memory");
    return bad;
}

static int ce_finish(unsigned long long *bad, int rc, int64_t C) {
    unsigned long long host[2] = {0, 0};
    if (rc == TC_OK) {
        cudaError_t e = cudaMemcpyAsync(host, bad, sizeof host, cudaMemcpyDeviceToHost, tcu_stream());
        if (e == cudaSuccess) e = cudaStreamSynchronize(tcu_stream());
        if (e != cudaSuccess)
            rc = tcu_fail("reading cross_entropy's bad targets", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    tc_cuda_free(bad);
    if (rc != TC_OK || host[0] == 0) return rc;
    return tc_error("cross_entropy: target %lld is out of range for %lld classes (targets are 1-based)",
                    (long long)host[1], (long long)C);
}

/* ---- exported entries --------------------------------------------------------------------------- */
extern "C" {
int tc_cuda_softmax(tc_tensor *y, const tc_tensor *x, int dim, bool log) { return softmax_typed(y, x, dim, log); }

int tc_cuda_softmax_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool log) {
    tc_tensor *t1, *t2;
    const tc_tensor *g = in_dtype(gy, gx->dtype, &t1), *yy = in_dtype(y, gx->dtype, &t2);
    int rc = g && yy ? softmax_backward_typed(gx, g, yy, dim, log) : TC_ERR;
    tc_tensor_release(t1);
    tc_tensor_release(t2);
    return rc;
}

int tc_cuda_cross_entropy(tc_tensor *loss, tc_tensor *tw, const tc_tensor *logits, const tc_tensor *target,
                          const tc_tensor *weight, int64_t ignore_index, double smoothing) {
    ce_args c = ce_args_of(logits, target, weight, ignore_index, smoothing);
    if (c.N * c.D == 0) return TC_OK;
    unsigned long long *bad = ce_counters();
    return bad ? ce_finish(bad, ce_typed(loss, tw, logits, c, bad), c.C) : TC_ERR;
}

int tc_cuda_cross_entropy_backward(tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, double scale,
                                   const tc_tensor *logits, const tc_tensor *target, const tc_tensor *weight,
                                   int64_t ignore_index, double smoothing) {
    ce_args c = ce_args_of(logits, target, weight, ignore_index, smoothing);
    if (c.N * c.D == 0 || (!glogits && !gtarget)) return TC_OK;
    unsigned long long *bad = ce_counters();
    return bad ? ce_finish(bad, ce_backward_typed(glogits, gtarget, gloss, scale, logits, c, bad), c.C) : TC_ERR;
}
}
