/* graph.cpp (cudaemu): stream capture and CUDA graphs. While a stream captures, the launches,
 * asynchronous copies and memsets queued on it (and the emulated cuDNN's convolutions) are
 * recorded instead of run; cudaStreamEndCapture makes the recording a graph, and a launch of
 * its instantiation runs the recording in order. What CUDA forbids during a capture fails with
 * CUDA's codes and invalidates the capture (cudaStreamEndCapture then fails): synchronizing
 * the capturing stream or the device, and, unless the capture or the thread is in relaxed
 * mode, the "potentially unsafe" calls (cudaMalloc, cudaFree, synchronous copies...). One
 * capture at a time. */
#include <memory> /* before emu.h: the standard headers use __noinline__, which it defines */
#include <mutex>
#include <set>
#include <vector>

#include "emu.h"

namespace {
struct op {
    dim3 grid, block; /* grid.x 0: a host step (a copy, a memset, a convolution) */
    size_t shmem;
    void (*call)(void *);
    std::shared_ptr<void> ctx; /* shared by a graph and its instantiations */
};

struct capture {
    bool active = false, invalidated = false;
    cudaStream_t stream = NULL;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    const char *why = NULL; /* the call that invalidated it */
    std::vector<op> ops;
};

std::mutex mu; /* the capture and the graph registries */
capture cap;
thread_local cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;
std::set<const void *> graphs, execs;
} // namespace

struct CUgraph_st { std::vector<op> ops; };
struct CUgraphExec_st { std::vector<op> ops; };

bool tcu_emu_capturing(cudaStream_t s) {
    std::lock_guard<std::mutex> g(mu);
    return cap.active && s == cap.stream && s != NULL;
}

void tcu_emu_record(cudaStream_t s, dim3 grid, dim3 block, size_t shmem, void (*call)(void *), void *ctx,
                    void (*del)(void *)) {
    std::shared_ptr<void> owned(ctx, del);
    std::lock_guard<std::mutex> g(mu);
    if (!cap.active || s != cap.stream) return;
    if (cap.invalidated) {
        tcu_emu_fail(cudaErrorStreamCaptureInvalidated, "the capture was invalidated earlier by %s", cap.why);
        return;
    }
    cap.ops.push_back(op{grid, block, shmem, call, owned});
}

/* a call CUDA forbids during a capture: fails it (and invalidates the capture) when one is
 * active, unless relaxed mode allows it (relaxed_ok) */
bool tcu_emu_capture_forbids(const char *what, bool relaxed_ok) {
    std::lock_guard<std::mutex> g(mu);
    if (!cap.active) return false;
    if (relaxed_ok && (cap.mode == cudaStreamCaptureModeRelaxed || thread_mode == cudaStreamCaptureModeRelaxed))
        return false;
    if (!cap.invalidated) cap.why = what;
    cap.invalidated = true;
    tcu_emu_fail(cudaErrorStreamCaptureUnsupported, "%s while a stream is capturing", what);
    return true;
}

/* a synchronization of stream s: forbidden on the capturing stream */
bool tcu_emu_capture_forbids_sync(cudaStream_t s, const char *what) {
    {
        std::lock_guard<std::mutex> g(mu);
        if (!cap.active || (s != cap.stream && s != NULL && s != cudaStreamLegacy)) return false;
    }
    return tcu_emu_capture_forbids(what, false);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    if (tcu_emu_no_device()) return tcu_emu_fail(cudaErrorNoDevice, NULL);
    if (!tcu_emu_stream_ok(stream)) return tcu_emu_fail(cudaErrorInvalidResourceHandle, NULL);
    if (stream == NULL || stream == cudaStreamLegacy)
        return tcu_emu_fail(cudaErrorStreamCaptureUnsupported, "the legacy default stream cannot capture");
    if ((unsigned)mode > cudaStreamCaptureModeRelaxed) return tcu_emu_fail(cudaErrorInvalidValue, NULL);
    std::lock_guard<std::mutex> g(mu);
    if (cap.active) return tcu_emu_fail(cudaErrorIllegalState, "a stream is already capturing (one at a time here)");
    cap = capture();
    cap.active = true;
    cap.stream = stream;
    cap.mode = mode;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    if (!graph) return tcu_emu_fail(cudaErrorInvalidValue, NULL);
    *graph = NULL;
    std::lock_guard<std::mutex> g(mu);
    if (!cap.active || stream != cap.stream) return tcu_emu_fail(cudaErrorIllegalState, "the stream is not capturing");
    bool bad = cap.invalidated;
    const char *why = cap.why;
    std::vector<op> ops;
    ops.swap(cap.ops);
    cap = capture();
    if (bad) return tcu_emu_fail(cudaErrorStreamCaptureInvalidated, "invalidated by %s", why);
    cudaGraph_t gr = new CUgraph_st{ops};
    graphs.insert(gr);
    *graph = gr;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status) {
    if (!status) return tcu_emu_fail(cudaErrorInvalidValue, NULL);
    if (!tcu_emu_stream_ok(stream)) return tcu_emu_fail(cudaErrorInvalidResourceHandle, NULL);
    std::lock_guard<std::mutex> g(mu);
    if (cap.active && (stream == NULL || stream == cudaStreamLegacy) && cap.mode != cudaStreamCaptureModeRelaxed) {
        /* asking about the legacy stream while another captures is itself unsafe */
        if (!cap.invalidated) cap.why = "cudaStreamIsCapturing on the legacy stream";
        cap.invalidated = true;
        return tcu_emu_fail(cudaErrorStreamCaptureImplicit, NULL);
    }
    *status = !cap.active || stream != cap.stream ? cudaStreamCaptureStatusNone
              : cap.invalidated                   ? cudaStreamCaptureStatusInvalidated
                                                  : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
    if (!mode || (unsigned)*mode > cudaStreamCaptureModeRelaxed) return tcu_emu_fail(cudaErrorInvalidValue, NULL);
    cudaStreamCaptureMode old = thread_mode;
    thread_mode = *mode;
    *mode = old;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    if (!exec || flags) return tcu_emu_fail(cudaErrorInvalidValue, NULL);
    std::lock_guard<std::mutex> g(mu);
    if (!graphs.count(graph)) return tcu_emu_fail(cudaErrorInvalidValue, "not a live graph");
    cudaGraphExec_t e = new CUgraphExec_st{graph->ops};
    execs.insert(e);
    *exec = e;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    if (tcu_emu_no_device()) return tcu_emu_fail(cudaErrorNoDevice, NULL);
    if (!tcu_emu_stream_ok(stream)) return tcu_emu_fail(cudaErrorInvalidResourceHandle, NULL);
    std::vector<op> ops;
    {
        std::lock_guard<std::mutex> g(mu);
        if (!execs.count(exec)) return tcu_emu_fail(cudaErrorInvalidValue, "not a live graph instantiation");
        if (cap.active && stream == cap.stream)
            return tcu_emu_fail(cudaErrorNotSupported, "launching a graph into a capture (not emulated)");
        ops = exec->ops;
    }
    (void)cudaGetLastError();
    for (const op &o : ops) {
        if (o.grid.x == 0) o.call(o.ctx.get());
        else tcu_emu_run(o.grid, o.block, o.shmem, o.call, o.ctx.get());
        cudaError_t e = cudaPeekAtLastError();
        if (e != cudaSuccess) return e; /* a kernel of the graph failed: as on the GPU, the launch reports it */
    }
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    std::lock_guard<std::mutex> g(mu);
    if (!execs.erase(exec)) return tcu_emu_fail(cudaErrorInvalidValue, NULL);
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    std::lock_guard<std::mutex> g(mu);
    if (!graphs.erase(graph)) return tcu_emu_fail(cudaErrorInvalidValue, NULL);
    delete graph;
    return cudaSuccess;
}
