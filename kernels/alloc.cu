/* alloc.cu: the caching allocators of the cuda device. Device memory (tc_cuda_alloc/free: tensors
 * and the kernels' temporaries) and page-locked host memory (pinned tensors, staging for copies)
 * are each kept in a pool of freed blocks by size class and handed out again without a driver
 * call; tc_cuda_empty_cache gives the unused ones back. Out of device memory: empty the cache,
 * let the binding collect garbage, empty it again, retry once, then fail with the sizes. While
 * a CUDA graph captures, device memory comes from the graph's private pool (graph pools below). */
#include "runtime.h"

#include <map>
#include <new>
#include <mutex>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unordered_map>
#include <vector>

extern "C" int tc_cpu_copy(tc_tensor *dst, const tc_tensor *src); /* core/cpu/cpu.h, a C header */

namespace {
const size_t KiB = 1024, MiB = 1024 * KiB;
const size_t LARGEST = (size_t)1 << 60; /* asks past this are out of memory without trying */

/* ---- sizes ------------------------------------------------------------------------------------
 * A request rounds up to a multiple of 512 B below 1 MiB, of 256 KiB below 32 MiB, and of
 * 2 MiB above: at most a quarter wasted, and a training loop's repeating sizes land on the
 * same classes. A cached block serves a request of its size or up to a quarter smaller. */
size_t round_size(size_t n) {
    size_t q = n < MiB ? 512 : n < 32 * MiB ? 256 * KiB : 2 * MiB;
    return ((n ? n : 1) + q - 1) / q * q;
}

/* "1.50 MiB" */
const char *human(size_t n, char *buf, size_t cap) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 6) { v /= 1024; u++; }
    if (u == 0) snprintf(buf, cap, "%zu B", n);
    else snprintf(buf, cap, "%.2f %s", v, units[u]);
    return buf;
}

/* ---- a pool of blocks ---------------------------------------------------------------------------
 * Blocks are tagged with the stream they were handed out on and only reused on it: work
 * queued on that stream before the free finishes before work queued after the reuse, so a
 * block freed while a kernel may still read it can go to the next op at once. tocha has one
 * stream, so every device block carries tcu_stream(); host blocks carry none (their pending
 * copies are waited for before they reach the pool: tcu_pinned_hold). The mutex guards the
 * maps and counters only; no driver call and no hook runs under it, so a Lua collection
 * that frees tensors may re-enter freely. */
struct block_pool {
    std::mutex mu;
    std::multimap<size_t, std::pair<void *, cudaStream_t>> cached; /* size -> block, stream */
    std::unordered_map<void *, std::pair<size_t, cudaStream_t>> used;
    std::vector<void *> held; /* a graph's pool: blocks of the device pool its capture freed */
    size_t allocated = 0, max_allocated = 0, reserved = 0, max_reserved = 0;
    int64_t allocs = 0, frees = 0, cache_hits = 0, driver_allocs = 0, driver_frees = 0, ooms = 0;

    void hand_out(void *p, size_t size, cudaStream_t s) { /* mu held */
        used[p] = std::make_pair(size, s);
        allocated += size;
        if (allocated > max_allocated) max_allocated = allocated;
        allocs++;
    }
    /* a cached block for size on stream s, or NULL */
    void *take(size_t size, cudaStream_t s) {
        std::lock_guard<std::mutex> g(mu);
        for (auto it = cached.lower_bound(size); it != cached.end() && it->first <= size + size / 4; ++it) {
            if (it->second.second != s) continue;
            void *p = it->second.first;
            size_t got = it->first;
            cached.erase(it);
            hand_out(p, got, s);
            cache_hits++;
            return p;
        }
        return NULL;
    }
    void add_new(void *p, size_t size, cudaStream_t s) { /* just allocated from the driver */
        std::lock_guard<std::mutex> g(mu);
        reserved += size;
        if (reserved > max_reserved) max_reserved = reserved;
        driver_allocs++;
        hand_out(p, size, s);
    }
    void give_back(void *p) {
        std::lock_guard<std::mutex> g(mu);
        auto it = used.find(p);
        if (it == used.end()) return; /* not ours: nothing to do (never expected) */
        cached.emplace(it->second.first, std::make_pair(p, it->second.second));
        allocated -= it->second.first;
        frees++;
        used.erase(it);
    }
    /* removes every cached block from the pool; the caller gives them to the driver */
    std::vector<void *> drain(void) {
        std::lock_guard<std::mutex> g(mu);
        std::vector<void *> out;
        for (auto &c : cached) {
            out.push_back(c.second.first);
            reserved -= c.first;
        }
        driver_frees += (int64_t)cached.size();
        cached.clear();
        return out;
    }
    size_t cached_bytes(void) {
        std::lock_guard<std::mutex> g(mu);
        return reserved - allocated;
    }
    void count_oom(void) {
        std::lock_guard<std::mutex> g(mu);
        ooms++;
    }
};

/* never destroyed: a tensor freed while the process exits must still find its pool */
block_pool &device_pool(void) {
    static block_pool *p = new block_pool;
    return *p;
}
block_pool &host_pool(void) {
    static block_pool *p = new block_pool;
    return *p;
}

/* gives the cached blocks of a pool back to the driver; the first failure is reported */
int drain_to_driver(block_pool &pool, bool host) {
    int rc = TC_OK;
    for (void *p : pool.drain()) {
        cudaError_t e = host ? cudaFreeHost(p) : cudaFree(p); /* both wait for the device first */
        if (e != cudaSuccess && rc == TC_OK)
            rc = tcu_fail(host ? "cudaFreeHost" : "cudaFree", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    return rc;
}

/* ---- the out-of-memory hook --------------------------------------------------------------- */
std::mutex hook_mu;
void (*oom_hook)(void *ctx);
void *oom_ctx;
thread_local bool in_hook; /* an allocation the hook's collection makes does not recurse */

void run_oom_hook(void) {
    void (*h)(void *);
    void *ctx;
    {
        std::lock_guard<std::mutex> g(hook_mu);
        h = oom_hook;
        ctx = oom_ctx;
    }
    if (!h || in_hook) return;
    in_hook = true;
    h(ctx);
    in_hook = false;
}

int out_of_memory(size_t asked) {
    block_pool &pool = device_pool();
    pool.count_oom();
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    size_t in_use, cached;
    {
        std::lock_guard<std::mutex> g(pool.mu);
        in_use = pool.allocated;
        cached = pool.reserved - pool.allocated;
    }
    char a[32], u[32], c[32], t[32], f[32];
    return tc_error("cuda: out of memory allocating %s (in use %s, cached %s; device total %s, free %s)",
                    human(asked, a, sizeof a), human(in_use, u, sizeof u), human(cached, c, sizeof c),
                    human(total_b, t, sizeof t), human(free_b, f, sizeof f));
}
} // namespace

/* ---- device memory ---------------------------------------------------------------------------- */
/* TOCHA_CUDA_NO_CACHE=1: exact sizes and no cache, every free goes to the driver at once
 * (slow; for compute-sanitizer, which then sees a read past a tensor's end) */
static bool no_cache(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("TOCHA_CUDA_NO_CACHE");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

static void *graph_alloc(block_pool &pool, size_t nbytes);
static block_pool *capture_pool(void);
static bool graph_free(void *p);

extern "C" void *tc_cuda_alloc(size_t nbytes) {
    if (nbytes > LARGEST) { out_of_memory(nbytes); return NULL; }
    if (block_pool *gp = capture_pool()) return graph_alloc(*gp, nbytes);
    block_pool &pool = device_pool();
    size_t size = no_cache() ? (nbytes ? nbytes : 1) : round_size(nbytes);
    cudaStream_t s = tcu_stream();
    void *p = pool.take(size, s);
    if (p) return p;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) { /* the failed call leaves its error for cudaGetLastError: clear it */
        (void)cudaGetLastError();
        drain_to_driver(pool, false);
        run_oom_hook();
        drain_to_driver(pool, false);
        e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (e == cudaErrorMemoryAllocation) out_of_memory(nbytes);
        else tcu_fail("cudaMalloc", cudaGetErrorString(e), __FILE__, __LINE__);
        return NULL;
    }
    pool.add_new(p, size, s);
    return p;
}

extern "C" void tc_cuda_free(void *p) {
    if (!p || graph_free(p)) return;
    device_pool().give_back(p);
    if (no_cache()) drain_to_driver(device_pool(), false);
}

void tc_cuda_set_oom_hook(void (*hook)(void *ctx), void *ctx) {
    std::lock_guard<std::mutex> g(hook_mu);
    oom_hook = hook;
    oom_ctx = ctx;
}

/* ---- graph pools ---------------------------------------------------------------------------
 * While a graph captures, tc_cuda_alloc hands out blocks of the graph's own pool: cached ones
 * its capture freed, or new ones from cudaMalloc in relaxed capture mode (the allocation itself
 * is not part of the graph; CUDA forbids cudaMalloc during a capture otherwise). Blocks the
 * capture frees go back to that pool, so later allocations of the same capture reuse them in
 * the graph's own order, and no one else gets them while the graph lives: each replay writes
 * where the capture did. A block of the device pool freed during the capture is held by the
 * graph too (the graph may still read it). Releasing the graph gives its free blocks to the
 * driver, its held ones back to the device pool's cache, and moves blocks still in use
 * (tensors made during the capture) to the device pool, where their release caches them. */
namespace {
std::mutex graphs_mu;
std::vector<block_pool *> graph_pools; /* the live ones */
block_pool *capturing;                 /* the one allocations come from, or NULL */
} // namespace

static block_pool *capture_pool(void) {
    std::lock_guard<std::mutex> g(graphs_mu);
    return capturing;
}

static void *graph_alloc(block_pool &pool, size_t nbytes) {
    size_t size = round_size(nbytes);
    cudaStream_t s = tcu_stream();
    void *p = pool.take(size, s);
    if (p) return p;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaError_t e = cudaThreadExchangeStreamCaptureMode(&mode);
    if (e == cudaSuccess) {
        e = cudaMalloc(&p, size);
        cudaError_t r = cudaThreadExchangeStreamCaptureMode(&mode);
        if (e == cudaSuccess) e = r;
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        char a[32];
        tc_error("cuda graph: allocating %s for the graph's memory pool during capture failed: %s "
                 "(the cache is not emptied while a graph captures)",
                 human(nbytes, a, sizeof a), cudaGetErrorString(e));
        return NULL;
    }
    pool.add_new(p, size, s);
    return p;
}

/* a block of a graph's pool goes back to it; one of the device pool freed during a capture is
 * held by the capturing graph. False: neither, the device pool takes it. */
static bool graph_free(void *p) {
    std::lock_guard<std::mutex> g(graphs_mu);
    for (block_pool *gp : graph_pools) {
        bool mine;
        {
            std::lock_guard<std::mutex> pg(gp->mu);
            mine = gp->used.count(p) != 0;
        }
        if (mine) {
            gp->give_back(p);
            return true;
        }
    }
    if (!capturing) return false;
    block_pool &d = device_pool();
    std::lock_guard<std::mutex> dg(d.mu);
    if (!d.used.count(p)) return false;
    std::lock_guard<std::mutex> pg(capturing->mu);
    capturing->held.push_back(p);
    return true;
}

tcu_graph_pool *tcu_graph_pool_new(void) {
    block_pool *gp = new (std::nothrow) block_pool;
    if (!gp) { tc_error("cuda graph: out of host memory"); return NULL; }
    std::lock_guard<std::mutex> g(graphs_mu);
    graph_pools.push_back(gp);
    return (tcu_graph_pool *)gp;
}

int tcu_graph_pool_capture(tcu_graph_pool *pool) {
    std::lock_guard<std::mutex> g(graphs_mu);
    if (pool && capturing) return tc_error("cuda graph: another graph is capturing");
    capturing = (block_pool *)pool;
    return TC_OK;
}

size_t tcu_graph_pool_reserved(tcu_graph_pool *pool) {
    block_pool *gp = (block_pool *)pool;
    std::lock_guard<std::mutex> g(gp->mu);
    return gp->reserved;
}

int tcu_graph_pool_release(tcu_graph_pool *pool) {
    block_pool *gp = (block_pool *)pool;
    {
        std::lock_guard<std::mutex> g(graphs_mu);
        if (capturing == gp) capturing = NULL;
        for (size_t i = 0; i < graph_pools.size(); i++)
            if (graph_pools[i] == gp) { graph_pools.erase(graph_pools.begin() + (ptrdiff_t)i); break; }
    }
    block_pool &d = device_pool();
    for (void *p : gp->held) d.give_back(p);
    {
        std::lock_guard<std::mutex> dg(d.mu);
        std::lock_guard<std::mutex> pg(gp->mu);
        for (auto &u : gp->used) {
            d.used[u.first] = u.second;
            d.allocated += u.second.first;
            d.reserved += u.second.first;
            gp->reserved -= u.second.first;
        }
        if (d.allocated > d.max_allocated) d.max_allocated = d.allocated;
        if (d.reserved > d.max_reserved) d.max_reserved = d.reserved;
        gp->used.clear();
        gp->allocated = 0;
    }
    int rc = drain_to_driver(*gp, false);
    delete gp;
    return rc;
}

/* ---- page-locked host memory ------------------------------------------------------------------ */
static void *pinned_alloc(size_t nbytes) {
    block_pool &pool = host_pool();
    char a[32], u[32], c[32];
    if (nbytes > LARGEST) {
        tc_error("pin_memory: out of page-locked host memory allocating %s", human(nbytes, a, sizeof a));
        return NULL;
    }
    size_t size = round_size(nbytes);
    void *p = pool.take(size, cudaStream_t());
    if (p) return p;
    tcu_pinned_reap(false); /* blocks whose copies are done return to the pool */
    if ((p = pool.take(size, cudaStream_t()))) return p;
    cudaError_t e = cudaMallocHost(&p, size);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        drain_to_driver(pool, true);
        e = cudaMallocHost(&p, size);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        pool.count_oom();
        size_t in_use;
        {
            std::lock_guard<std::mutex> g(pool.mu);
            in_use = pool.allocated;
        }
        tc_error("pin_memory: cudaMallocHost failed allocating %s: %s (pinned in use %s, cached %s)",
                 human(nbytes, a, sizeof a), cudaGetErrorString(e), human(in_use, u, sizeof u),
                 human(pool.cached_bytes(), c, sizeof c));
        return NULL;
    }
    pool.add_new(p, size, cudaStream_t());
    return p;
}

static void pinned_release(void *p) { host_pool().give_back(p); }

tc_tensor *tcu_pinned_empty(int ndim, const int64_t *shape, tc_dtype dt) {
    size_t nbytes = (size_t)tc_shape_numel(ndim, shape) * tc_dtype_size(dt);
    void *p = pinned_alloc(nbytes);
    if (!p) return NULL;
    tc_storage *s = tc_storage_wrap(p, nbytes, pinned_release, p);
    if (!s) { pinned_release(p); return NULL; }
    s->pinned = true;
    tc_tensor *t = tc_tensor_make(s, dt, ndim, shape, NULL, 0);
    tc_storage_release(s); /* t holds it now (or, when t failed, the block went back) */
    return t;
}

tc_tensor *tc_pin_memory(tc_tensor *x) {
    if (x->storage->device.type != TC_CPU) {
        char d[32];
        tc_device_str(x->storage->device, d, sizeof d);
        tc_error("pin_memory: the tensor is on %s; only CPU tensors can be pinned", d);
        return NULL;
    }
    if (x->storage->pinned) return tc_tensor_retain(x);
    if (!tc_cuda_is_available()) {
        tc_error("pin_memory: cuda is not available (%s)", tc_cuda_unavailable_reason());
        return NULL;
    }
    tc_tensor *t = tcu_pinned_empty(x->ndim, x->shape, x->dtype);
    if (t && tc_cpu_copy(t, x) != TC_OK) {
        tc_tensor_release(t);
        return NULL;
    }
    return t;
}

bool tc_is_pinned(const tc_tensor *x) { return x->storage->pinned; }

/* ---- holding pinned buffers until their copies are done ------------------------------------
 * An asynchronous copy from page-locked memory reads it later, on the stream: its storage is
 * held (one reference) with an event recorded after the copy, and released once the event
 * has passed. Events complete in stream order, so the scan stops at the first pending one. */
namespace {
struct held_copy {
    tc_storage *storage;
    cudaEvent_t done;
};
struct held_list {
    std::mutex mu;
    std::vector<held_copy> copies; /* in the order they were queued */
    std::vector<cudaEvent_t> spare_events;
};
held_list &holds(void) {
    static held_list *h = new held_list; /* never destroyed, as the pools */
    return *h;
}
} // namespace

int tcu_pinned_hold(tc_storage *s) {
    held_list &h = holds();
    cudaEvent_t ev = cudaEvent_t();
    {
        std::lock_guard<std::mutex> g(h.mu);
        if (!h.spare_events.empty()) { ev = h.spare_events.back(); h.spare_events.pop_back(); }
    }
    cudaError_t e = ev ? cudaSuccess : cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e == cudaSuccess) {
        e = cudaEventRecord(ev, tcu_stream());
        if (e != cudaSuccess) (void)cudaEventDestroy(ev);
    }
    if (e != cudaSuccess) { /* without an event, wait for the copy here */
        (void)cudaGetLastError();
        TCU_CHECK(cudaStreamSynchronize(tcu_stream()));
        return TC_OK;
    }
    tc_storage_retain(s);
    std::lock_guard<std::mutex> g(h.mu);
    h.copies.push_back(held_copy{s, ev});
    return TC_OK;
}

void tcu_pinned_reap(bool all) {
    held_list &h = holds();
    std::vector<tc_storage *> done;
    {
        std::lock_guard<std::mutex> g(h.mu);
        size_t n = 0;
        for (; n < h.copies.size(); n++) {
            if (!all) {
                cudaError_t e = cudaEventQuery(h.copies[n].done);
                if (e == cudaErrorNotReady) { (void)cudaGetLastError(); break; } /* not an error: don't leave it set */
                if (e != cudaSuccess) (void)cudaGetLastError(); /* a failed stream reads no more: let it go */
            }
            done.push_back(h.copies[n].storage);
            h.spare_events.push_back(h.copies[n].done);
        }
        h.copies.erase(h.copies.begin(), h.copies.begin() + (ptrdiff_t)n);
    }
    for (tc_storage *s : done) tc_storage_release(s); /* outside the lock: the release takes the pool's */
}

/* ---- stats, cache, summary -------------------------------------------------------------------- */
int tc_cuda_memory(tc_cuda_memory_stats *out) {
    memset(out, 0, sizeof *out);
    block_pool &d = device_pool(), &h = host_pool();
    {
        std::lock_guard<std::mutex> g(d.mu);
        out->allocated = d.allocated;
        out->max_allocated = d.max_allocated;
        out->reserved = d.reserved;
        out->max_reserved = d.max_reserved;
        out->allocs = d.allocs;
        out->frees = d.frees;
        out->cache_hits = d.cache_hits;
        out->driver_allocs = d.driver_allocs;
        out->driver_frees = d.driver_frees;
        out->ooms = d.ooms;
    }
    {
        std::lock_guard<std::mutex> g(graphs_mu);
        for (block_pool *gp : graph_pools) {
            std::lock_guard<std::mutex> pg(gp->mu);
            out->allocated += gp->allocated;
            out->reserved += gp->reserved;
            out->graph_reserved += gp->reserved;
        }
    }
    std::lock_guard<std::mutex> g(h.mu);
    out->pinned_allocated = h.allocated;
    out->pinned_reserved = h.reserved;
    return TC_OK;
}

void tc_cuda_reset_peak(void) {
    block_pool &d = device_pool();
    std::lock_guard<std::mutex> g(d.mu);
    d.max_allocated = d.allocated;
    d.max_reserved = d.reserved;
}

int tc_cuda_empty_cache(void) {
    if (!tc_cuda_is_available()) return TC_OK; /* nothing was ever cached */
    if (capture_pool()) return tc_error("empty_cache: a CUDA graph is capturing (cudaFree is not allowed then)");
    tcu_pinned_reap(false);
    int rc = drain_to_driver(device_pool(), false);
    int rh = drain_to_driver(host_pool(), true);
    return rc != TC_OK ? rc : rh;
}

namespace {
/* appends to a fixed buffer, truncating */
struct text {
    char *buf;
    size_t cap, len;
    void add(const char *fmt, ...) __attribute__((format(printf, 2, 3))) {
        if (len >= cap) return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf + len, cap - len, fmt, ap);
        va_end(ap);
        if (n > 0) len = len + (size_t)n < cap ? len + (size_t)n : cap;
    }
};
} // namespace

int tc_cuda_memory_summary(char *buf, size_t n) {
    if (n == 0) return TC_OK;
    buf[0] = 0;
    text out = {buf, n, 0};
    if (!tc_cuda_is_available()) {
        out.add("cuda memory: cuda is not available (%s)\n", tc_cuda_unavailable_reason());
        return TC_OK;
    }
    char name[256] = "?", a[32], b[32];
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) snprintf(name, sizeof name, "%s", p.name);
    else (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    tc_cuda_memory_stats s;
    tc_cuda_memory(&s);
    out.add("cuda memory: cuda:0 %s (total %s, free %s)\n", name, human(total_b, a, sizeof a),
            human(free_b, b, sizeof b));
    out.add("  %-16s %14s %14s\n", "", "now", "peak");
    out.add("  %-16s %14s %14s\n", "allocated", human(s.allocated, a, sizeof a), human(s.max_allocated, b, sizeof b));
    out.add("  %-16s %14s %14s\n", "reserved", human(s.reserved, a, sizeof a), human(s.max_reserved, b, sizeof b));
    out.add("  %-16s %14s\n", "cached", human(s.reserved - s.allocated, a, sizeof a));
    out.add("  %-16s %14s   (held %s)\n", "pinned host", human(s.pinned_allocated, a, sizeof a),
            human(s.pinned_reserved, b, sizeof b));
    out.add("  allocations %lld (%lld from the cache, %lld from the driver), frees %lld, "
            "blocks given back %lld, out of memory %lld\n",
            (long long)s.allocs, (long long)s.cache_hits, (long long)s.driver_allocs, (long long)s.frees,
            (long long)s.driver_frees, (long long)s.ooms);
    /* cached device blocks, by size */
    std::vector<std::pair<size_t, int>> sizes;
    {
        block_pool &d = device_pool();
        std::lock_guard<std::mutex> g(d.mu);
        for (auto &c : d.cached) {
            if (sizes.empty() || sizes.back().first != c.first) sizes.push_back(std::make_pair(c.first, 0));
            sizes.back().second++;
        }
    }
    out.add("  cached blocks:%s", sizes.empty() ? " none" : "");
    const size_t shown = 16;
    for (size_t i = 0; i < sizes.size() && i < shown; i++)
        out.add("%s %s x %d", i ? "," : "", human(sizes[i].first, a, sizeof a), sizes[i].second);
    if (sizes.size() > shown) out.add(", ... (%zu sizes)", sizes.size());
    out.add("\n");
    return TC_OK;
}
