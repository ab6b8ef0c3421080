/* emu.cpp (cudaemu): the CUDA runtime's host API on the CPU: errors, the device and its
 * properties, memory (a registry of "device" allocations, which are host memory), copies,
 * streams and events. Every call is synchronous. Kernel launches are in exec.cpp.
 * Environment: TOCHA_EMU_DEVICES (device count, default 1; 0 tests the no-GPU path),
 * TOCHA_EMU_MEMORY (bytes of device memory, with an optional K/M/G suffix; cudaMalloc past it
 * fails with cudaErrorMemoryAllocation), TOCHA_EMU_POISON=0 (fresh allocations are not
 * filled with 0xff bytes, i.e. NaN floats and -1 integers). */
#include "emu.h"

#include <mutex>
#include <map>
#include <set>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---- errors -----------------------------------------------------------------------------
 * A failed call returns its error and leaves it as the last error (not sticky: the next
 * cudaGetLastError clears it), as the real runtime does for every error tocha can meet. An
 * error the emulator diagnoses in a launch carries a detail that cudaGetErrorString adds. */
static cudaError_t last_error = cudaSuccess;
static cudaError_t detail_code = cudaSuccess;
static char detail[512];

cudaError_t tcu_emu_fail(cudaError_t e, const char *fmt, ...) {
    last_error = e;
    detail_code = e;
    detail[0] = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    return e;
}
static cudaError_t fail(cudaError_t e) { return tcu_emu_fail(e, NULL); }

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

static const struct { cudaError_t e; const char *name, *text; } errors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidPitchValue, "cudaErrorInvalidPitchValue", "invalid pitch argument"},
    {cudaErrorInvalidHostPointer, "cudaErrorInvalidHostPointer", "invalid host pointer"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources", "too many resources requested for launch"},
    {cudaErrorLaunchTimeout, "cudaErrorLaunchTimeout", "the launch timed out and was terminated"},
    {cudaErrorAssert, "cudaErrorAssert", "device-side assert triggered"},
    {cudaErrorHardwareStackError, "cudaErrorHardwareStackError", "hardware stack error"},
    {cudaErrorIllegalInstruction, "cudaErrorIllegalInstruction", "an illegal instruction was encountered"},
    {cudaErrorMisalignedAddress, "cudaErrorMisalignedAddress", "misaligned address"},
    {cudaErrorInvalidAddressSpace, "cudaErrorInvalidAddressSpace", "operation not supported on global/shared address space"},
    {cudaErrorInvalidPc, "cudaErrorInvalidPc", "invalid program counter"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorNotPermitted, "cudaErrorNotPermitted", "operation not permitted"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorIllegalState, "cudaErrorIllegalState", "operation not permitted when the resource is in the current state"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported", "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated", "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureUnmatched, "cudaErrorStreamCaptureUnmatched", "capture was not ended in the same stream as it began"},
    {cudaErrorStreamCaptureImplicit, "cudaErrorStreamCaptureImplicit", "operation would make the legacy stream depend on a capturing blocking stream"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

const char *cudaGetErrorString(cudaError_t e) {
    static char buf[sizeof detail + 128];
    for (const auto &x : errors)
        if (x.e == e) {
            if (e != detail_code || !detail[0]) return x.text;
            snprintf(buf, sizeof buf, "%s (cudaemu: %s)", x.text, detail);
            return buf;
        }
    return "unrecognized error code";
}
const char *cudaGetErrorName(cudaError_t e) {
    for (const auto &x : errors)
        if (x.e == e) return x.name;
    return "cudaErrorUnknown";
}

/* ---- the device ------------------------------------------------------------------------ */
static size_t env_size(const char *name, size_t dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024; break;
    case 'm': case 'M': v *= 1024.0 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    default: break;
    }
    return v < 0 ? 0 : (size_t)v;
}

static int device_count(void) {
    static int n = -1;
    if (n < 0) n = (int)env_size("TOCHA_EMU_DEVICES", 1);
    return n;
}
static int current_device = 0;

bool tcu_emu_no_device(void) { return device_count() == 0; }

static std::mutex mem_mutex; /* the allocation registry below */
static size_t mem_used;

static size_t memory_total(void) {
    static size_t total = 0;
    if (!total) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        size_t phys = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)16 << 30;
        total = env_size("TOCHA_EMU_MEMORY", phys);
    }
    return total;
}

#define NEED_DEVICE() do { if (tcu_emu_no_device()) return fail(cudaErrorNoDevice); } while (0)
/* a potentially unsafe call during a capture (graph.cpp) */
#define CAPTURE_UNSAFE(what)                                                                     \
    do {                                                                                         \
        if (tcu_emu_capture_forbids(what, true)) return cudaErrorStreamCaptureUnsupported;       \
    } while (0)

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return fail(cudaErrorInvalidValue);
    *count = device_count();
    return *count ? cudaSuccess : fail(cudaErrorNoDevice);
}
cudaError_t cudaSetDevice(int device) {
    NEED_DEVICE();
    if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *device) {
    NEED_DEVICE();
    if (!device) return fail(cudaErrorInvalidValue);
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device) {
    NEED_DEVICE();
    if (!p) return fail(cudaErrorInvalidValue);
    if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cudaemu (CPU emulation of an sm_90 device)");
    p->totalGlobalMem = memory_total();
    p->sharedMemPerBlock = TCU_EMU_SHARED_DEFAULT;
    p->sharedMemPerBlockOptin = TCU_EMU_SHARED_OPTIN;
    p->sharedMemPerMultiprocessor = 233472;
    p->reservedSharedMemPerBlock = 1024;
    p->regsPerBlock = 65536;
    p->regsPerMultiprocessor = 65536;
    p->warpSize = 32;
    p->memPitch = (size_t)1 << 31;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024; p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647; p->maxGridSize[1] = 65535; p->maxGridSize[2] = 65535;
    p->totalConstMem = 65536;
    p->major = 9;
    p->minor = 0;
    p->textureAlignment = 512;
    p->texturePitchAlignment = 32;
    p->multiProcessorCount = 132;
    p->canMapHostMemory = 1;
    p->concurrentKernels = 1;
    p->pciBusID = device;
    p->asyncEngineCount = 2;
    p->unifiedAddressing = 1;
    p->memoryBusWidth = 5120;
    p->l2CacheSize = 50 << 20;
    p->maxThreadsPerMultiProcessor = 2048;
    p->maxBlocksPerMultiProcessor = 32;
    p->streamPrioritiesSupported = 1;
    p->globalL1CacheSupported = 1;
    p->localL1CacheSupported = 1;
    p->managedMemory = 1;
    p->cooperativeLaunch = 1;
    p->hostRegisterSupported = 1;
    p->memoryPoolsSupported = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    struct cudaDeviceProp p;
    if (!value) return fail(cudaErrorInvalidValue);
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) return e;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrTotalConstantMemory: *value = (int)p.totalConstMem; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMaxPitch: *value = (int)(p.memPitch - 1); break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrCanMapHostMemory: *value = 1; break;
    case cudaDevAttrConcurrentKernels: *value = 1; break;
    case cudaDevAttrPciBusId: *value = p.pciBusID; break;
    case cudaDevAttrMemoryClockRate: *value = 2619000; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrAsyncEngineCount: *value = p.asyncEngineCount; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = (int)p.sharedMemPerMultiprocessor; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = p.regsPerMultiprocessor; break;
    case cudaDevAttrManagedMemory: *value = 1; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = p.maxBlocksPerMultiProcessor; break;
    case cudaDevAttrMemoryPoolsSupported: *value = 1; break;
    default: *value = 0; break;
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    NEED_DEVICE();
    if (tcu_emu_capture_forbids("cudaDeviceSynchronize", false)) return cudaErrorStreamCaptureUnsupported;
    return cudaSuccess;
}
cudaError_t cudaDeviceReset(void) { NEED_DEVICE(); last_error = cudaSuccess; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v) { if (!v) return fail(cudaErrorInvalidValue); *v = CUDART_VERSION; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int *v) { if (!v) return fail(cudaErrorInvalidValue); *v = CUDART_VERSION; return cudaSuccess; }

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    NEED_DEVICE();
    if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(mem_mutex);
    *total_bytes = memory_total();
    *free_bytes = mem_used < *total_bytes ? *total_bytes - mem_used : 0;
    return cudaSuccess;
}

/* the dynamic shared memory a launch may ask for: 48 KB, or what cudaFuncSetAttribute
 * raised it to (for any kernel: the launch does not name the kernel it runs) */
size_t tcu_emu_shared_limit = TCU_EMU_SHARED_DEFAULT;

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value) {
    NEED_DEVICE();
    if (!func) return fail(cudaErrorInvalidDeviceFunction);
    switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
        if (value < 0 || (size_t)value > TCU_EMU_SHARED_OPTIN) return fail(cudaErrorInvalidValue);
        if ((size_t)value > tcu_emu_shared_limit) tcu_emu_shared_limit = (size_t)value;
        return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
        return value < -1 || value > 100 ? fail(cudaErrorInvalidValue) : cudaSuccess;
    default: return fail(cudaErrorInvalidValue);
    }
}

/* ---- memory -----------------------------------------------------------------------------
 * Every allocation by address: device (cudaMalloc), pinned host (cudaMallocHost,
 * cudaHostAlloc) or registered host (cudaHostRegister). Copies check that what they treat
 * as device memory lies inside one device allocation, so a wrong kind or an overrun fails
 * as it would on a GPU instead of silently working on host memory. */
enum alloc_kind { ALLOC_DEVICE, ALLOC_PINNED, ALLOC_REGISTERED };
struct alloc { size_t size; alloc_kind kind; };
static std::map<uintptr_t, alloc> allocs;

/* the allocation holding [p, p + n), or NULL; the caller holds mem_mutex */
static const std::pair<const uintptr_t, alloc> *find_alloc(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin()) return NULL;
    --it;
    size_t size = it->second.size ? it->second.size : 1;
    if (a - it->first >= size || n > size - (a - it->first)) return NULL;
    return &*it;
}

bool tcu_emu_is_device(const void *p, size_t n) {
    std::lock_guard<std::mutex> lock(mem_mutex);
    auto a = find_alloc(p, n ? n : 1);
    return a && a->second.kind == ALLOC_DEVICE;
}
/* memory a copy may treat as host memory: anything but a device allocation */
static bool is_host(const void *p) {
    std::lock_guard<std::mutex> lock(mem_mutex);
    auto a = find_alloc(p, 1);
    return !a || a->second.kind != ALLOC_DEVICE;
}

static bool poison_fresh(void) {
    static int on = -1;
    if (on < 0) on = env_size("TOCHA_EMU_POISON", 1) != 0;
    return on;
}

cudaError_t cudaMalloc(void **p, size_t size) {
    NEED_DEVICE();
    CAPTURE_UNSAFE("cudaMalloc");
    if (!p) return fail(cudaErrorInvalidValue);
    *p = NULL;
    if (size == 0) return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(mem_mutex);
        if (size > memory_total() || mem_used > memory_total() - size)
            return fail(cudaErrorMemoryAllocation);
        mem_used += size;
    }
    void *m = NULL;
    /* the exact size (no rounding), so AddressSanitizer sees a kernel's overrun */
    if (posix_memalign(&m, 256, size) != 0) {
        std::lock_guard<std::mutex> lock(mem_mutex);
        mem_used -= size;
        return fail(cudaErrorMemoryAllocation);
    }
    if (poison_fresh()) memset(m, 0xff, size);
    std::lock_guard<std::mutex> lock(mem_mutex);
    allocs[(uintptr_t)m] = alloc{size, ALLOC_DEVICE};
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    NEED_DEVICE();
    CAPTURE_UNSAFE("cudaFree");
    {
        std::lock_guard<std::mutex> lock(mem_mutex);
        auto it = allocs.find((uintptr_t)p);
        if (it == allocs.end() || it->second.kind != ALLOC_DEVICE) return fail(cudaErrorInvalidValue);
        mem_used -= it->second.size;
        allocs.erase(it);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocAsync(void **p, size_t size, cudaStream_t stream) {
    if (!tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    return cudaMalloc(p, size);
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t stream) {
    if (!tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    return cudaFree(p);
}

cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int flags) {
    NEED_DEVICE();
    CAPTURE_UNSAFE("cudaHostAlloc");
    if (!p || flags > 0x0f) return fail(cudaErrorInvalidValue);
    *p = NULL;
    if (size == 0) return cudaSuccess;
    void *m = NULL;
    if (posix_memalign(&m, 4096, size) != 0) return fail(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lock(mem_mutex);
    allocs[(uintptr_t)m] = alloc{size, ALLOC_PINNED};
    *p = m;
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t size) { return cudaHostAlloc(p, size, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void *p) {
    if (!p) return cudaSuccess;
    CAPTURE_UNSAFE("cudaFreeHost");
    {
        std::lock_guard<std::mutex> lock(mem_mutex);
        auto it = allocs.find((uintptr_t)p);
        if (it == allocs.end() || it->second.kind != ALLOC_PINNED) return fail(cudaErrorInvalidValue);
        allocs.erase(it);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostRegister(void *p, size_t size, unsigned int flags) {
    NEED_DEVICE();
    if (!p || size == 0 || flags > 0x0f) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(mem_mutex);
    if (find_alloc(p, 1) || find_alloc((char *)p + size - 1, 1)) return fail(cudaErrorInvalidValue);
    allocs[(uintptr_t)p] = alloc{size, ALLOC_REGISTERED};
    return cudaSuccess;
}
cudaError_t cudaHostUnregister(void *p) {
    std::lock_guard<std::mutex> lock(mem_mutex);
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end() || it->second.kind != ALLOC_REGISTERED) return fail(cudaErrorInvalidValue);
    allocs.erase(it);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *p) {
    if (!attr) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(mem_mutex);
    auto a = find_alloc(p, 1);
    attr->device = current_device;
    attr->devicePointer = NULL;
    attr->hostPointer = NULL;
    if (!a) {
        attr->type = cudaMemoryTypeUnregistered;
        attr->device = -2;
    } else if (a->second.kind == ALLOC_DEVICE) {
        attr->type = cudaMemoryTypeDevice;
        attr->devicePointer = (void *)p;
    } else {
        attr->type = cudaMemoryTypeHost;
        attr->devicePointer = (void *)p;
        attr->hostPointer = (void *)p;
    }
    return cudaSuccess;
}

/* ---- copies and memset ------------------------------------------------------------------
 * [p, p + n) checked as device memory, or as not device memory, per the copy's kind */
static bool side_ok(const void *p, size_t n, bool device) {
    if (n == 0) return true;
    if (!p) return false;
    return device ? tcu_emu_is_device(p, n) : is_host(p);
}

static cudaError_t check_copy(void *dst, size_t dn, const void *src, size_t sn, enum cudaMemcpyKind kind) {
    switch (kind) {
    case cudaMemcpyHostToHost: return side_ok(dst, dn, false) && side_ok(src, sn, false) ? cudaSuccess : fail(cudaErrorInvalidValue);
    case cudaMemcpyHostToDevice: return side_ok(dst, dn, true) && side_ok(src, sn, false) ? cudaSuccess : fail(cudaErrorInvalidValue);
    case cudaMemcpyDeviceToHost: return side_ok(dst, dn, false) && side_ok(src, sn, true) ? cudaSuccess : fail(cudaErrorInvalidValue);
    case cudaMemcpyDeviceToDevice: return side_ok(dst, dn, true) && side_ok(src, sn, true) ? cudaSuccess : fail(cudaErrorInvalidValue);
    case cudaMemcpyDefault: /* either side; a device pointer must fit in its allocation */
        if ((dn && !dst) || (sn && !src)) return fail(cudaErrorInvalidValue);
        if (dn && !is_host(dst) && !tcu_emu_is_device(dst, dn)) return fail(cudaErrorInvalidValue);
        if (sn && !is_host(src) && !tcu_emu_is_device(src, sn)) return fail(cudaErrorInvalidValue);
        return cudaSuccess;
    default: return fail(cudaErrorInvalidMemcpyDirection);
    }
}

/* a copy or memset a capturing stream records: the arguments, run at each graph launch */
struct recorded_copy {
    void *dst;
    const void *src;
    size_t dpitch, spitch, width, height;
    int value; /* a memset (src NULL) */
};
static void run_copy(void *ctx) {
    const recorded_copy *c = (const recorded_copy *)ctx;
    for (size_t r = 0; r < c->height; r++) {
        char *d = (char *)c->dst + r * c->dpitch;
        if (c->src) memmove(d, (const char *)c->src + r * c->spitch, c->width);
        else memset(d, c->value, c->width);
    }
}
static void free_copy(void *ctx) { delete (recorded_copy *)ctx; }

/* runs the checked copy (or memset) now, or records it when stream s captures */
static cudaError_t copy_on(cudaStream_t s, const recorded_copy &c) {
    if (c.width == 0 || c.height == 0) return cudaSuccess;
    if (tcu_emu_capturing(s)) {
        tcu_emu_record(s, dim3(0), dim3(1), 0, run_copy, new recorded_copy(c), free_copy);
        return cudaPeekAtLastError() == cudaErrorStreamCaptureInvalidated ? cudaErrorStreamCaptureInvalidated
                                                                          : cudaSuccess;
    }
    recorded_copy now = c;
    run_copy(&now);
    return cudaSuccess;
}

static cudaError_t copy_2d(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                           enum cudaMemcpyKind kind, cudaStream_t s) {
    NEED_DEVICE();
    if (width == 0 || height == 0) return cudaSuccess;
    if (width > dpitch || width > spitch) return fail(cudaErrorInvalidPitchValue);
    cudaError_t e = check_copy(dst, (height - 1) * dpitch + width, src, (height - 1) * spitch + width, kind);
    if (e != cudaSuccess) return e;
    return copy_on(s, recorded_copy{dst, src, dpitch, spitch, width, height, 0});
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    CAPTURE_UNSAFE("cudaMemcpy (synchronous)");
    return copy_2d(dst, count, src, count, count, 1, kind, NULL);
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
    if (!tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    return copy_2d(dst, count, src, count, count, 1, kind, stream);
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, enum cudaMemcpyKind kind) {
    CAPTURE_UNSAFE("cudaMemcpy2D (synchronous)");
    return copy_2d(dst, dpitch, src, spitch, width, height, kind, NULL);
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height, enum cudaMemcpyKind kind, cudaStream_t stream) {
    if (!tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    return copy_2d(dst, dpitch, src, spitch, width, height, kind, stream);
}

static cudaError_t memset_on(void *p, int value, size_t count, cudaStream_t s) {
    NEED_DEVICE();
    if (!side_ok(p, count, true)) return fail(cudaErrorInvalidValue);
    return copy_on(s, recorded_copy{p, NULL, count, 0, count, 1, value});
}
cudaError_t cudaMemset(void *p, int value, size_t count) {
    CAPTURE_UNSAFE("cudaMemset (synchronous)");
    return memset_on(p, value, count, NULL);
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t count, cudaStream_t stream) {
    if (!tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    return memset_on(p, value, count, stream);
}

/* ---- streams and events -----------------------------------------------------------------
 * Handles are checked against the live ones, so a destroyed stream or event fails. */
struct CUstream_st { unsigned flags; };
struct CUevent_st { unsigned flags; bool recorded; double ms; };
static std::mutex handle_mutex;
static std::set<const void *> streams, events;

bool tcu_emu_stream_ok(cudaStream_t s) {
    if (s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread) return true;
    std::lock_guard<std::mutex> lock(handle_mutex);
    return streams.count(s) != 0;
}
static bool event_ok(cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(handle_mutex);
    return e && events.count(e) != 0;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    NEED_DEVICE();
    if (!stream || flags > cudaStreamNonBlocking) return fail(cudaErrorInvalidValue);
    cudaStream_t s = new CUstream_st{flags};
    std::lock_guard<std::mutex> lock(handle_mutex);
    streams.insert(s);
    *stream = s;
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    NEED_DEVICE();
    std::lock_guard<std::mutex> lock(handle_mutex);
    if (!streams.erase(stream)) return fail(cudaErrorInvalidResourceHandle);
    delete stream;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    NEED_DEVICE();
    if (!tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    if (tcu_emu_capture_forbids_sync(stream, "cudaStreamSynchronize")) return cudaErrorStreamCaptureUnsupported;
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
    NEED_DEVICE();
    if (!tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    if (tcu_emu_capture_forbids_sync(stream, "cudaStreamQuery")) return cudaErrorStreamCaptureUnsupported;
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    NEED_DEVICE();
    if (!tcu_emu_stream_ok(stream) || !event_ok(event)) return fail(cudaErrorInvalidResourceHandle);
    return flags ? fail(cudaErrorInvalidValue) : cudaSuccess;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    NEED_DEVICE();
    if (!event || flags > 0x0f) return fail(cudaErrorInvalidValue);
    cudaEvent_t e = new CUevent_st{flags, false, 0};
    std::lock_guard<std::mutex> lock(handle_mutex);
    events.insert(e);
    *event = e;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    NEED_DEVICE();
    if (!event_ok(event) || !tcu_emu_stream_ok(stream)) return fail(cudaErrorInvalidResourceHandle);
    event->recorded = true;
    event->ms = now_ms();
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
    NEED_DEVICE();
    return event_ok(event) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) { return cudaEventQuery(event); }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    NEED_DEVICE();
    if (!ms) return fail(cudaErrorInvalidValue);
    if (!event_ok(start) || !event_ok(end)) return fail(cudaErrorInvalidResourceHandle);
    if ((start->flags | end->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
    NEED_DEVICE();
    std::lock_guard<std::mutex> lock(handle_mutex);
    if (!event || !events.erase(event)) return fail(cudaErrorInvalidResourceHandle);
    delete event;
    return cudaSuccess;
}
