/* cuda.h: what the CUDA kernel files (the .cu files of kernels/) share: status checks that turn a failed
 * call into a tc_error naming the call, file and line; the one stream every op runs on; the
 * launch macro; strided layouts; dtype dispatch and element load/store through float (or
 * double for f64). Compiled by nvcc, or by g++ with -DTCU_EMU against tests/cudaemu/ (a CPU
 * emulation of the CUDA runtime that runs these kernels without a GPU, for the test suite).
 * Kernels never see autograd or Lua: each file goes kernel -> launcher -> exported entry. */
#ifndef TOCHA_KERNELS_CUDA_H
#define TOCHA_KERNELS_CUDA_H

#include "../core/internal.h"

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

/* ---- status checks -------------------------------------------------------------------
 * TCU_CHECK(call): on failure, return TC_ERR from the calling function with the error
 * "<call> failed: <reason> (<file>:<line>)". TCU_LAUNCHED(op): after a launch, the same for
 * the launch's own error; with TOCHA_DEBUG=1 it also synchronizes and names the op whose
 * kernel failed. */
extern "C" int tcu_fail(const char *call, const char *reason, const char *file, int line);
extern "C" int tcu_after_launch(const char *op, const char *file, int line);
#define TCU_CHECK(call)                                                                   \
    do {                                                                                  \
        cudaError_t tcu_e_ = (call);                                                      \
        if (tcu_e_ != cudaSuccess)                                                        \
            return tcu_fail(#call, cudaGetErrorString(tcu_e_), __FILE__, __LINE__);       \
    } while (0)
#define TCU_LAUNCHED(op)                                                                  \
    do {                                                                                  \
        if (tcu_after_launch((op), __FILE__, __LINE__) != TC_OK) return TC_ERR;           \
    } while (0)

/* ---- the stream, and launching ----------------------------------------------------------
 * Every kernel, copy and library call goes on tcu_stream(), so ops run in program order
 * without host synchronization; reading a value on the host (item, tolist, printing, a
 * copy to the CPU) synchronizes. Launch with TCU_LAUNCH(kernel, blocks, threads, shared
 * bytes, args...) and follow it with TCU_LAUNCHED("op name"). */
extern "C" cudaStream_t tcu_stream(void);
#ifdef TCU_EMU
/* the arguments are evaluated at the launch, as CUDA's are: a recorded launch (a graph's
 * capture) keeps their values, not the expressions */
#define TCU_LAUNCH(kernel, blocks, threads, shmem, ...) \
    tcu_emu_launch_args(dim3(blocks), dim3(threads), (shmem), tcu_stream(), \
                        [](auto... tcu_a_) { kernel(tcu_a_...); }, __VA_ARGS__)
#else
#define TCU_LAUNCH(kernel, blocks, threads, shmem, ...) \
    kernel<<<(blocks), (threads), (shmem), tcu_stream()>>>(__VA_ARGS__)
#endif
/* dynamic shared memory of a kernel: TCU_DYNAMIC_SHARED(float, buf); then buf[i] */
#ifdef TCU_EMU
#define TCU_DYNAMIC_SHARED(type, name) type *name = (type *)tcu_emu_dynamic_shared()
#else
#define TCU_DYNAMIC_SHARED(type, name) extern __shared__ unsigned char tcu_dyn_smem_[]; \
    type *name = (type *)tcu_dyn_smem_
#endif

#define TCU_THREADS 256
/* blocks for a grid-stride loop over n items with TCU_THREADS threads each */
static inline unsigned tcu_blocks(int64_t n) {
    int64_t b = (n + TCU_THREADS - 1) / TCU_THREADS;
    if (b < 1) b = 1;
    return (unsigned)(b > 65535 * 8 ? 65535 * 8 : b);
}
#define TCU_GRID_STRIDE(i, n)                                                            \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);             \
         i += (int64_t)blockDim.x * gridDim.x)

/* ---- strided layouts --------------------------------------------------------------------
 * A tensor's shape and strides (in elements) by value, for kernel arguments. tcu_layouts
 * fills one layout per operand for n tensors of ts[0]'s shape (inputs may broadcast with
 * stride 0), dropping size-1 dims and merging dims every operand walks as one, as the CPU
 * iterator does. tcu_offset(l, i): the element offset of row-major linear index i. */
typedef struct {
    int ndim;
    int64_t shape[TC_MAX_DIMS];
    int64_t stride[TC_MAX_DIMS];
} tcu_layout;

static inline void tcu_layouts(int n, const tc_tensor *const *ts, tcu_layout *out) {
    const tc_tensor *t0 = ts[0];
    int nd = 0;
    for (int k = 0; k < n; k++) out[k].ndim = 0;
    for (int d = 0; d < t0->ndim; d++) {
        if (t0->shape[d] == 1) continue;
        bool merge = nd > 0;
        for (int k = 0; k < n && merge; k++)
            merge = out[k].stride[nd - 1] == ts[k]->stride[d] * t0->shape[d];
        for (int k = 0; k < n; k++) {
            if (merge) {
                out[k].shape[nd - 1] *= t0->shape[d];
                out[k].stride[nd - 1] = ts[k]->stride[d];
            } else {
                out[k].shape[nd] = t0->shape[d];
                out[k].stride[nd] = ts[k]->stride[d];
            }
        }
        if (!merge) nd++;
    }
    if (nd == 0) { /* one element */
        for (int k = 0; k < n; k++) { out[k].shape[0] = 1; out[k].stride[0] = 1; }
        nd = 1;
    }
    for (int k = 0; k < n; k++) out[k].ndim = nd;
}
static inline tcu_layout tcu_layout_of(const tc_tensor *t) {
    tcu_layout l;
    tcu_layouts(1, &t, &l);
    return l;
}
__host__ __device__ static inline int64_t tcu_offset(const tcu_layout &l, int64_t i) {
    int64_t off = 0;
    for (int d = l.ndim - 1; d > 0; d--) {
        int64_t s = l.shape[d];
        off += (i % s) * l.stride[d];
        i /= s;
    }
    return off + i * l.stride[0];
}

/* ---- dtypes -------------------------------------------------------------------------------
 * Element types by tc_dtype: float, double, __half, __nv_bfloat16, int32_t, int64_t,
 * uint8_t (u8 and bool). Arithmetic on floats runs in float (double for f64), as
 * PyTorch's kernels do. tcu_load/tcu_store move any element through double, for kernels
 * where one code path serves every dtype (copies, elementwise ops on integers). */
__host__ __device__ static inline float tcu_float(float v) { return v; }
__host__ __device__ static inline double tcu_float(double v) { return v; }
__device__ static inline float tcu_float(__half v) { return __half2float(v); }
__device__ static inline float tcu_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ static inline T tcu_from_float(float v);
template <> __device__ inline float tcu_from_float<float>(float v) { return v; }
template <> __device__ inline double tcu_from_float<double>(float v) { return v; }
template <> __device__ inline __half tcu_from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ inline __nv_bfloat16 tcu_from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/* the compute type of a float element type: float, or double for f64 */
template <typename T> struct tcu_acc { typedef float type; };
template <> struct tcu_acc<double> { typedef double type; };

__device__ static inline double tcu_load(const void *base, tc_dtype dt, int64_t off) {
    switch (dt) {
    case TC_F32: return ((const float *)base)[off];
    case TC_F64: return ((const double *)base)[off];
    case TC_F16: return __half2float(((const __half *)base)[off]);
    case TC_BF16: return __bfloat162float(((const __nv_bfloat16 *)base)[off]);
    case TC_I32: return ((const int32_t *)base)[off];
    case TC_I64: return (double)((const int64_t *)base)[off];
    case TC_U8: return ((const uint8_t *)base)[off];
    case TC_BOOL: return ((const uint8_t *)base)[off] != 0;
    default: return 0;
    }
}
/* float to integer as the CPU's tc_store: truncation toward zero, NaN gives 0, out of
 * range saturates (u8 then wraps modulo 256) */
__device__ static inline int64_t tcu_to_i64(double v) {
    if (v != v) return 0;
    if (v >= 0x1p63) return INT64_MAX;
    if (v < -0x1p63) return INT64_MIN;
    return (int64_t)v;
}
/* stores v converted as the CPU's tc_store does: floats through float, rounding to
 * nearest even; integers as tcu_to_i64; bool is v != 0 */
__device__ static inline void tcu_store(void *base, tc_dtype dt, int64_t off, double v) {
    switch (dt) {
    case TC_F32: ((float *)base)[off] = (float)v; break;
    case TC_F64: ((double *)base)[off] = v; break;
    case TC_F16: ((__half *)base)[off] = __float2half_rn((float)v); break;
    case TC_BF16: ((__nv_bfloat16 *)base)[off] = __float2bfloat16_rn((float)v); break;
    case TC_I32: { int64_t i = tcu_to_i64(v); ((int32_t *)base)[off] = (int32_t)(i > INT32_MAX ? INT32_MAX : i < INT32_MIN ? INT32_MIN : i); } break;
    case TC_I64: ((int64_t *)base)[off] = tcu_to_i64(v); break;
    case TC_U8: ((uint8_t *)base)[off] = (uint8_t)tcu_to_i64(v); break;
    case TC_BOOL: ((uint8_t *)base)[off] = v != 0; break;
    default: break;
    }
}

/* TCU_FLOAT_DISPATCH(dt, T, what, body): runs body with T the element type of float dtype
 * dt; any other dtype returns an error from the calling function naming `what` */
#define TCU_FLOAT_DISPATCH(dt, T, what, ...)                                               \
    switch (dt) {                                                                        \
    case TC_F32: { typedef float T; __VA_ARGS__; } break;                                \
    case TC_F64: { typedef double T; __VA_ARGS__; } break;                               \
    case TC_F16: { typedef __half T; __VA_ARGS__; } break;                               \
    case TC_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break;                       \
    default: return tc_error("%s: dtype %s is not supported on cuda", (what), tc_dtype_name(dt)); \
    }

/* the address of a tensor's first element (device memory) */
static inline char *tcu_ptr(const tc_tensor *t) { return (char *)tc_data(t); }

/* ---- small math shared by the kernel files -------------------------------------------------
 * tcu_put(d, v): stores a value computed in float (double for f64) into an element.
 * tcu_mul_rn(a, b): a * b rounded on its own: nvcc would fuse a product into a following add
 * (one rounding) where the CPU rounds twice; kernels that must equal the CPU bit for bit use it.
 * tcu_exp/tcu_log in the element's compute type; tcu_max(a, b) ignores a NaN in b as the CPU's
 * `b > a ? b : a` does. */
__device__ static inline void tcu_put(float &d, float v) { d = v; }
__device__ static inline void tcu_put(double &d, double v) { d = v; }
__device__ static inline void tcu_put(__half &d, float v) { d = __float2half_rn(v); }
__device__ static inline void tcu_put(__nv_bfloat16 &d, float v) { d = __float2bfloat16_rn(v); }
__device__ static inline float tcu_mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
__device__ static inline double tcu_mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}
__device__ static inline float tcu_exp(float v) { return expf(v); }
__device__ static inline double tcu_exp(double v) { return exp(v); }
__device__ static inline float tcu_log(float v) { return logf(v); }
__device__ static inline double tcu_log(double v) { return log(v); }
__device__ static inline float tcu_max(float a, float b) { return b > a ? b : a; }
__device__ static inline double tcu_max(double a, double b) { return b > a ? b : a; }

/* ---- Philox 4x32-10: the CPU's own function (core/philox.h), so both devices draw alike ---- */
#include "../core/philox.h"

/* ---- the exported entries: tc_cuda_<name> for every kernel of core/kernels.h (the table in
 * table.c), and the device-to-device copy under tc_cuda_copy, which kernels call directly:
 * tc_cuda_copy (device.cu) also moves data between host and device ---------------------- */
extern "C" {
TC_KERNELS(TC_KERNEL_CUDA)
int tc_cuda_copy_device(tc_tensor *dst, const tc_tensor *src); /* both on the GPU; any strides, dtypes */
}

#endif
