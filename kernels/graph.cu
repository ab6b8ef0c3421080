/* graph.cu: CUDA graphs. A graph captures the work queued on tocha's stream between _begin and
 * _end (cudaStreamBeginCapture in global mode: a call that would break the capture fails) and
 * replays it with one cudaGraphLaunch. Its device memory comes from a private pool of the
 * caching allocator (alloc.cu), so every replay finds the addresses the capture used. */
#include "runtime.h"

#include <new>
#include <vector>

struct tc_cuda_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    tcu_graph_pool *pool;
    bool capturing;
};

static tc_cuda_graph *capturing_graph; /* one capture at a time: there is one stream */
/* graphs freed while another captures (a Lua collection may run then): released after it,
 * since the release synchronizes and gives memory to the driver, which a capture forbids */
static std::vector<tc_cuda_graph *> deferred;

bool tc_cuda_is_capturing(void) { return capturing_graph != NULL; }

int tc_cuda_capture_error(const char *what) {
    return tc_error("%s during CUDA graph capture: the graph would not replay it (the capture is "
                    "recorded, not run); do it before or after capturing",
                    what);
}

tc_cuda_graph *tc_cuda_graph_begin(void) {
    if (!tc_cuda_is_available()) {
        tc_error("cuda graph: cuda is not available (%s)", tc_cuda_unavailable_reason());
        return NULL;
    }
    if (capturing_graph) {
        tc_error("cuda graph: a graph is already capturing (captures do not nest)");
        return NULL;
    }
    tc_cuda_graph *g = new (std::nothrow) tc_cuda_graph();
    if (!g) { tc_error("cuda graph: out of host memory"); return NULL; }
    tcu_pinned_reap(false);
    if (!(g->pool = tcu_graph_pool_new())) { delete g; return NULL; }
    cudaError_t e = cudaStreamBeginCapture(tcu_stream(), cudaStreamCaptureModeGlobal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        tcu_fail("cudaStreamBeginCapture", cudaGetErrorString(e), __FILE__, __LINE__);
        (void)tcu_graph_pool_release(g->pool);
        delete g;
        return NULL;
    }
    if (tcu_graph_pool_capture(g->pool) != TC_OK) { /* cannot happen: capturing_graph was NULL */
        cudaGraph_t dropped;
        (void)cudaStreamEndCapture(tcu_stream(), &dropped);
        (void)cudaGetLastError();
        if (dropped) (void)cudaGraphDestroy(dropped);
        (void)tcu_graph_pool_release(g->pool);
        delete g;
        return NULL;
    }
    g->capturing = true;
    capturing_graph = g;
    return g;
}

/* ends g's capture; the recorded graph, when the capture was valid, in g->graph */
static cudaError_t stop_capture(tc_cuda_graph *g) {
    g->capturing = false;
    capturing_graph = NULL;
    (void)tcu_graph_pool_capture(NULL);
    cudaError_t e = cudaStreamEndCapture(tcu_stream(), &g->graph);
    if (e != cudaSuccess) (void)cudaGetLastError();
    std::vector<tc_cuda_graph *> later;
    later.swap(deferred);
    for (tc_cuda_graph *d : later) (void)tc_cuda_graph_free(d); /* errors here belong to no caller */
    return e;
}

int tc_cuda_graph_end(tc_cuda_graph *g) {
    if (!g->capturing) return tc_error("cuda graph: the graph is not capturing");
    cudaError_t e = stop_capture(g);
    if (e != cudaSuccess)
        return tc_error("cuda graph: the capture failed: %s (an operation during the capture was not allowed "
                        "there: a synchronization, a copy to or from the host, a cudaMalloc outside the graph's "
                        "pool; the first error raised during the capture names it)",
                        cudaGetErrorString(e));
    TCU_CHECK(cudaGraphInstantiate(&g->exec, g->graph, 0));
    return TC_OK;
}

int tc_cuda_graph_replay(tc_cuda_graph *g) {
    if (g->capturing) return tc_error("cuda graph: replay during its own capture");
    if (!g->exec) return tc_error("cuda graph: the graph holds no finished capture");
    if (capturing_graph) return tc_error("cuda graph: replay while another graph captures");
    TCU_CHECK(cudaGraphLaunch(g->exec, tcu_stream()));
    return TC_OK;
}

size_t tc_cuda_graph_pool_bytes(const tc_cuda_graph *g) { return g->pool ? tcu_graph_pool_reserved(g->pool) : 0; }

int tc_cuda_graph_free(tc_cuda_graph *g) {
    if (!g) return TC_OK;
    if (capturing_graph && capturing_graph != g) {
        deferred.push_back(g);
        return TC_OK;
    }
    int rc = TC_OK;
    if (g->capturing) (void)stop_capture(g); /* an abandoned capture: the device stays usable */
    /* a replay may still run: the pool's memory goes back only after it */
    if (g->exec || g->graph) {
        cudaError_t e = cudaStreamSynchronize(tcu_stream());
        if (e != cudaSuccess) { (void)cudaGetLastError(); rc = tcu_fail("cudaStreamSynchronize", cudaGetErrorString(e), __FILE__, __LINE__); }
    }
    if (g->exec) {
        cudaError_t e = cudaGraphExecDestroy(g->exec);
        if (e != cudaSuccess && rc == TC_OK) rc = tcu_fail("cudaGraphExecDestroy", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    if (g->graph) {
        cudaError_t e = cudaGraphDestroy(g->graph);
        if (e != cudaSuccess && rc == TC_OK) rc = tcu_fail("cudaGraphDestroy", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    if (g->pool) {
        int r = tcu_graph_pool_release(g->pool);
        if (rc == TC_OK) rc = r;
    }
    delete g;
    return rc;
}
