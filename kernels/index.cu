/* index.cu: the indexing kernels, as core/cpu/index.c: index_select and gather read through
 * an index ("take"), index_add and scatter_add accumulate through one ("put"). Index values
 * are 1-based, i64 or i32, and all checked on the GPU before anything is written. */
#include "cuda.h"

/* Operands of a walk, all of the iteration shape: 0 the destination, 1 the index, 2 the
 * source, each with its own strides (in elements). The indexed operand (the source for take,
 * the destination for put) moves by (index - 1) * jump along the indexed dim. */
typedef struct {
    int ndim;
    int64_t shape[TC_MAX_DIMS];
    int64_t stride[3][TC_MAX_DIMS];
} walk;

/* the offsets of row-major position i in each operand */
__device__ static inline void walk_offsets(const walk &w, int64_t i, int64_t off[3]) {
    off[0] = off[1] = off[2] = 0;
    for (int d = w.ndim - 1; d >= 0; d--) {
        int64_t s = w.shape[d], k = i % s;
        i /= s;
        for (int o = 0; o < 3; o++) off[o] += k * w.stride[o][d];
    }
}

__device__ static inline int64_t load_index(const void *idx, bool idx32, int64_t off) {
    return idx32 ? (int64_t)((const int32_t *)idx)[off] : ((const int64_t *)idx)[off];
}

/* ---- index check --------------------------------------------------------------------------
 * One pass over the index records the first position (row-major) holding a value outside
 * [1, limit]: atomicMin on an int, so positions past FIRST_MAX are clamped to it and that
 * case reports whichever bad value was stored last. The host reads the record back (this
 * synchronizes) and raises the CPU's error before any kernel writes. */
#define FIRST_NONE 0x7f7f7f7f /* what cudaMemsetAsync(0x7f) leaves: no bad index */
#define FIRST_MAX (FIRST_NONE - 1)
typedef struct {
    int first;
    int pad_;
    int64_t value; /* a bad value (the one at first when first < FIRST_MAX) */
} bad_index;

__global__ void check_kernel(bad_index *bad, const void *idx, tcu_layout l, bool idx32, int64_t n, int64_t limit) {
    TCU_GRID_STRIDE(i, n) {
        int64_t ix = load_index(idx, idx32, tcu_offset(l, i));
        if (ix < 1 || ix > limit) {
            bad->value = ix;
            atomicMin(&bad->first, (int)(i < FIRST_MAX ? i : FIRST_MAX));
        }
    }
}

static int find_bad(bad_index *dev, bad_index *host, const tc_tensor *idx, int64_t limit) {
    int64_t n = tc_numel(idx);
    tcu_layout l = tcu_layout_of(idx);
    bool idx32 = idx->dtype == TC_I32;
    TCU_CHECK(cudaMemsetAsync(dev, 0x7f, sizeof *dev, tcu_stream()));
    TCU_LAUNCH(check_kernel, tcu_blocks(n), TCU_THREADS, 0, dev, (const void *)tcu_ptr(idx), l, idx32, n, limit);
    TCU_LAUNCHED("index check");
    TCU_CHECK(cudaMemcpyAsync(host, dev, sizeof *host, cudaMemcpyDeviceToHost, tcu_stream()));
    TCU_CHECK(cudaStreamSynchronize(tcu_stream()));
    if (host->first == FIRST_NONE || host->first == FIRST_MAX) return TC_OK;
    /* the value at the first bad position, rather than the last one stored */
    int64_t off = 0, i = host->first;
    for (int d = l.ndim - 1; d >= 0; d--) {
        off += (i % l.shape[d]) * l.stride[d];
        i /= l.shape[d];
    }
    size_t es = idx32 ? 4 : 8;
    int32_t v32 = 0;
    void *dst = idx32 ? (void *)&v32 : (void *)&host->value;
    TCU_CHECK(cudaMemcpyAsync(dst, tcu_ptr(idx) + off * (int64_t)es, es, cudaMemcpyDeviceToHost, tcu_stream()));
    TCU_CHECK(cudaStreamSynchronize(tcu_stream()));
    if (idx32) host->value = v32;
    return TC_OK;
}

/* every value of idx in [1, limit], or the CPU's error naming one that is not */
static int check_index(const tc_tensor *idx, int dim, int64_t limit) {
    if (idx->dtype != TC_I64 && idx->dtype != TC_I32)
        return tc_error("index must be an i64 or i32 tensor (got %s)", tc_dtype_name(idx->dtype));
    if (tc_numel(idx) == 0) return TC_OK;
    if (tc_cuda_is_capturing()) return tc_cuda_capture_error("checking an index tensor's values on the host");
    bad_index *dev = (bad_index *)tc_cuda_alloc(sizeof(bad_index)), host;
    if (!dev) return TC_ERR;
    int rc = find_bad(dev, &host, idx, limit);
    tc_cuda_free(dev);
    if (rc != TC_OK || host.first == FIRST_NONE) return rc;
    return tc_error("index %lld is out of range for dimension %d of size %lld%s", (long long)host.value, dim + 1,
                    (long long)limit, host.value == 0 ? " (indices are 1-based)" : "");
}

/* ---- take: dst[p] = src[p + (idx[p] - 1) * jump] -------------------------------------------
 * One thread per destination element; a move of bytes, so the element size is the type. */
template <typename E>
__global__ void take_kernel(char *dst, const char *idx, const char *src, walk w, bool idx32, int64_t jump, int64_t n) {
    TCU_GRID_STRIDE(i, n) {
        int64_t off[3];
        walk_offsets(w, i, off);
        int64_t ix = load_index(idx, idx32, off[1]) - 1;
        ((E *)dst)[off[0]] = ((const E *)src)[off[2] + ix * jump];
    }
}

/* the walk has dst's shape; dst and idx go by their own strides (idx_st), src by its
 * strides but 0 along dim */
static int take(tc_tensor *dst, const tc_tensor *src, int dim, const tc_tensor *idx, const int64_t *idx_st,
                const char *op) {
    int64_t n = tc_numel(dst);
    if (n == 0) return TC_OK;
    walk w;
    w.ndim = dst->ndim;
    for (int d = 0; d < dst->ndim; d++) {
        w.shape[d] = dst->shape[d];
        w.stride[0][d] = dst->stride[d];
        w.stride[1][d] = idx_st[d];
        w.stride[2][d] = d == dim ? 0 : src->stride[d];
    }
    bool idx32 = idx->dtype == TC_I32;
    int64_t jump = src->stride[dim];
    char *dp = tcu_ptr(dst);
    const char *ip = tcu_ptr(idx), *sp = tcu_ptr(src);
    unsigned blocks = tcu_blocks(n);
    switch (tc_dtype_size(dst->dtype)) {
    case 1: TCU_LAUNCH(take_kernel<uint8_t>, blocks, TCU_THREADS, 0, dp, ip, sp, w, idx32, jump, n); break;
    case 2: TCU_LAUNCH(take_kernel<uint16_t>, blocks, TCU_THREADS, 0, dp, ip, sp, w, idx32, jump, n); break;
    case 4: TCU_LAUNCH(take_kernel<uint32_t>, blocks, TCU_THREADS, 0, dp, ip, sp, w, idx32, jump, n); break;
    default: TCU_LAUNCH(take_kernel<uint64_t>, blocks, TCU_THREADS, 0, dp, ip, sp, w, idx32, jump, n); break;
    }
    TCU_LAUNCHED(op);
    return TC_OK;
}

/* ---- put: dst[p + (idx[p] - 1) * jump] += src[p] ----------------------------------------------
 * Positions that differ only along the indexed dim may hit one element. Two kernels:
 * - in order: a thread per position of the other dims loops over the indexed dim, as the
 *   CPU's walk does, so the sums are the CPU's bit for bit and the same on every run. Used
 *   for every dtype when those positions alone fill the GPU, and always for f16, bf16, u8
 *   and bool (no atomics for them).
 * - atomic: a thread per element, atomicAdd into dst (f32, f64, i32, i64). Integer sums are
 *   exact in any order; float sums may differ from the CPU's in the last bits and from run
 *   to run (the order of the adds is not fixed), as PyTorch's index_add_ on CUDA. */
#define IN_ORDER_MIN 65536 /* positions of the other dims from which the in-order kernel is used */

/* the walk is over the other dims; along the indexed dim (n steps) idx and src move by
 * step_idx and step_src, and dst by (index - 1) * jump */
typedef struct {
    walk w;
    int64_t n, step_idx, step_src, jump;
    bool idx32;
} put_args;

/* dst += v: the CPU's rounding per dtype (f16 and bf16 round every partial sum to the
 * dtype, through float as the CPU's tc_store does; integers wrap) */
__device__ static inline void add_to(float *q, float v) { *q += v; }
__device__ static inline void add_to(double *q, double v) { *q += v; }
__device__ static inline void add_to(__half *q, __half v) { *q = __float2half_rn(__half2float(*q) + __half2float(v)); }
__device__ static inline void add_to(__nv_bfloat16 *q, __nv_bfloat16 v) {
    *q = __float2bfloat16_rn(__bfloat162float(*q) + __bfloat162float(v));
}
__device__ static inline void add_to(int32_t *q, int32_t v) { *q = (int32_t)((uint32_t)*q + (uint32_t)v); }
__device__ static inline void add_to(int64_t *q, int64_t v) { *q = (int64_t)((uint64_t)*q + (uint64_t)v); }
__device__ static inline void add_to(uint8_t *q, uint8_t v) { *q = (uint8_t)(*q + v); }
/* bool's "sum" is or; a distinct type so that it does not take u8's add */
typedef struct { uint8_t b; } bool8;
__device__ static inline void add_to(bool8 *q, bool8 v) { q->b = (uint8_t)(q->b || v.b); }

__device__ static inline void atomic_add_to(float *q, float v) { atomicAdd(q, v); }
__device__ static inline void atomic_add_to(double *q, double v) { atomicAdd(q, v); }
__device__ static inline void atomic_add_to(int32_t *q, int32_t v) { atomicAdd((int *)q, (int)v); }
__device__ static inline void atomic_add_to(int64_t *q, int64_t v) {
    atomicAdd((unsigned long long *)q, (unsigned long long)v); /* two's complement: the same bits */
}

template <typename E>
__global__ void put_in_order_kernel(char *dst, const char *idx, const char *src, put_args a, int64_t positions) {
    TCU_GRID_STRIDE(p, positions) {
        int64_t off[3];
        walk_offsets(a.w, p, off);
        for (int64_t j = 0; j < a.n; j++) {
            int64_t ix = load_index(idx, a.idx32, off[1] + j * a.step_idx) - 1;
            add_to((E *)dst + off[0] + ix * a.jump, ((const E *)src)[off[2] + j * a.step_src]);
        }
    }
}

/* thread t: step j = t / positions at position t % positions (neighbouring threads take
 * neighbouring positions, which are usually adjacent in memory) */
template <typename E>
__global__ void put_atomic_kernel(char *dst, const char *idx, const char *src, put_args a, int64_t positions) {
    TCU_GRID_STRIDE(t, positions * a.n) {
        int64_t j = t / positions, off[3];
        walk_offsets(a.w, t % positions, off);
        int64_t ix = load_index(idx, a.idx32, off[1] + j * a.step_idx) - 1;
        atomic_add_to((E *)dst + off[0] + ix * a.jump, ((const E *)src)[off[2] + j * a.step_src]);
    }
}

#define PUT_IN_ORDER(E) \
    TCU_LAUNCH(put_in_order_kernel<E>, tcu_blocks(positions), TCU_THREADS, 0, dp, ip, sp, a, positions)
#define PUT_ATOMIC(E) \
    TCU_LAUNCH(put_atomic_kernel<E>, tcu_blocks(positions * a.n), TCU_THREADS, 0, dp, ip, sp, a, positions)

/* shape[] (nd dims) is the iteration shape (src's, or idx's for scatter); dst is walked with
 * its strides except along dim; idx with idx_st; src with its own strides */
static int put(tc_tensor *dst, int dim, const tc_tensor *idx, const int64_t *idx_st, const tc_tensor *src,
               const int64_t *shape, int nd, const char *op) {
    if (src->dtype != dst->dtype)
        return tc_error("%s: src of dtype %s does not match %s", op, tc_dtype_name(src->dtype),
                        tc_dtype_name(dst->dtype));
    put_args a;
    int r = 0;
    int64_t positions = 1;
    for (int d = 0; d < nd; d++) {
        if (d == dim) continue;
        a.w.shape[r] = shape[d];
        a.w.stride[0][r] = dst->stride[d];
        a.w.stride[1][r] = idx_st[d];
        a.w.stride[2][r] = src->stride[d];
        positions *= shape[d];
        r++;
    }
    a.w.ndim = r;
    a.n = shape[dim];
    a.step_idx = idx_st[dim];
    a.step_src = src->stride[dim];
    a.jump = dst->stride[dim];
    a.idx32 = idx->dtype == TC_I32;
    if (positions == 0 || a.n == 0) return TC_OK;
    char *dp = tcu_ptr(dst);
    const char *ip = tcu_ptr(idx), *sp = tcu_ptr(src);
    bool in_order = positions >= IN_ORDER_MIN;
    switch (dst->dtype) {
    case TC_F32: if (in_order) PUT_IN_ORDER(float); else PUT_ATOMIC(float); break;
    case TC_F64: if (in_order) PUT_IN_ORDER(double); else PUT_ATOMIC(double); break;
    case TC_I32: if (in_order) PUT_IN_ORDER(int32_t); else PUT_ATOMIC(int32_t); break;
    case TC_I64: if (in_order) PUT_IN_ORDER(int64_t); else PUT_ATOMIC(int64_t); break;
    case TC_F16: PUT_IN_ORDER(__half); break;
    case TC_BF16: PUT_IN_ORDER(__nv_bfloat16); break;
    case TC_U8: PUT_IN_ORDER(uint8_t); break;
    case TC_BOOL: PUT_IN_ORDER(bool8); break;
    default: return tc_error("%s: dtype %s is not supported on cuda", op, tc_dtype_name(dst->dtype));
    }
    TCU_LAUNCHED(op);
    return TC_OK;
}

/* ---- the four kernels ------------------------------------------------------------------------ */
/* strides that walk a 1-d index along dim of an nd-dim iteration, and stand still elsewhere */
static void index_strides(const tc_tensor *idx, int dim, int nd, int64_t *st) {
    for (int d = 0; d < nd; d++) st[d] = 0;
    st[dim] = idx->ndim ? idx->stride[0] : 0;
}

/* out = x with dim narrowed to idx's entries; idx 1-d */
extern "C" int tc_cuda_index_select(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx) {
    if (check_index(idx, dim, x->shape[dim]) != TC_OK) return TC_ERR;
    int64_t ist[TC_MAX_DIMS];
    index_strides(idx, dim, out->ndim, ist);
    return take(out, x, dim, idx, ist, "index_select");
}

/* out[j at dim] += src[i at dim] for i, with j = idx[i]; idx 1-d, src shaped like out but
 * idx's length along dim */
extern "C" int tc_cuda_index_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src) {
    if (check_index(idx, dim, out->shape[dim]) != TC_OK) return TC_ERR;
    if (tc_numel(src) == 0) return TC_OK;
    int64_t ist[TC_MAX_DIMS];
    index_strides(idx, dim, src->ndim, ist);
    return put(out, dim, idx, ist, src, src->shape, src->ndim, "index_add");
}

/* out has idx's shape; x is at least as large as idx in every dim but dim */
extern "C" int tc_cuda_gather(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx) {
    if (check_index(idx, dim, x->shape[dim]) != TC_OK) return TC_ERR;
    return take(out, x, dim, idx, idx->stride, "gather");
}

/* out[.. idx[p] at dim ..] += src[p] for every position p of idx; src and out are at least
 * as large as idx (out: in every dim but dim) */
extern "C" int tc_cuda_scatter_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src) {
    if (check_index(idx, dim, out->shape[dim]) != TC_OK) return TC_ERR;
    if (tc_numel(idx) == 0) return TC_OK;
    return put(out, dim, idx, idx->stride, src, idx->shape, idx->ndim, "scatter_add");
}
