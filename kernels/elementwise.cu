/* elementwise.cu (cuda): fill, copies between device tensors, unary ops and their derivatives
 * (the formulas of core/unary.h), broadcasting binary ops and where: the twins of
 * core/cpu/elementwise.c, one kernel per call.
 * Operands of one float dtype run typed kernels that compute in float (double for f64), with a
 * unit-stride fast path; integers, bool and mixed dtypes go through double, as the CPU does. */
#include "cuda.h"
#include "../core/unary.h"

#include <string.h>

/* ---- joint layouts ------------------------------------------------------------------------
 * Up to four operands of one shape (the output first), dims merged by tcu_layouts. One
 * decomposition of the linear index serves every operand, in 32 bits when the index fits. */
#define EW_MAX_OPS 4
typedef struct {
    int ndim;
    bool contig; /* every operand one unit-stride run: each offset is the index itself */
    bool small;  /* fewer than 2^31 elements */
    int64_t n;
    int64_t shape[TC_MAX_DIMS];
    int64_t stride[EW_MAX_OPS][TC_MAX_DIMS];
} ew_layout;

/* the layout of nops tensors of ts[0]'s shape, which must hold at least one element. The
 * dims are visited in the order of the output's strides, outermost first: an output in any
 * dense order (channels-last) with inputs in that same order is then one unit-stride run. */
static ew_layout ew_layout_of(int nops, const tc_tensor *const *ts) {
    tc_tensor perm[EW_MAX_OPS];
    const tc_tensor *pts[EW_MAX_OPS];
    int order[TC_MAX_DIMS], nd = ts[0]->ndim;
    for (int d = 0; d < nd; d++) { /* a stable insertion sort by the output's stride, largest first */
        int j = d;
        while (j > 0 && ts[0]->stride[order[j - 1]] < ts[0]->stride[d]) { order[j] = order[j - 1]; j--; }
        order[j] = d;
    }
    for (int k = 0; k < nops; k++) {
        perm[k] = *ts[k];
        for (int d = 0; d < nd; d++) {
            perm[k].shape[d] = ts[k]->shape[order[d]];
            perm[k].stride[d] = ts[k]->stride[order[d]];
        }
        pts[k] = &perm[k];
    }
    tcu_layout l[EW_MAX_OPS];
    tcu_layouts(nops, pts, l);
    ew_layout e;
    memset(&e, 0, sizeof e);
    e.ndim = l[0].ndim;
    e.n = tc_numel(ts[0]);
    e.small = e.n < INT32_MAX;
    e.contig = e.ndim == 1;
    for (int d = 0; d < e.ndim; d++) e.shape[d] = l[0].shape[d];
    for (int k = 0; k < nops; k++) {
        for (int d = 0; d < e.ndim; d++) e.stride[k][d] = l[k].stride[d];
        e.contig = e.contig && l[k].stride[0] == 1;
    }
    return e;
}

/* the element offsets of linear index i in each of the first N operands */
template <int N>
__device__ static inline void ew_offsets(const ew_layout &l, int64_t i, int64_t *off) {
    if (l.contig) {
        for (int k = 0; k < N; k++) off[k] = i;
        return;
    }
    for (int k = 0; k < N; k++) off[k] = 0;
    if (l.small) {
        unsigned r = (unsigned)i;
        for (int d = l.ndim - 1; d > 0; d--) {
            unsigned s = (unsigned)l.shape[d], q = r / s, c = r - q * s;
            for (int k = 0; k < N; k++) off[k] += (int64_t)c * l.stride[k][d];
            r = q;
        }
        for (int k = 0; k < N; k++) off[k] += (int64_t)r * l.stride[k][0];
    } else {
        int64_t r = i;
        for (int d = l.ndim - 1; d > 0; d--) {
            int64_t s = l.shape[d], q = r / s, c = r - q * s;
            for (int k = 0; k < N; k++) off[k] += c * l.stride[k][d];
            r = q;
        }
        for (int k = 0; k < N; k++) off[k] += r * l.stride[k][0];
    }
}

/* ---- typed values: load an element into its compute type, store it back ----------------------
 * Floats compute in float (f64 in double); i64 in int64 (the CPU's typed binary loop). */
template <typename T> struct ew_acc { typedef float type; };
template <> struct ew_acc<double> { typedef double type; };
template <> struct ew_acc<int64_t> { typedef int64_t type; };

__device__ static inline float ew_in(float v) { return v; }
__device__ static inline double ew_in(double v) { return v; }
__device__ static inline float ew_in(__half v) { return __half2float(v); }
__device__ static inline float ew_in(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ static inline int64_t ew_in(int64_t v) { return v; }

template <typename T> __device__ static inline T ew_out(typename ew_acc<T>::type v) { return tcu_from_float<T>(v); }
template <> __device__ inline double ew_out<double>(double v) { return v; }
template <> __device__ inline int64_t ew_out<int64_t>(int64_t v) { return v; }

/* libm by overload: the float function for float, the double one for double */
#define EW_MATH(name, f32, f64)                                       \
    __device__ static inline float name(float x) { return f32(x); }  \
    __device__ static inline double name(double x) { return f64(x); }
EW_MATH(m_exp, expf, exp)
EW_MATH(m_log, logf, log)
EW_MATH(m_log1p, log1pf, log1p)
EW_MATH(m_sqrt, sqrtf, sqrt)
EW_MATH(m_fabs, fabsf, fabs)
EW_MATH(m_sin, sinf, sin)
EW_MATH(m_cos, cosf, cos)
EW_MATH(m_tanh, tanhf, tanh)
EW_MATH(m_erf, erff, erf)
#undef EW_MATH
__device__ static inline float m_pow(float x, float y) { return powf(x, y); }
/* whole numbers to whole powers exactly, as the CPU's correctly rounded pow gives them: CUDA's
 * pow may be off by an ulp or two, and a result a hair under 3 becomes 2 in an integer output
 * (seen on an H100: 3 to the power 1 gave 2 in u8, -3 gave -2 in i32) */
__device__ static inline double m_pow(double x, double y) {
    if (y >= 0 && y <= 1024 && y == trunc(y) && x == trunc(x)) {
        double r = 1, p = x;
        for (unsigned e = (unsigned)y; e; e >>= 1, p *= p)
            if (e & 1) r *= p;
        return r;
    }
    return pow(x, y);
}
__device__ static inline int64_t m_pow(int64_t x, int64_t y) { return (int64_t)pow((double)x, (double)y); } /* unused */

/* ---- fill -------------------------------------------------------------------------------------- */
template <typename U>
__global__ void fill_kernel(U *dst, U bits, ew_layout l) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[1];
        ew_offsets<1>(l, i, off);
        dst[off[0]] = bits;
    }
}

/* the bytes of v stored as dtype dt (in the low bytes), exactly as the CPU's tc_store writes them */
static uint64_t ew_bits(tc_dtype dt, double v) {
    uint64_t u = 0;
    tc_store(&u, dt, v);
    return u;
}

template <typename U>
static int fill_launch(tc_tensor *dst, uint64_t bits, const ew_layout &l) {
    TCU_LAUNCH(fill_kernel<U>, tcu_blocks(l.n), TCU_THREADS, 0, (U *)tcu_ptr(dst), (U)bits, l);
    TCU_LAUNCHED("fill");
    return TC_OK;
}

extern "C" int tc_cuda_fill(tc_tensor *dst, double v) {
    if (tc_numel(dst) == 0) return TC_OK;
    const tc_tensor *ts[1] = {dst};
    ew_layout l = ew_layout_of(1, ts);
    size_t es = tc_dtype_size(dst->dtype);
    uint64_t bits = ew_bits(dst->dtype, v);
    bool bytewise = true; /* every byte the same (zeros, most of all): a memset */
    for (size_t k = 1; k < es; k++) bytewise = bytewise && ((bits >> (8 * k)) & 0xff) == (bits & 0xff);
    if (l.contig && bytewise) {
        TCU_CHECK(cudaMemsetAsync(tcu_ptr(dst), (int)(bits & 0xff), (size_t)l.n * es, tcu_stream()));
        return TC_OK;
    }
    switch (es) {
    case 1: return fill_launch<uint8_t>(dst, bits, l);
    case 2: return fill_launch<uint16_t>(dst, bits, l);
    case 4: return fill_launch<uint32_t>(dst, bits, l);
    case 8: return fill_launch<uint64_t>(dst, bits, l);
    default: return tc_error("fill: dtype %s is not supported on cuda", tc_dtype_name(dst->dtype));
    }
}

/* ---- copy ---------------------------------------------------------------------------------------
 * One dtype: elements moved as unsigned words of their size (a memcpy when both are one
 * unit-stride run); two dtypes: converted through double as the CPU's tc_load/tc_store. */
template <typename U>
__global__ void copy_kernel(U *dst, const U *src, ew_layout l) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[2];
        ew_offsets<2>(l, i, off);
        dst[off[0]] = src[off[1]];
    }
}

__global__ void copy_cast_kernel(void *dst, tc_dtype ddt, const void *src, tc_dtype sdt, ew_layout l) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[2];
        ew_offsets<2>(l, i, off);
        tcu_store(dst, ddt, off[0], tcu_load(src, sdt, off[1]));
    }
}

template <typename U>
static int copy_launch(tc_tensor *dst, const tc_tensor *src, const ew_layout &l) {
    TCU_LAUNCH(copy_kernel<U>, tcu_blocks(l.n), TCU_THREADS, 0, (U *)tcu_ptr(dst), (const U *)tcu_ptr(src), l);
    TCU_LAUNCHED("copy");
    return TC_OK;
}

extern "C" int tc_cuda_copy_device(tc_tensor *dst, const tc_tensor *src) {
    if (tc_numel(dst) == 0) return TC_OK;
    const tc_tensor *ts[2] = {dst, src};
    ew_layout l = ew_layout_of(2, ts);
    if (dst->dtype != src->dtype) {
        TCU_LAUNCH(copy_cast_kernel, tcu_blocks(l.n), TCU_THREADS, 0, (void *)tcu_ptr(dst), dst->dtype,
                   (const void *)tcu_ptr(src), src->dtype, l);
        TCU_LAUNCHED("copy");
        return TC_OK;
    }
    size_t es = tc_dtype_size(dst->dtype);
    if (l.contig) {
        TCU_CHECK(cudaMemcpyAsync(tcu_ptr(dst), tcu_ptr(src), (size_t)l.n * es, cudaMemcpyDeviceToDevice, tcu_stream()));
        return TC_OK;
    }
    switch (es) {
    case 1: return copy_launch<uint8_t>(dst, src, l);
    case 2: return copy_launch<uint16_t>(dst, src, l);
    case 4: return copy_launch<uint32_t>(dst, src, l);
    case 8: return copy_launch<uint64_t>(dst, src, l);
    default: return tc_error("copy: dtype %s is not supported on cuda", tc_dtype_name(dst->dtype));
    }
}

/* ---- unary --------------------------------------------------------------------------------------
 * The formulas of core/unary.h (the CPU's), in A: float, or double for f64 and the generic path;
 * M(fn) is m_fn above. */
#define M_(fn) m_##fn
#define KNOWN_(op, fk, f, dk, uses, d) case TC_OP_##op:
static bool unary_known(tc_op op) {
    switch (op) {
    TC_UNARY_OPS(KNOWN_, float, M_) return true;
    default: return false;
    }
}
#undef KNOWN_

#define FWD_(op, fk, f, dk, uses, d) case TC_OP_##op: return (f);
template <typename A>
__device__ static inline A ew_unary(tc_op op, A x, A a, A b) {
    switch (op) {
    TC_UNARY_OPS(FWD_, A, M_)
    default: return 0;
    }
}
#undef FWD_

template <typename T>
__global__ void unary_kernel(T *out, const T *x, ew_layout l, tc_op op, double a, double b) {
    typedef typename ew_acc<T>::type A;
    A fa = (A)a, fb = (A)b;
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[2];
        ew_offsets<2>(l, i, off);
        out[off[0]] = ew_out<T>(ew_unary<A>(op, ew_in(x[off[1]]), fa, fb));
    }
}

__global__ void unary_any_kernel(void *out, tc_dtype odt, const void *x, tc_dtype xdt, ew_layout l, tc_op op,
                                 double a, double b) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[2];
        ew_offsets<2>(l, i, off);
        tcu_store(out, odt, off[0], ew_unary<double>(op, tcu_load(x, xdt, off[1]), a, b));
    }
}

extern "C" int tc_cuda_unary(tc_tensor *out, const tc_tensor *x, tc_op op, double a, double b) {
    if (!unary_known(op)) return tc_error("unary: %s is not a unary op", tc_op_name(op));
    if (tc_numel(out) == 0) return TC_OK;
    const tc_tensor *ts[2] = {out, x};
    ew_layout l = ew_layout_of(2, ts);
    if (out->dtype == x->dtype && tc_dtype_is_float(x->dtype)) {
        TCU_FLOAT_DISPATCH(x->dtype, T, "unary",
            TCU_LAUNCH(unary_kernel<T>, tcu_blocks(l.n), TCU_THREADS, 0, (T *)tcu_ptr(out), (const T *)tcu_ptr(x),
                       l, op, a, b));
    } else {
        TCU_LAUNCH(unary_any_kernel, tcu_blocks(l.n), TCU_THREADS, 0, (void *)tcu_ptr(out), out->dtype,
                   (const void *)tcu_ptr(x), x->dtype, l, op, a, b);
    }
    TCU_LAUNCHED(tc_op_name(op));
    return TC_OK;
}

/* d y / d x given x and y */
#define DIFF_(op, fk, f, dk, uses, d) TC_UNARY_IF_DIFF_##dk(case TC_OP_##op:)
static bool deriv_known(tc_op op) {
    switch (op) {
    TC_UNARY_OPS(DIFF_, float, M_) return true;
    default: return false;
    }
}
#undef DIFF_

#define DER_(op, fk, f, dk, uses, d) TC_UNARY_IF_DIFF_##dk(case TC_OP_##op: return (d);)
template <typename A>
__device__ static inline A ew_deriv(tc_op op, A x, A y, A a, A b) {
    switch (op) {
    TC_UNARY_OPS(DER_, A, M_)
    default: return 0;
    }
}
#undef DER_
#undef M_

/* operands gx, gy, x, y; an absent x or y is gy again, never read */
template <typename T>
__global__ void unary_bw_kernel(T *gx, const T *gy, const T *x, const T *y, ew_layout l, tc_op op, double a, double b) {
    typedef typename ew_acc<T>::type A;
    A fa = (A)a, fb = (A)b;
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[4];
        ew_offsets<4>(l, i, off);
        gx[off[0]] = ew_out<T>(ew_in(gy[off[1]]) * ew_deriv<A>(op, ew_in(x[off[2]]), ew_in(y[off[3]]), fa, fb));
    }
}

typedef struct { tc_dtype dt[EW_MAX_OPS]; } ew_dtypes;

__global__ void unary_bw_any_kernel(void *gx, const void *gy, const void *x, const void *y, ew_dtypes dts,
                                    ew_layout l, tc_op op, double a, double b) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[4];
        ew_offsets<4>(l, i, off);
        double d = ew_deriv<double>(op, tcu_load(x, dts.dt[2], off[2]), tcu_load(y, dts.dt[3], off[3]), a, b);
        tcu_store(gx, dts.dt[0], off[0], tcu_load(gy, dts.dt[1], off[1]) * d);
    }
}

extern "C" int tc_cuda_unary_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x, const tc_tensor *y,
                                      tc_op op, double a, double b) {
    if (!deriv_known(op)) return tc_error("unary_backward: %s has no derivative", tc_op_name(op));
    if (tc_numel(gx) == 0) return TC_OK;
    const tc_tensor *ts[4] = {gx, gy, x ? x : gy, y ? y : gy};
    ew_layout l = ew_layout_of(4, ts);
    tc_dtype dt = gx->dtype;
    bool same = tc_dtype_is_float(dt);
    for (int k = 1; k < 4; k++) same = same && ts[k]->dtype == dt;
    if (same) {
        TCU_FLOAT_DISPATCH(dt, T, "unary_backward",
            TCU_LAUNCH(unary_bw_kernel<T>, tcu_blocks(l.n), TCU_THREADS, 0, (T *)tcu_ptr(gx), (const T *)tcu_ptr(ts[1]),
                       (const T *)tcu_ptr(ts[2]), (const T *)tcu_ptr(ts[3]), l, op, a, b));
    } else {
        ew_dtypes dts = {{gx->dtype, gy->dtype, ts[2]->dtype, ts[3]->dtype}};
        TCU_LAUNCH(unary_bw_any_kernel, tcu_blocks(l.n), TCU_THREADS, 0, (void *)tcu_ptr(gx), (const void *)tcu_ptr(ts[1]),
                   (const void *)tcu_ptr(ts[2]), (const void *)tcu_ptr(ts[3]), dts, l, op, a, b);
    }
    TCU_LAUNCHED("unary_backward");
    return TC_OK;
}

/* ---- binary -------------------------------------------------------------------------------------
 * The CPU's BINARY_CASES and COMPARE_CASES. i64 adds, subtracts and multiplies in 64 bits,
 * wrapping as the CPU's typed loop does (through unsigned here, where overflow is defined). */
static bool is_compare(tc_op op) { return op >= TC_OP_EQ && op <= TC_OP_LOGICAL_OR; }
static bool binary_known(tc_op op) { return (op >= TC_OP_ADD && op <= TC_OP_MINIMUM) || is_compare(op); }

__device__ static inline float ew_add(float x, float y) { return x + y; }
__device__ static inline double ew_add(double x, double y) { return x + y; }
__device__ static inline int64_t ew_add(int64_t x, int64_t y) { return (int64_t)((uint64_t)x + (uint64_t)y); }
__device__ static inline float ew_sub(float x, float y) { return x - y; }
__device__ static inline double ew_sub(double x, double y) { return x - y; }
__device__ static inline int64_t ew_sub(int64_t x, int64_t y) { return (int64_t)((uint64_t)x - (uint64_t)y); }
__device__ static inline float ew_mul(float x, float y) { return x * y; }
__device__ static inline double ew_mul(double x, double y) { return x * y; }
__device__ static inline int64_t ew_mul(int64_t x, int64_t y) { return (int64_t)((uint64_t)x * (uint64_t)y); }
__device__ static inline int64_t ew_div(int64_t x, int64_t y) { return y ? x / y : 0; } /* unused: i64 divides through double */
__device__ static inline float ew_div(float x, float y) { return x / y; }
__device__ static inline double ew_div(double x, double y) { return x / y; }

template <typename A>
__device__ static inline A ew_binary(tc_op op, A x, A y) {
    switch (op) {
    case TC_OP_ADD: return ew_add(x, y);
    case TC_OP_SUB: return ew_sub(x, y);
    case TC_OP_MUL: return ew_mul(x, y);
    case TC_OP_DIV: return ew_div(x, y);
    case TC_OP_POW: return m_pow(x, y);
    case TC_OP_MAXIMUM: return x != x || x > y ? x : y; /* x != x: NaN wins */
    case TC_OP_MINIMUM: return x != x || x < y ? x : y;
    default: return 0;
    }
}

template <typename A>
__device__ static inline bool ew_compare(tc_op op, A x, A y) {
    switch (op) {
    case TC_OP_EQ: return x == y;
    case TC_OP_NE: return x != y;
    case TC_OP_LT: return x < y;
    case TC_OP_LE: return x <= y;
    case TC_OP_GT: return x > y;
    case TC_OP_GE: return x >= y;
    case TC_OP_LOGICAL_AND: return x != 0 && y != 0;
    case TC_OP_LOGICAL_OR: return x != 0 || y != 0;
    default: return false;
    }
}

/* a and b of dtype T; out of dtype T, or bool (uint8) for the comparisons */
template <typename T>
__global__ void binary_kernel(void *out, const T *a, const T *b, ew_layout l, tc_op op, bool cmp) {
    typedef typename ew_acc<T>::type A;
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[3];
        ew_offsets<3>(l, i, off);
        A x = ew_in(a[off[1]]), y = ew_in(b[off[2]]);
        if (cmp) ((uint8_t *)out)[off[0]] = ew_compare<A>(op, x, y);
        else ((T *)out)[off[0]] = ew_out<T>(ew_binary<A>(op, x, y));
    }
}

__global__ void binary_any_kernel(void *out, const void *a, const void *b, ew_dtypes dts, ew_layout l, tc_op op,
                                  bool cmp) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[3];
        ew_offsets<3>(l, i, off);
        double x = tcu_load(a, dts.dt[1], off[1]), y = tcu_load(b, dts.dt[2], off[2]);
        tcu_store(out, dts.dt[0], off[0], cmp ? (double)ew_compare<double>(op, x, y) : ew_binary<double>(op, x, y));
    }
}

extern "C" int tc_cuda_binary(tc_tensor *out, const tc_tensor *a, const tc_tensor *b, tc_op op) {
    if (!binary_known(op)) return tc_error("binary: %s is not a binary op", tc_op_name(op));
    if (tc_numel(out) == 0) return TC_OK;
    const tc_tensor *ts[3] = {out, a, b};
    ew_layout l = ew_layout_of(3, ts);
    bool cmp = is_compare(op);
    tc_dtype dt = a->dtype;
    /* the CPU's typed loops: one input dtype, out of it (bool for comparisons); i64 neither
     * divides nor raises to a power there */
    bool typed = dt == b->dtype && out->dtype == (cmp ? TC_BOOL : dt) &&
                 (tc_dtype_is_float(dt) || (dt == TC_I64 && op != TC_OP_DIV && op != TC_OP_POW));
    void *o = tcu_ptr(out);
    if (typed && dt == TC_I64) {
        TCU_LAUNCH(binary_kernel<int64_t>, tcu_blocks(l.n), TCU_THREADS, 0, o, (const int64_t *)tcu_ptr(a),
                   (const int64_t *)tcu_ptr(b), l, op, cmp);
    } else if (typed) {
        TCU_FLOAT_DISPATCH(dt, T, "binary",
            TCU_LAUNCH(binary_kernel<T>, tcu_blocks(l.n), TCU_THREADS, 0, o, (const T *)tcu_ptr(a),
                       (const T *)tcu_ptr(b), l, op, cmp));
    } else {
        ew_dtypes dts = {{out->dtype, a->dtype, b->dtype, out->dtype}};
        TCU_LAUNCH(binary_any_kernel, tcu_blocks(l.n), TCU_THREADS, 0, o, (const void *)tcu_ptr(a),
                   (const void *)tcu_ptr(b), dts, l, op, cmp);
    }
    TCU_LAUNCHED(tc_op_name(op));
    return TC_OK;
}

/* ---- where --------------------------------------------------------------------------------------
 * out = c ? a : b with c bool and a, b of out's dtype (elements moved as words of their size);
 * anything else through double. */
template <typename U>
__global__ void where_kernel(U *out, const uint8_t *c, const U *a, const U *b, ew_layout l) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[4];
        ew_offsets<4>(l, i, off);
        out[off[0]] = c[off[1]] ? a[off[2]] : b[off[3]];
    }
}

__global__ void where_any_kernel(void *out, const void *c, const void *a, const void *b, ew_dtypes dts, ew_layout l) {
    TCU_GRID_STRIDE(i, l.n) {
        int64_t off[4];
        ew_offsets<4>(l, i, off);
        bool take_a = tcu_load(c, dts.dt[1], off[1]) != 0;
        tcu_store(out, dts.dt[0], off[0], take_a ? tcu_load(a, dts.dt[2], off[2]) : tcu_load(b, dts.dt[3], off[3]));
    }
}

template <typename U>
static int where_launch(tc_tensor *out, const tc_tensor *c, const tc_tensor *a, const tc_tensor *b, const ew_layout &l) {
    TCU_LAUNCH(where_kernel<U>, tcu_blocks(l.n), TCU_THREADS, 0, (U *)tcu_ptr(out), (const uint8_t *)tcu_ptr(c),
               (const U *)tcu_ptr(a), (const U *)tcu_ptr(b), l);
    TCU_LAUNCHED("where");
    return TC_OK;
}

extern "C" int tc_cuda_where(tc_tensor *out, const tc_tensor *c, const tc_tensor *a, const tc_tensor *b) {
    if (tc_numel(out) == 0) return TC_OK;
    const tc_tensor *ts[4] = {out, c, a, b};
    ew_layout l = ew_layout_of(4, ts);
    if (c->dtype == TC_BOOL && a->dtype == out->dtype && b->dtype == out->dtype) {
        switch (tc_dtype_size(out->dtype)) {
        case 1: return where_launch<uint8_t>(out, c, a, b, l);
        case 2: return where_launch<uint16_t>(out, c, a, b, l);
        case 4: return where_launch<uint32_t>(out, c, a, b, l);
        case 8: return where_launch<uint64_t>(out, c, a, b, l);
        default: break;
        }
    }
    ew_dtypes dts = {{out->dtype, c->dtype, a->dtype, b->dtype}};
    TCU_LAUNCH(where_any_kernel, tcu_blocks(l.n), TCU_THREADS, 0, (void *)tcu_ptr(out), (const void *)tcu_ptr(c),
               (const void *)tcu_ptr(a), (const void *)tcu_ptr(b), dts, l);
    TCU_LAUNCHED("where");
    return TC_OK;
}
