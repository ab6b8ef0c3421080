/* device.cu: the cuda device's runtime: status checks that become tc_errors, the one stream
 * every op runs on, the device probe and queries, the backend flags, and copies between the
 * host and the GPU (the kernel table's copy slot). The caching allocators are in alloc.cu. */
#include "runtime.h"

#include <atomic>
#include <stdio.h>
#include <stdlib.h>

extern "C" int tc_cpu_copy(tc_tensor *dst, const tc_tensor *src); /* core/cpu/cpu.h, a C header */

/* ---- the device: probed once ------------------------------------------------------------
 * The probe finds a device, starts the runtime on it and creates the stream. It never calls
 * tc_error and clears the runtime's error state after a failure, so asking whether CUDA is
 * available leaves no error behind for a later call to report. */
namespace {
struct device_state {
    bool ok;
    int count;
    cudaStream_t stream;
    char why[256]; /* when !ok: why not */
};

device_state probe(void) {
    device_state d = {};
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if ((e == cudaSuccess && n == 0) || e == cudaErrorNoDevice) {
        snprintf(d.why, sizeof d.why, "no GPU was found");
        (void)cudaGetLastError();
        return d;
    }
    if (e == cudaErrorInsufficientDriver) {
        snprintf(d.why, sizeof d.why, "no GPU was found: no NVIDIA driver, or one older than the CUDA runtime "
                                      "tocha was built with");
        (void)cudaGetLastError();
        return d;
    }
    if (e == cudaSuccess) e = cudaSetDevice(0);
#ifndef TCU_EMU /* the kernels are machine code for sm_80 and sm_90, and PTX for newer */
    int major = 0, minor = 0;
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
    if (e == cudaSuccess && major < 8) {
        snprintf(d.why, sizeof d.why, "GPU 0 has compute capability %d.%d; tocha's kernels need 8.0 or newer",
                 major, minor);
        return d;
    }
#endif
    /* a non-blocking stream: no implicit ordering with the legacy default stream, which
     * nothing in tocha uses (every copy and memset is the Async form on this stream) */
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        snprintf(d.why, sizeof d.why, "the CUDA runtime did not start: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        d.stream = cudaStream_t();
        return d;
    }
    d.ok = true;
    d.count = n;
    return d;
}

const device_state &device(void) {
    static const device_state d = probe(); /* thread-safe one-time initialization */
    return d;
}

/* TOCHA_DEBUG=1 (any value but "" and "0"): synchronize after every launch */
bool debug_sync(void) {
    static const bool on = [] {
        const char *s = getenv("TOCHA_DEBUG");
        return s && *s && strcmp(s, "0") != 0;
    }();
    return on;
}

/* errors a kernel raises while running: they surface at whichever call comes next */
bool from_earlier_kernel(const char *reason) {
#ifdef TCU_EMU
    (void)reason;
    return false;
#else
    static const cudaError_t async[] = {
        cudaErrorIllegalAddress, cudaErrorLaunchFailure, cudaErrorAssert, cudaErrorHardwareStackError,
        cudaErrorIllegalInstruction, cudaErrorMisalignedAddress, cudaErrorInvalidAddressSpace,
        cudaErrorInvalidPc, cudaErrorLaunchTimeout,
    };
    for (cudaError_t e : async)
        if (strcmp(reason, cudaGetErrorString(e)) == 0) return true;
    return false;
#endif
}

const char *hint(const char *reason) {
    if (tc_cuda_is_capturing() && (strcmp(reason, cudaGetErrorString(cudaErrorStreamCaptureUnsupported)) == 0 ||
                                   strcmp(reason, cudaGetErrorString(cudaErrorStreamCaptureInvalidated)) == 0))
        return "; a CUDA graph is capturing, and this call is not allowed then";
    return !debug_sync() && from_earlier_kernel(reason)
               ? "; a kernel queued earlier failed: run with TOCHA_DEBUG=1 to find which op"
               : "";
}
} // namespace

const char *tc_cuda_unavailable_reason(void) { return device().why; }

extern "C" int tcu_fail(const char *call, const char *reason, const char *file, int line) {
    return tc_error("%s failed: %s (%s:%d)%s", call, reason, file, line, hint(reason));
}

extern "C" int tcu_after_launch(const char *op, const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        const char *r = cudaGetErrorString(e);
        return tc_error("%s: kernel launch failed: %s (%s:%d)%s", op, r, file, line, hint(r));
    }
    if (debug_sync() && !tc_cuda_is_capturing()) { /* a capture runs nothing to wait for */
        e = cudaStreamSynchronize(tcu_stream());
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return tc_error("%s: kernel failed: %s (%s:%d; TOCHA_DEBUG=1 synchronized after the launch)", op,
                            cudaGetErrorString(e), file, line);
        }
    }
    return TC_OK;
}

extern "C" cudaStream_t tcu_stream(void) { return device().stream; }

/* ---- queries ---------------------------------------------------------------------------- */
bool tc_cuda_is_available(void) { return device().ok; }

int tc_cuda_device_count(void) { return device().count; }

int tc_cuda_device_name(int index, char *buf, size_t n) {
    const device_state &d = device();
    if (!d.ok) return tc_error("get_device_name: cuda is not available (%s)", d.why);
    if (index < 0 || index >= d.count)
        return tc_error("get_device_name: there is no device %d (devices: 0 to %d)", index, d.count - 1);
    cudaDeviceProp p;
    TCU_CHECK(cudaGetDeviceProperties(&p, index));
    snprintf(buf, n, "%s", p.name);
    return TC_OK;
}

/* waits for the stream, so every pinned buffer a copy was reading can go back */
static int sync_stream(void) {
    TCU_CHECK(cudaStreamSynchronize(tcu_stream()));
    tcu_pinned_reap(true);
    return TC_OK;
}

int tc_cuda_synchronize(void) {
    if (!device().ok) return tc_error("synchronize: cuda is not available (%s)", device().why);
    if (tc_cuda_is_capturing()) return tc_cuda_capture_error("synchronize");
    return sync_stream();
}

/* ---- backend flags, read by the gemm and conv files ---------------------------------------- */
static std::atomic<bool> allow_tf32(false), cudnn_benchmark(false);

void tc_cuda_set_allow_tf32(bool on) { allow_tf32 = on; }
bool tc_cuda_allow_tf32(void) { return allow_tf32; }
void tc_cuda_set_cudnn_benchmark(bool on) { cudnn_benchmark = on; }
bool tc_cuda_cudnn_benchmark(void) { return cudnn_benchmark; }

/* ---- copies -----------------------------------------------------------------------------------
 * Between the host and the GPU, one cudaMemcpyAsync of a contiguous buffer in the transfer
 * dtype: the smaller of the two (fewer bytes over the bus; on a tie, the conversion runs on
 * the GPU). Each side first brings its tensor to that buffer (strides, broadcasts, dtype) with
 * its own copy kernel: tc_cpu_copy on the host, tc_cuda_copy_device on the GPU.
 * Host to GPU returns before the copy is done only when the host buffer is page-locked: a
 * pinned source, or pinned staging; that buffer is then held until the stream passes the
 * copy. From pageable memory the stream is synchronized (as PyTorch's blocking copy), so the
 * caller may free or overwrite its tensor at once. GPU to host always synchronizes, so the
 * values are there when it returns (item, tolist, printing). */
static bool on_gpu(const tc_tensor *t) { return t->storage->device.type == TC_CUDA; }

static bool is_buffer(const tc_tensor *t, tc_dtype dt) { return t->dtype == dt && tc_is_contiguous(t); }

static size_t bytes_of(const tc_tensor *t) { return (size_t)tc_numel(t) * tc_dtype_size(t->dtype); }

static int copy_to_device(tc_tensor *dst, const tc_tensor *src) {
    tc_dtype dt = tc_dtype_size(dst->dtype) < tc_dtype_size(src->dtype) ? dst->dtype : src->dtype;
    tc_tensor *h, *d;
    if (is_buffer(src, dt)) h = tc_tensor_retain((tc_tensor *)src);
    else { /* staging: page-locked when the cache can give it, so the copy stays asynchronous */
        h = tcu_pinned_empty(src->ndim, src->shape, dt);
        if (!h) h = tc_empty(src->ndim, src->shape, dt, TC_DEV_CPU);
        if (!h) return TC_ERR;
        if (tc_cpu_copy(h, src) != TC_OK) { tc_tensor_release(h); return TC_ERR; }
    }
    d = is_buffer(dst, dt) ? tc_tensor_retain(dst) : tc_empty(dst->ndim, dst->shape, dt, dst->storage->device);
    int rc = TC_ERR;
    if (d) {
        cudaError_t e = cudaMemcpyAsync(tc_data(d), tc_data(h), bytes_of(d), cudaMemcpyHostToDevice, tcu_stream());
        if (e != cudaSuccess) rc = tcu_fail("cudaMemcpyAsync (host to device)", cudaGetErrorString(e), __FILE__, __LINE__);
        else rc = h->storage->pinned ? tcu_pinned_hold(h->storage) : sync_stream();
        if (rc == TC_OK && d != dst) rc = tc_cuda_copy_device(dst, d);
    }
    tc_tensor_release(d); /* a device temporary goes back to the cache: stream order keeps it safe */
    tc_tensor_release(h);
    return rc;
}

static int copy_to_host(tc_tensor *dst, const tc_tensor *src) {
    tc_dtype dt = tc_dtype_size(src->dtype) < tc_dtype_size(dst->dtype) ? src->dtype : dst->dtype;
    tc_tensor *d, *h = NULL;
    if (is_buffer(src, dt)) d = tc_tensor_retain((tc_tensor *)src);
    else {
        d = tc_empty(src->ndim, src->shape, dt, src->storage->device);
        if (d && tc_cuda_copy_device(d, src) != TC_OK) { tc_tensor_release(d); return TC_ERR; }
    }
    if (!d) return TC_ERR;
    h = is_buffer(dst, dt) ? tc_tensor_retain(dst) : tc_empty(dst->ndim, dst->shape, dt, TC_DEV_CPU);
    int rc = TC_ERR;
    if (h) {
        cudaError_t e = cudaMemcpyAsync(tc_data(h), tc_data(d), bytes_of(h), cudaMemcpyDeviceToHost, tcu_stream());
        if (e != cudaSuccess) rc = tcu_fail("cudaMemcpyAsync (device to host)", cudaGetErrorString(e), __FILE__, __LINE__);
        else rc = sync_stream();
        if (rc == TC_OK && h != dst) rc = tc_cpu_copy(dst, h);
    }
    tc_tensor_release(h);
    tc_tensor_release(d);
    return rc;
}

extern "C" int tc_cuda_copy(tc_tensor *dst, const tc_tensor *src) {
    if (dst->ndim != src->ndim || memcmp(dst->shape, src->shape, sizeof(int64_t) * (size_t)dst->ndim) != 0) {
        char a[128], b[128];
        tc_shape_str(src->ndim, src->shape, a, sizeof a);
        tc_shape_str(dst->ndim, dst->shape, b, sizeof b);
        return tc_error("copy: source of shape %s for a destination of shape %s", a, b);
    }
    if (tc_numel(dst) == 0) return TC_OK;
    bool dg = on_gpu(dst), sg = on_gpu(src);
    if (dg && sg) return tc_cuda_copy_device(dst, src);
    if (!dg && !sg) return tc_cpu_copy(dst, src);
    if (tc_cuda_is_capturing())
        return tc_cuda_capture_error(dg ? "a copy from the CPU to the GPU" : "a copy from the GPU to the CPU (reading a value: item, tolist, printing)");
    tcu_pinned_reap(false); /* pinned buffers of copies done by now go back to the cache */
    return dg ? copy_to_device(dst, src) : copy_to_host(dst, src);
}
