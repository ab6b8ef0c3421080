/* reduce.cu (cuda): reductions over the trailing dims of a strided view (sum, mean, prod, max,
 * min, logsumexp), max/min with 1-based indices along the last dim, and the sum of |x|^p under
 * total_norm: the twins of core/cpu/reduce.c and tc_cpu_pow_sum. Everything accumulates in
 * double, as the CPU does; a fixed plan per shape makes every result the same run to run. */
#include "cuda.h"

#include <math.h>
#include <string.h>

/* ---- the plan ------------------------------------------------------------------------------
 * Each output row (x's leading dims) is cut into `splits` segments of `chunk` reduced elements;
 * a group of `width` threads (a power of two <= TCU_THREADS) reduces a segment, each thread
 * taking every width-th element, then a tree in shared memory. With one segment per row the
 * group writes the result; with more, each writes a partial accumulator and a second pass
 * reduces the partials of each row in order. Groups map to rows fastest, so where the rows'
 * elements are adjacent (a column sum) neighbouring threads read neighbouring addresses. */
typedef struct {
    double v;  /* sum, product, max/min, value at the index; logsumexp: the running max */
    double s;  /* logsumexp: sum of exp(x - v) */
    int64_t i; /* arg ops: 0-based index of v in the row, -1 before any element */
} red_acc;

typedef struct {
    tcu_layout outer, inner; /* the rows of x; the reduced elements of one row */
    int64_t nout, rcount, chunk; /* rcount: elements a row of this pass reduces */
    int64_t splits;
    int64_t count; /* elements each result stands for (mean's divisor) */
    int width;
    tc_op op; /* SUM MEAN PROD MAX MIN LOGSUMEXP; ARGMAX ARGMIN; NORM: pow_sum's sum of |x|^p */
    double p; /* NORM's p (INFINITY: the max of |x|) */
} red_plan;

/* x's dims [from, to), size-1 dims dropped and dims that step as one merged (as the CPU);
 * sorted: in order of decreasing stride first, for reduced dims whose order does not matter
 * (a sum over a transposed view then reads memory in order) */
static tcu_layout red_dims(const tc_tensor *x, int from, int to, bool sorted) {
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    int m = 0;
    for (int d = from; d < to; d++) {
        if (x->shape[d] == 1) continue;
        int j = m++;
        for (; sorted && j > 0 && st[j - 1] < x->stride[d]; j--) { sh[j] = sh[j - 1]; st[j] = st[j - 1]; }
        sh[j] = x->shape[d];
        st[j] = x->stride[d];
    }
    tcu_layout l;
    int n = 0;
    for (int k = 0; k < m; k++) {
        if (n > 0 && l.stride[n - 1] == st[k] * sh[k]) {
            l.shape[n - 1] *= sh[k];
            l.stride[n - 1] = st[k];
        } else {
            l.shape[n] = sh[k];
            l.stride[n++] = st[k];
        }
    }
    if (n == 0) { l.shape[0] = 1; l.stride[0] = 1; n = 1; }
    l.ndim = n;
    return l;
}

static tcu_layout red_row(int64_t n, int64_t stride) {
    tcu_layout l;
    l.ndim = 1;
    l.shape[0] = n;
    l.stride[0] = stride;
    return l;
}

static int red_pow2_at_least(int64_t n, int cap) {
    int w = 1;
    while (w < n && w < cap) w *= 2;
    return w;
}

/* width and splits for nout rows of rcount elements: about 8 elements a thread per group, and
 * rows split until some 2^17 threads are busy, keeping at least 16 elements a thread */
static void red_plan_shape(red_plan *pl) {
    bool unit_rows = pl->inner.stride[pl->inner.ndim - 1] == 1 || pl->rcount == 1;
    bool columns = !unit_rows && pl->nout > 1 && pl->outer.stride[pl->outer.ndim - 1] == 1;
    pl->width = columns ? 1 : red_pow2_at_least((pl->rcount + 7) / 8, TCU_THREADS);
    const int64_t want = 1 << 17;
    int64_t busy = pl->nout * pl->width, splits = 1;
    if (busy < want / 2 && pl->rcount > 0) {
        splits = (want + busy - 1) / busy;
        int64_t most = (pl->rcount + 16 * pl->width - 1) / (16 * pl->width);
        if (splits > most) splits = most;
        if (splits < 1) splits = 1;
    }
    pl->chunk = pl->rcount > 0 ? (pl->rcount + splits - 1) / splits : 1;
    pl->splits = pl->rcount > 0 ? (pl->rcount + pl->chunk - 1) / pl->chunk : 1;
}

/* ---- accumulating --------------------------------------------------------------------------- */
__device__ static inline red_acc red_init(tc_op op) {
    red_acc a;
    a.s = 0;
    a.i = -1;
    switch (op) {
    case TC_OP_PROD: a.v = 1; break;
    case TC_OP_MAX: case TC_OP_LOGSUMEXP: a.v = -INFINITY; break;
    case TC_OP_MIN: a.v = INFINITY; break;
    default: a.v = 0; break; /* SUM MEAN NORM (|x| >= 0 also for p = inf), arg ops (i = -1) */
    }
    return a;
}

/* a NaN in either wins; else the larger (smaller) */
__device__ static inline double red_max(double a, double b) { return a != a ? a : b != b ? b : b > a ? b : a; }
__device__ static inline double red_min(double a, double b) { return a != a ? a : b != b ? b : b < a ? b : a; }

/* p then q, as one accumulator; for arg ops the first NaN, else the first best value */
__device__ static inline red_acc red_combine(tc_op op, double pw, red_acc p, red_acc q) {
    switch (op) {
    case TC_OP_SUM: case TC_OP_MEAN: p.v += q.v; return p;
    case TC_OP_PROD: p.v *= q.v; return p;
    case TC_OP_MAX: p.v = red_max(p.v, q.v); return p;
    case TC_OP_MIN: p.v = red_min(p.v, q.v); return p;
    case TC_OP_NORM: p.v = isinf(pw) ? red_max(p.v, q.v) : p.v + q.v; return p;
    case TC_OP_LOGSUMEXP: { /* maxima never NaN: a NaN element makes s NaN */
        double m = p.v > q.v ? p.v : q.v;
        if (m == -INFINITY) { p.s += q.s; return p; }
        p.s = p.s * exp(p.v - m) + q.s * exp(q.v - m);
        p.v = m;
        return p;
    }
    case TC_OP_ARGMAX: case TC_OP_ARGMIN: {
        bool take;
        if (q.i < 0) take = false;
        else if (p.i < 0) take = true;
        else if (p.v != p.v || q.v != q.v) take = q.v != q.v && (p.v == p.v || q.i < p.i);
        else if (q.v != p.v) take = op == TC_OP_ARGMAX ? q.v > p.v : q.v < p.v;
        else take = q.i < p.i;
        return take ? q : p;
    }
    default: return p;
    }
}

/* one element x at index i of the row */
__device__ static inline void red_add(tc_op op, double pw, red_acc &a, double x, int64_t i) {
    switch (op) {
    case TC_OP_SUM: case TC_OP_MEAN: a.v += x; break;
    case TC_OP_PROD: a.v *= x; break;
    case TC_OP_MAX: if (x > a.v || x != x) a.v = x; break; /* once NaN, nothing is > a.v */
    case TC_OP_MIN: if (x < a.v || x != x) a.v = x; break;
    case TC_OP_NORM: {
        double ax = fabs(x);
        if (isinf(pw)) { if (ax > a.v || ax != ax) a.v = ax; }
        else a.v += pw == 2 ? ax * ax : pw == 1 ? ax : pow(ax, pw);
        break;
    }
    case TC_OP_LOGSUMEXP:
        if (x != x) a.s = x;
        else if (x > a.v) { a.s = a.s * exp(a.v - x) + 1; a.v = x; }
        else if (x != -INFINITY) a.s += exp(x - a.v);
        break;
    default: { /* arg ops */
        red_acc e;
        e.v = x;
        e.s = 0;
        e.i = i;
        a = red_combine(op, pw, a, e);
        break;
    }
    }
}

/* a segment [lo, hi) of a row at base, every w-th element from lo, of a source: a float dtype,
 * any other dtype (red_any, through tcu_load), or the partial accumulators of a first pass
 * (red_acc). Four loads go out before they are added, to keep enough memory traffic in flight. */
struct red_any {};
template <typename S>
__device__ static inline double red_get(const void *x, tc_dtype, int64_t off) {
    return (double)tcu_float(((const S *)x)[off]);
}
template <>
__device__ inline double red_get<red_any>(const void *x, tc_dtype dt, int64_t off) { return tcu_load(x, dt, off); }

template <typename S>
__device__ static inline void red_segment(const red_plan &pl, red_acc &a, const void *x, tc_dtype dt, int64_t base,
                                          int64_t lo, int64_t hi, int w) {
    int64_t i = lo;
    for (; i + 3 * w < hi; i += 4 * w) {
        double v0 = red_get<S>(x, dt, base + tcu_offset(pl.inner, i));
        double v1 = red_get<S>(x, dt, base + tcu_offset(pl.inner, i + w));
        double v2 = red_get<S>(x, dt, base + tcu_offset(pl.inner, i + 2 * w));
        double v3 = red_get<S>(x, dt, base + tcu_offset(pl.inner, i + 3 * w));
        red_add(pl.op, pl.p, a, v0, i);
        red_add(pl.op, pl.p, a, v1, i + w);
        red_add(pl.op, pl.p, a, v2, i + 2 * w);
        red_add(pl.op, pl.p, a, v3, i + 3 * w);
    }
    for (; i < hi; i += w) red_add(pl.op, pl.p, a, red_get<S>(x, dt, base + tcu_offset(pl.inner, i)), i);
}
template <>
__device__ inline void red_segment<red_acc>(const red_plan &pl, red_acc &a, const void *x, tc_dtype, int64_t base,
                                            int64_t lo, int64_t hi, int w) {
    for (int64_t i = lo; i < hi; i += w) a = red_combine(pl.op, pl.p, a, ((const red_acc *)x)[base + tcu_offset(pl.inner, i)]);
}

/* the row's result: into out (odt, may be NULL for arg ops) and, for arg ops, idx (1-based) */
__device__ static inline void red_finish(const red_plan &pl, red_acc a, void *out, tc_dtype odt, int64_t *idx,
                                         int64_t row) {
    double r = a.v;
    if (pl.op == TC_OP_MEAN) r = pl.count ? a.v / (double)pl.count : NAN;
    else if (pl.op == TC_OP_LOGSUMEXP) r = isinf(a.v) ? a.v : a.v + log(a.s);
    if (out) tcu_store(out, odt, row, r);
    if (idx) idx[row] = a.i + 1;
}

/* ---- the kernel: one group of pl.width threads per (row, segment) ---------------------------- */
template <typename S>
__global__ void reduce_kernel(const void *x, tc_dtype xdt, red_plan pl, red_acc *part, void *out, tc_dtype odt,
                              int64_t *idx) {
    __shared__ red_acc sm[TCU_THREADS];
    int w = pl.width, lane = (int)threadIdx.x % w, groups = (int)blockDim.x / w;
    int64_t total = pl.nout * pl.splits;
    for (int64_t first = (int64_t)blockIdx.x * groups; first < total; first += (int64_t)gridDim.x * groups) {
        int64_t g = first + (int64_t)threadIdx.x / w, row = g % pl.nout, seg = g / pl.nout;
        red_acc a = red_init(pl.op);
        if (g < total) {
            int64_t base = tcu_offset(pl.outer, row), hi = (seg + 1) * pl.chunk;
            if (hi > pl.rcount) hi = pl.rcount;
            red_segment<S>(pl, a, x, xdt, base, seg * pl.chunk + lane, hi, w);
        }
        sm[threadIdx.x] = a;
        __syncthreads();
        for (int s = w / 2; s > 0; s /= 2) {
            if (lane < s) sm[threadIdx.x] = red_combine(pl.op, pl.p, sm[threadIdx.x], sm[threadIdx.x + s]);
            __syncthreads();
        }
        if (lane == 0 && g < total) {
            if (pl.splits > 1) part[row * pl.splits + seg] = sm[threadIdx.x];
            else red_finish(pl, sm[threadIdx.x], out, odt, idx, row);
        }
        __syncthreads(); /* sm is reused by the next round */
    }
}

template <typename S>
static int red_launch(const void *x, tc_dtype xdt, const red_plan &pl, red_acc *part, void *out, tc_dtype odt,
                      int64_t *idx, const char *name) {
    TCU_LAUNCH(reduce_kernel<S>, tcu_blocks(pl.nout * pl.splits * pl.width), TCU_THREADS, 0, x, xdt, pl, part, out,
               odt, idx);
    TCU_LAUNCHED(name);
    return TC_OK;
}

/* reduces x's rows (pl->outer) over their elements (pl->inner) into out and/or idx: one pass,
 * or two through a scratch buffer of partials */
static int red_run(const void *x, tc_dtype xdt, red_plan *pl, void *out, tc_dtype odt, int64_t *idx, const char *name) {
    red_plan_shape(pl);
    pl->count = pl->rcount;
    red_acc *part = NULL;
    if (pl->splits > 1) {
        part = (red_acc *)tc_cuda_alloc((size_t)(pl->nout * pl->splits) * sizeof(red_acc));
        if (!part) return TC_ERR;
    }
    int rc;
    switch (xdt) {
    case TC_F32: rc = red_launch<float>(x, xdt, *pl, part, out, odt, idx, name); break;
    case TC_F64: rc = red_launch<double>(x, xdt, *pl, part, out, odt, idx, name); break;
    case TC_F16: rc = red_launch<__half>(x, xdt, *pl, part, out, odt, idx, name); break;
    case TC_BF16: rc = red_launch<__nv_bfloat16>(x, xdt, *pl, part, out, odt, idx, name); break;
    default: rc = red_launch<red_any>(x, xdt, *pl, part, out, odt, idx, name); break;
    }
    if (rc == TC_OK && part) { /* second pass: each row's partials, in order */
        red_plan p2 = *pl;
        p2.outer = red_row(pl->nout, pl->splits);
        p2.inner = red_row(pl->splits, 1);
        p2.rcount = pl->splits;
        p2.width = red_pow2_at_least((p2.rcount + 7) / 8, TCU_THREADS);
        p2.splits = 1;
        p2.chunk = p2.rcount;
        rc = red_launch<red_acc>(part, TC_F64, p2, NULL, out, odt, idx, name);
    }
    tc_cuda_free(part); /* stream-ordered: later work on the stream may reuse it */
    return rc;
}

/* ---- entries ------------------------------------------------------------------------------------ */
extern "C" int tc_cuda_reduce(tc_tensor *out, const tc_tensor *x, tc_op op, int nred) {
    switch (op) {
    case TC_OP_SUM: case TC_OP_MEAN: case TC_OP_PROD: case TC_OP_MAX: case TC_OP_MIN: case TC_OP_LOGSUMEXP: break;
    default: return tc_error("reduce: %s is not a reduction", tc_op_name(op));
    }
    red_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.nout = tc_numel(out);
    if (pl.nout == 0) return TC_OK; /* however many (empty) rows there are */
    pl.outer = red_dims(x, 0, x->ndim - nred, false);
    pl.inner = red_dims(x, x->ndim - nred, x->ndim, true);
    pl.rcount = 1;
    for (int d = x->ndim - nred; d < x->ndim; d++) pl.rcount *= x->shape[d];
    pl.op = op;
    return red_run(tcu_ptr(x), x->dtype, &pl, tcu_ptr(out), out->dtype, NULL, tc_op_name(op));
}

extern "C" int tc_cuda_arg_reduce(tc_tensor *values, tc_tensor *indices, const tc_tensor *x, tc_op op) {
    red_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.op = op == TC_OP_MAX || op == TC_OP_ARGMAX ? TC_OP_ARGMAX : TC_OP_ARGMIN;
    int last = x->ndim - 1;
    pl.outer = red_dims(x, 0, last > 0 ? last : 0, false); /* a 0-d x: one row of one */
    pl.nout = 1;
    for (int d = 0; d < last; d++) pl.nout *= x->shape[d];
    pl.rcount = last >= 0 ? x->shape[last] : 1;
    pl.inner = red_row(pl.rcount, last >= 0 ? x->stride[last] : 1);
    if (pl.nout == 0) return TC_OK;
    if (pl.rcount == 0) return tc_error("%s: cannot reduce over an empty dimension", tc_op_name(op));
    return red_run(tcu_ptr(x), x->dtype, &pl, values ? tcu_ptr(values) : NULL, values ? values->dtype : x->dtype,
                   indices ? (int64_t *)tcu_ptr(indices) : NULL, tc_op_name(op));
}

/* the sum lands in a device double, then on the host: this one synchronizes */
extern "C" int tc_cuda_pow_sum(const tc_tensor *x, double p, double *out) {
    if (!tc_dtype_is_float(x->dtype))
        return tc_error("total_norm: dtype %s is not supported", tc_dtype_name(x->dtype));
    *out = 0;
    if (tc_cuda_is_capturing()) return tc_cuda_capture_error("total_norm (a norm returned to the host)");
    if (tc_numel(x) == 0) return TC_OK;
    red_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.op = TC_OP_NORM;
    pl.p = p;
    pl.nout = 1;
    pl.outer = red_row(1, 0);
    pl.inner = red_dims(x, 0, x->ndim, true);
    pl.rcount = tc_numel(x);
    double *d = (double *)tc_cuda_alloc(sizeof(double));
    if (!d) return TC_ERR;
    int rc = red_run(tcu_ptr(x), x->dtype, &pl, d, TC_F64, NULL, "total_norm");
    if (rc == TC_OK) {
        cudaError_t e = cudaMemcpyAsync(out, d, sizeof(double), cudaMemcpyDeviceToHost, tcu_stream());
        if (e == cudaSuccess) e = cudaStreamSynchronize(tcu_stream());
        if (e != cudaSuccess) rc = tcu_fail("cudaMemcpyAsync", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    tc_cuda_free(d);
    return rc;
}
