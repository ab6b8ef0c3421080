/* cuda_runtime.h (cudaemu): the part of the CUDA runtime tocha uses, emulated on the CPU so
 * the kernel files (kernels/X.cu), compiled by g++ with -DTCU_EMU, run without a GPU
 * ("device" memory is host memory). Host API: emu.cpp; launches, barriers, shuffles: exec.cpp.
 * What is emulated and what is not: tests/cudaemu/README.md. */
#ifndef TCU_EMU_CUDA_RUNTIME_H
#define TCU_EMU_CUDA_RUNTIME_H

#ifndef __cplusplus
#error "cudaemu's cuda_runtime.h is C++ only, like the kernel files"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CUDART_VERSION 13000
#define TCU_EMU_HIDDEN __attribute__((visibility("hidden")))

/* ---- qualifiers -------------------------------------------------------------------------
 * Kernels are plain functions. __shared__ is static: blocks run one at a time, so a static
 * array is the running block's shared memory. */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

/* ---- types ------------------------------------------------------------------------------ */
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorInvalidHostPointer = 16,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchTimeout = 702,
    cudaErrorAssert = 710,
    cudaErrorHardwareStackError = 714,
    cudaErrorIllegalInstruction = 715,
    cudaErrorMisalignedAddress = 716,
    cudaErrorInvalidAddressSpace = 717,
    cudaErrorInvalidPc = 718,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotPermitted = 800,
    cudaErrorNotSupported = 801,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureImplicit = 906,
    cudaErrorUnknown = 999
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};

enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
    cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
    enum cudaMemoryType type;
    int device;
    void *devicePointer;
    void *hostPointer;
};

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraph_st *cudaGraph_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
};
enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2
};
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00
#define cudaHostAllocPortable 0x01
#define cudaHostAllocMapped 0x02
#define cudaHostAllocWriteCombined 0x04
#define cudaHostRegisterDefault 0x00

typedef struct { char bytes[16]; } cudaUUID_t;

/* CUDA 13's field names; the emulator fills the ones listed in emu.cpp, the rest are 0 */
struct cudaDeviceProp {
    char name[256];
    cudaUUID_t uuid;
    char luid[8];
    unsigned int luidDeviceNodeMask;
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    int regsPerBlock;
    int warpSize;
    size_t memPitch;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    size_t totalConstMem;
    int major;
    int minor;
    size_t textureAlignment;
    size_t texturePitchAlignment;
    int multiProcessorCount;
    int integrated;
    int canMapHostMemory;
    int maxTexture1D;
    int maxTexture1DMipmap;
    int maxTexture2D[2];
    int maxTexture2DMipmap[2];
    int maxTexture2DLinear[3];
    int maxTexture2DGather[2];
    int maxTexture3D[3];
    int maxTexture3DAlt[3];
    int maxTextureCubemap;
    int maxTexture1DLayered[2];
    int maxTexture2DLayered[3];
    int maxTextureCubemapLayered[2];
    int maxSurface1D;
    int maxSurface2D[2];
    int maxSurface3D[3];
    int maxSurface1DLayered[2];
    int maxSurface2DLayered[3];
    int maxSurfaceCubemap;
    int maxSurfaceCubemapLayered[2];
    size_t surfaceAlignment;
    int concurrentKernels;
    int ECCEnabled;
    int pciBusID;
    int pciDeviceID;
    int pciDomainID;
    int tccDriver;
    int asyncEngineCount;
    int unifiedAddressing;
    int memoryBusWidth;
    int l2CacheSize;
    int persistingL2CacheMaxSize;
    int maxThreadsPerMultiProcessor;
    int streamPrioritiesSupported;
    int globalL1CacheSupported;
    int localL1CacheSupported;
    size_t sharedMemPerMultiprocessor;
    int regsPerMultiprocessor;
    int managedMemory;
    int isMultiGpuBoard;
    int multiGpuBoardGroupID;
    int hostNativeAtomicSupported;
    int pageableMemoryAccess;
    int concurrentManagedAccess;
    int computePreemptionSupported;
    int canUseHostPointerForRegisteredMem;
    int cooperativeLaunch;
    size_t sharedMemPerBlockOptin;
    int pageableMemoryAccessUsesHostPageTables;
    int directManagedMemAccessFromHost;
    int maxBlocksPerMultiProcessor;
    int accessPolicyMaxWindowSize;
    size_t reservedSharedMemPerBlock;
    int hostRegisterSupported;
    int sparseCudaArraySupported;
    int hostRegisterReadOnlySupported;
    int timelineSemaphoreInteropSupported;
    int memoryPoolsSupported;
    int gpuDirectRDMASupported;
    unsigned int gpuDirectRDMAFlushWritesOptions;
    int gpuDirectRDMAWritesOrdering;
    unsigned int memoryPoolSupportedHandleTypes;
    int deferredMappingCudaArraySupported;
    int ipcEventSupported;
    int clusterLaunch;
    int unifiedFunctionPointers;
    int deviceNumaConfig;
    int deviceNumaId;
    int mpsEnabled;
    int hostNumaId;
    unsigned int gpuPciDeviceID;
    unsigned int gpuPciSubsystemID;
    int hostNumaMultinodeIpcSupported;
    int reserved[56];
};

/* the attributes cudaDeviceGetAttribute answers (CUDA's values); others read 0 */
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxBlockDimX = 2,
    cudaDevAttrMaxBlockDimY = 3,
    cudaDevAttrMaxBlockDimZ = 4,
    cudaDevAttrMaxGridDimX = 5,
    cudaDevAttrMaxGridDimY = 6,
    cudaDevAttrMaxGridDimZ = 7,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrTotalConstantMemory = 9,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMaxPitch = 11,
    cudaDevAttrMaxRegistersPerBlock = 12,
    cudaDevAttrClockRate = 13,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrIntegrated = 18,
    cudaDevAttrCanMapHostMemory = 19,
    cudaDevAttrConcurrentKernels = 31,
    cudaDevAttrEccEnabled = 32,
    cudaDevAttrPciBusId = 33,
    cudaDevAttrPciDeviceId = 34,
    cudaDevAttrMemoryClockRate = 36,
    cudaDevAttrGlobalMemoryBusWidth = 37,
    cudaDevAttrL2CacheSize = 38,
    cudaDevAttrMaxThreadsPerMultiProcessor = 39,
    cudaDevAttrAsyncEngineCount = 40,
    cudaDevAttrUnifiedAddressing = 41,
    cudaDevAttrPciDomainId = 50,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
    cudaDevAttrMaxRegistersPerMultiprocessor = 82,
    cudaDevAttrManagedMemory = 83,
    cudaDevAttrCooperativeLaunch = 95,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
    cudaDevAttrMaxBlocksPerMultiprocessor = 106,
    cudaDevAttrMemoryPoolsSupported = 115
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9
};

/* ---- host API (emu.cpp) -------------------------------------------------------------------
 * Every call is synchronous: a copy or a launch has finished when it returns, so streams
 * and events only keep CUDA's bookkeeping (and events measure wall time). */
extern "C" {
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device);
cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaDeviceReset(void);
cudaError_t cudaDriverGetVersion(int *version);
cudaError_t cudaRuntimeGetVersion(int *version);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value);

cudaError_t cudaMalloc(void **p, size_t size);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocAsync(void **p, size_t size, cudaStream_t stream);
cudaError_t cudaFreeAsync(void *p, cudaStream_t stream);
cudaError_t cudaMallocHost(void **p, size_t size);
cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaHostRegister(void *p, size_t size, unsigned int flags);
cudaError_t cudaHostUnregister(void *p);
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *p);

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind kind,
                              cudaStream_t stream);
cudaError_t cudaMemset(void *p, int value, size_t count);
cudaError_t cudaMemsetAsync(void *p, int value, size_t count, cudaStream_t stream);

cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags);

cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t event);

/* stream capture and graphs (graph.cpp): what a capturing stream is given is recorded, not
 * run; a graph launch runs the recording in order */
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status);
cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
}

/* the C++ overloads of the real cuda_runtime.h */
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t size) {
    return cudaMalloc((void **)p, size);
}
template <class T> static inline cudaError_t cudaMallocAsync(T **p, size_t size, cudaStream_t s) {
    return cudaMallocAsync((void **)p, size, s);
}
template <class T> static inline cudaError_t cudaMallocHost(T **p, size_t size) {
    return cudaMallocHost((void **)p, size);
}
template <class T> static inline cudaError_t cudaHostAlloc(T **p, size_t size, unsigned int flags) {
    return cudaHostAlloc((void **)p, size, flags);
}
static inline cudaError_t cudaEventCreate(cudaEvent_t *event, unsigned int flags) {
    return cudaEventCreateWithFlags(event, flags);
}
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *func, enum cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute((const void *)func, attr, value);
}

/* ---- kernel side (exec.cpp) ------------------------------------------------------------
 * The launch runs the grid's blocks one after the other; a block's threads are fibers on
 * one OS thread, switched only at __syncthreads and warp collectives. */
extern TCU_EMU_HIDDEN uint3 threadIdx;
extern TCU_EMU_HIDDEN uint3 blockIdx;
extern TCU_EMU_HIDDEN dim3 blockDim;
extern TCU_EMU_HIDDEN dim3 gridDim;
extern TCU_EMU_HIDDEN const int warpSize; /* 32; not a constant expression, as under nvcc */

extern "C" {
/* runs call(ctx) once per thread of the grid; an invalid configuration makes the next
 * cudaGetLastError report it, as a failed launch would */
TCU_EMU_HIDDEN void tcu_emu_run(dim3 grid, dim3 block, size_t shmem, void (*call)(void *), void *ctx);
TCU_EMU_HIDDEN void *tcu_emu_dynamic_shared(void);
TCU_EMU_HIDDEN void __syncthreads(void);
/* a warp collective: every lane of the warp gives bits; returns the bits of the lane the
 * PTX shfl.sync rule picks for (mode, b, c) */
TCU_EMU_HIDDEN uint64_t tcu_emu_shfl(uint64_t bits, int mode, unsigned b, unsigned c);
/* a warp exchange, what the emulation of the tensor-core instructions (mma.sync, ldmatrix)
 * builds on: every lane of the warp gives n bytes (n <= TCU_EMU_EXCHANGE_MAX) and gets all 32
 * lanes' bytes in lane order in all (32 n bytes; lanes past a partial last warp give 0xff) */
#define TCU_EMU_EXCHANGE_MAX 64
TCU_EMU_HIDDEN void tcu_emu_warp_exchange(const void *mine, size_t n, void *all);
/* a misaligned address where the GPU faults (what: the instruction): the launch fails with
 * cudaErrorMisalignedAddress */
TCU_EMU_HIDDEN void tcu_emu_misaligned(const char *what, const void *p);
/* stream capture (graph.cpp): whether work queued on s is recorded rather than run; the
 * recording of a launch (grid.x 0: a host step, as a copy, run as call(ctx)); the graph owns
 * ctx and frees it with del. A stream whose capture was invalidated records nothing: the
 * call fails with cudaErrorStreamCaptureInvalidated. */
TCU_EMU_HIDDEN bool tcu_emu_capturing(cudaStream_t s);
TCU_EMU_HIDDEN void tcu_emu_record(cudaStream_t s, dim3 grid, dim3 block, size_t shmem, void (*call)(void *),
                                   void *ctx, void (*del)(void *));
}
template <typename F> static void tcu_emu_call(void *f) { (*(F *)f)(); }
template <typename F> static void tcu_emu_delete(void *f) { delete (F *)f; }
/* a kernel launch on stream s: run now, or recorded while s is capturing */
template <typename F> static inline void tcu_emu_launch(dim3 grid, dim3 block, size_t shmem, cudaStream_t s, F f) {
    if (tcu_emu_capturing(s)) tcu_emu_record(s, grid, block, shmem, tcu_emu_call<F>, new F(f), tcu_emu_delete<F>);
    else tcu_emu_run(grid, block, shmem, tcu_emu_call<F>, &f);
}
/* a launch of k(args...): the arguments are copied now, as CUDA copies a launch's arguments */
template <typename K, typename... A>
static inline void tcu_emu_launch_args(dim3 grid, dim3 block, size_t shmem, cudaStream_t s, K k, A... args) {
    tcu_emu_launch(grid, block, shmem, s, [k, args...]() { k(args...); });
}

static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}

/* ---- warp shuffles ---------------------------------------------------------------------
 * c as CUDA's headers pass it to shfl.sync: ((32 - width) << 8), | 0x1f except for up.
 * Every existing lane of the warp must call (the mask is not consulted); a source lane past
 * the end of a partial last warp reads all-ones bits (NaN, -1): the value is undefined on a GPU. */
enum { TCU_EMU_SHFL_IDX, TCU_EMU_SHFL_UP, TCU_EMU_SHFL_DOWN, TCU_EMU_SHFL_BFLY, TCU_EMU_SYNCWARP };
template <typename T> static inline T tcu_emu_shfl_as(T v, int mode, unsigned b, unsigned c) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "a shuffled value fits 64 bits");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = tcu_emu_shfl(bits, mode, b, c);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
#define TCU_EMU_SHFL(T)                                                                        \
    static inline T __shfl_sync(unsigned mask, T var, int src, int width = 32) {               \
        (void)mask;                                                                            \
        return tcu_emu_shfl_as(var, TCU_EMU_SHFL_IDX, (unsigned)src, ((32u - width) << 8) | 0x1f); \
    }                                                                                          \
    static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {     \
        (void)mask;                                                                            \
        return tcu_emu_shfl_as(var, TCU_EMU_SHFL_UP, delta, (32u - width) << 8);               \
    }                                                                                          \
    static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {   \
        (void)mask;                                                                            \
        return tcu_emu_shfl_as(var, TCU_EMU_SHFL_DOWN, delta, ((32u - width) << 8) | 0x1f);    \
    }                                                                                          \
    static inline T __shfl_xor_sync(unsigned mask, T var, int lanemask, int width = 32) {      \
        (void)mask;                                                                            \
        return tcu_emu_shfl_as(var, TCU_EMU_SHFL_BFLY, (unsigned)lanemask, ((32u - width) << 8) | 0x1f); \
    }
TCU_EMU_SHFL(int)
TCU_EMU_SHFL(unsigned int)
TCU_EMU_SHFL(long)
TCU_EMU_SHFL(unsigned long)
TCU_EMU_SHFL(long long)
TCU_EMU_SHFL(unsigned long long)
TCU_EMU_SHFL(float)
TCU_EMU_SHFL(double)
#undef TCU_EMU_SHFL
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    tcu_emu_shfl(0, TCU_EMU_SYNCWARP, 0, 0x1f);
}

/* ---- atomics: plain read-modify-writes (one OS thread runs every device thread) -------- */
#define TCU_EMU_ATOMIC(T, name, expr)                                                          \
    static inline T name(T *a, T v) { T o = *a; *a = (expr); return o; }
TCU_EMU_ATOMIC(int, atomicAdd, (int)((unsigned)o + (unsigned)v))
TCU_EMU_ATOMIC(unsigned int, atomicAdd, o + v)
TCU_EMU_ATOMIC(unsigned long long, atomicAdd, o + v)
TCU_EMU_ATOMIC(float, atomicAdd, o + v)
TCU_EMU_ATOMIC(double, atomicAdd, o + v)
TCU_EMU_ATOMIC(int, atomicSub, (int)((unsigned)o - (unsigned)v))
TCU_EMU_ATOMIC(unsigned int, atomicSub, o - v)
TCU_EMU_ATOMIC(int, atomicMax, o > v ? o : v)
TCU_EMU_ATOMIC(unsigned int, atomicMax, o > v ? o : v)
TCU_EMU_ATOMIC(long long, atomicMax, o > v ? o : v)
TCU_EMU_ATOMIC(unsigned long long, atomicMax, o > v ? o : v)
TCU_EMU_ATOMIC(int, atomicMin, o < v ? o : v)
TCU_EMU_ATOMIC(unsigned int, atomicMin, o < v ? o : v)
TCU_EMU_ATOMIC(long long, atomicMin, o < v ? o : v)
TCU_EMU_ATOMIC(unsigned long long, atomicMin, o < v ? o : v)
TCU_EMU_ATOMIC(int, atomicExch, v)
TCU_EMU_ATOMIC(unsigned int, atomicExch, v)
TCU_EMU_ATOMIC(unsigned long long, atomicExch, v)
TCU_EMU_ATOMIC(float, atomicExch, v)
TCU_EMU_ATOMIC(int, atomicAnd, o & v)
TCU_EMU_ATOMIC(unsigned int, atomicAnd, o & v)
TCU_EMU_ATOMIC(unsigned long long, atomicAnd, o & v)
TCU_EMU_ATOMIC(int, atomicOr, o | v)
TCU_EMU_ATOMIC(unsigned int, atomicOr, o | v)
TCU_EMU_ATOMIC(unsigned long long, atomicOr, o | v)
#undef TCU_EMU_ATOMIC
#define TCU_EMU_CAS(T)                                                                         \
    static inline T atomicCAS(T *a, T compare, T v) { T o = *a; if (o == compare) *a = v; return o; }
TCU_EMU_CAS(int)
TCU_EMU_CAS(unsigned int)
TCU_EMU_CAS(unsigned long long)
TCU_EMU_CAS(unsigned short)
#undef TCU_EMU_CAS

/* ---- device math beyond <math.h>: CUDA's min/max overloads, rsqrt, bit casts ------------ */
#define TCU_EMU_MINMAX(R, A, B)                                                                \
    static inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }                        \
    static inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
TCU_EMU_MINMAX(int, int, int)
TCU_EMU_MINMAX(unsigned int, unsigned int, unsigned int)
TCU_EMU_MINMAX(unsigned int, int, unsigned int)
TCU_EMU_MINMAX(unsigned int, unsigned int, int)
TCU_EMU_MINMAX(long, long, long)
TCU_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
TCU_EMU_MINMAX(unsigned long, long, unsigned long)
TCU_EMU_MINMAX(unsigned long, unsigned long, long)
TCU_EMU_MINMAX(long long, long long, long long)
TCU_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
TCU_EMU_MINMAX(unsigned long long, long long, unsigned long long)
TCU_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef TCU_EMU_MINMAX
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline double min(float a, double b) { return fmin(a, b); }
static inline double max(float a, double b) { return fmax(a, b); }
static inline double min(double a, float b) { return fmin(a, b); }
static inline double max(double a, float b) { return fmax(a, b); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline int __float_as_int(float x) { int r; memcpy(&r, &x, 4); return r; }
static inline unsigned __float_as_uint(float x) { unsigned r; memcpy(&r, &x, 4); return r; }
static inline float __int_as_float(int x) { float r; memcpy(&r, &x, 4); return r; }
static inline float __uint_as_float(unsigned x) { float r; memcpy(&r, &x, 4); return r; }
static inline long long __double_as_longlong(double x) { long long r; memcpy(&r, &x, 8); return r; }
static inline double __longlong_as_double(long long x) { double r; memcpy(&r, &x, 8); return r; }

#endif
