/* lcuda.c: T.cuda (the device: availability, synchronize, memory stats and the cache) and
 * T.backends (allow_tf32, cudnn_benchmark), and the allocator's out-of-memory hook: a full
 * Lua collection, so tensors nothing references give their GPU memory back before the retry.
 * Everything works without CUDA or a GPU: false, 0, or an error saying why. */
#include "ltocha.h"

#include <limits.h>
#include <pthread.h>

/* ---- T.cuda ------------------------------------------------------------------------------ */
static int c_is_available(lua_State *L) {
    lua_pushboolean(L, tc_cuda_is_available());
    return 1;
}

static int c_device_count(lua_State *L) {
    lua_pushinteger(L, tc_cuda_device_count());
    return 1;
}

/* T.cuda.get_device_name([i | "cuda:i"]): i is 0-based, as in "cuda:0" */
static int c_get_device_name(lua_State *L) {
    int index = 0;
    if (lua_type(L, 1) == LUA_TSTRING) {
        tc_device d = tcl_checkdevice(L, 1);
        luaL_argcheck(L, d.type == TC_CUDA, 1, "expected a cuda device");
        index = d.index;
    } else {
        lua_Integer i = luaL_optinteger(L, 1, 0);
        luaL_argcheck(L, i >= 0 && i <= INT_MAX, 1, "device index must be 0 or more");
        index = (int)i;
    }
    char name[256];
    tcl_check_rc(L, tc_cuda_device_name(index, name, sizeof name));
    lua_pushstring(L, name);
    return 1;
}

static int c_synchronize(lua_State *L) {
    tcl_check_rc(L, tc_cuda_synchronize());
    return 0;
}

static tc_cuda_memory_stats stats(void) {
    tc_cuda_memory_stats s;
    tc_cuda_memory(&s);
    return s;
}

static int c_memory_allocated(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().allocated); return 1; }
static int c_memory_reserved(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().reserved); return 1; }
static int c_max_memory_allocated(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().max_allocated); return 1; }
static int c_max_memory_reserved(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().max_reserved); return 1; }

static int c_reset_peak_memory_stats(lua_State *L) {
    (void)L;
    tc_cuda_reset_peak();
    return 0;
}

static int c_empty_cache(lua_State *L) {
    tcl_check_rc(L, tc_cuda_empty_cache());
    return 0;
}

/* T.cuda.memory_stats(): a table of byte counts and call counts */
static int c_memory_stats(lua_State *L) {
    tc_cuda_memory_stats s = stats();
    const tcl_count f[] = {
        {"allocated", (lua_Integer)s.allocated}, {"max_allocated", (lua_Integer)s.max_allocated},
        {"reserved", (lua_Integer)s.reserved}, {"max_reserved", (lua_Integer)s.max_reserved},
        {"cached", (lua_Integer)(s.reserved - s.allocated)},
        {"pinned_allocated", (lua_Integer)s.pinned_allocated}, {"pinned_reserved", (lua_Integer)s.pinned_reserved},
        {"graph_reserved", (lua_Integer)s.graph_reserved},
        {"allocs", s.allocs}, {"frees", s.frees}, {"cache_hits", s.cache_hits},
        {"driver_allocs", s.driver_allocs}, {"driver_frees", s.driver_frees}, {"ooms", s.ooms},
    };
    tcl_push_counts(L, f, (int)(sizeof f / sizeof f[0]));
    return 1;
}

/* T.cuda.memory_summary(): the allocator's table, as a string */
static int c_memory_summary(lua_State *L) {
    char buf[4096];
    tcl_check_rc(L, tc_cuda_memory_summary(buf, sizeof buf));
    lua_pushstring(L, buf);
    return 1;
}

/* ---- CUDA graphs: the handle lua/tocha/graph.lua builds T.cuda.graph on -------------------
 * Made closed (no graph) with its metatable before the capture starts, so a failed start
 * leaves nothing behind; one release shared by __gc, __close and :release(). */
#define TCL_GRAPH "tocha.cuda.graph_handle"

typedef struct {
    tc_cuda_graph *g;
} graph_handle;

static graph_handle *check_graph(lua_State *L) {
    graph_handle *h = luaL_checkudata(L, 1, TCL_GRAPH);
    if (!h->g) luaL_error(L, "cuda graph: the graph was released");
    return h;
}

static int g_release(lua_State *L) {
    graph_handle *h = luaL_checkudata(L, 1, TCL_GRAPH);
    tc_cuda_graph *g = h->g;
    h->g = NULL;
    tcl_check_rc(L, tc_cuda_graph_free(g));
    return 0;
}

static int g_gc(lua_State *L) {
    graph_handle *h = luaL_checkudata(L, 1, TCL_GRAPH);
    (void)tc_cuda_graph_free(h->g); /* a finalizer cannot raise */
    h->g = NULL;
    return 0;
}

static int g_end(lua_State *L) {
    tcl_check_rc(L, tc_cuda_graph_end(check_graph(L)->g));
    return 0;
}

static int g_replay(lua_State *L) {
    tcl_check_rc(L, tc_cuda_graph_replay(check_graph(L)->g));
    return 0;
}

static int g_pool_bytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)tc_cuda_graph_pool_bytes(check_graph(L)->g));
    return 1;
}

/* T.cuda._graph_begin() -> a handle whose capture has started */
static int c_graph_begin(lua_State *L) {
    graph_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->g = NULL;
    if (luaL_newmetatable(L, TCL_GRAPH)) {
        static const luaL_Reg methods[] = {
            {"finish", g_end}, {"replay", g_replay}, {"release", g_release}, {"pool_bytes", g_pool_bytes},
            {NULL, NULL},
        };
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, g_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, g_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    if (!(h->g = tc_cuda_graph_begin())) return tcl_error(L);
    return 1;
}

/* T.cuda.is_current_stream_capturing() */
static int c_is_capturing(lua_State *L) {
    lua_pushboolean(L, tc_cuda_is_capturing());
    return 1;
}

const luaL_Reg tcl_cuda_funcs[] = {
    {"_graph_begin", c_graph_begin}, {"is_current_stream_capturing", c_is_capturing},
    {"is_available", c_is_available}, {"device_count", c_device_count},
    {"get_device_name", c_get_device_name}, {"synchronize", c_synchronize},
    {"memory_allocated", c_memory_allocated}, {"memory_reserved", c_memory_reserved},
    {"max_memory_allocated", c_max_memory_allocated}, {"max_memory_reserved", c_max_memory_reserved},
    {"reset_peak_memory_stats", c_reset_peak_memory_stats}, {"empty_cache", c_empty_cache},
    {"memory_stats", c_memory_stats}, {"memory_summary", c_memory_summary},
    {NULL, NULL},
};

/* ---- T.backends: flag(on) sets and returns the previous value; flag() returns it ---------- */
static int flag(lua_State *L, bool (*get)(void), void (*set)(bool)) {
    bool prev = get();
    if (!lua_isnone(L, 1)) {
        luaL_checktype(L, 1, LUA_TBOOLEAN);
        set(lua_toboolean(L, 1));
    }
    lua_pushboolean(L, prev);
    return 1;
}
static int b_allow_tf32(lua_State *L) { return flag(L, tc_cuda_allow_tf32, tc_cuda_set_allow_tf32); }
static int b_cudnn_benchmark(lua_State *L) { return flag(L, tc_cuda_cudnn_benchmark, tc_cuda_set_cudnn_benchmark); }

/* sdpa_backend([name]): sets "cudnn" or "flash", returns the previous; sdpa_last(): what the
 * last f16/bf16 attention on cuda ran, {forward =, forward_reason =, backward =, backward_reason =} */
static int b_sdpa_backend(lua_State *L) {
    const char *prev = tc_cuda_sdpa_backend();
    if (!lua_isnoneornil(L, 1) && tc_cuda_set_sdpa_backend(luaL_checkstring(L, 1)) != TC_OK)
        return luaL_error(L, "%s", tc_last_error());
    lua_pushstring(L, prev);
    return 1;
}
static int b_sdpa_last(lua_State *L) {
    const char *fwhy, *bwhy;
    const char *f = tc_cuda_sdpa_last(false, &fwhy), *b = tc_cuda_sdpa_last(true, &bwhy);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, f);
    lua_setfield(L, -2, "forward");
    lua_pushstring(L, fwhy);
    lua_setfield(L, -2, "forward_reason");
    lua_pushstring(L, b);
    lua_setfield(L, -2, "backward");
    lua_pushstring(L, bwhy);
    lua_setfield(L, -2, "backward_reason");
    return 1;
}

const luaL_Reg tcl_backends_funcs[] = {
    {"allow_tf32", b_allow_tf32}, {"cudnn_benchmark", b_cudnn_benchmark},
    {"sdpa_backend", b_sdpa_backend}, {"sdpa_last", b_sdpa_last},
    {NULL, NULL},
};

/* ---- the out-of-memory hook ---------------------------------------------------------------
 * The allocator calls it with no lock held; the collection's finalizers free tensors, which
 * re-enter the allocator. Lua is not thread safe, so an allocation on another thread (a
 * worker) skips the collection; within a finalizer, lua_gc does nothing (Lua 5.4.4+). */
typedef struct {
    lua_State *L;     /* the main thread: collections need no particular running thread */
    pthread_t thread; /* the OS thread that runs this Lua state */
} oom_ctx;

/* the hook is process-wide: it serves the state that opened tocha last */
static oom_ctx *active;

static void collect(void *p) {
    oom_ctx *c = p;
    if (pthread_equal(pthread_self(), c->thread)) lua_gc(c->L, LUA_GCCOLLECT);
}

static int oom_ctx_gc(lua_State *L) {
    if (active == lua_touserdata(L, 1)) {
        tc_cuda_set_oom_hook(NULL, NULL);
        active = NULL;
    }
    return 0;
}

static const char OOM_KEY = 0; /* its address keys the context in the registry */

/* installs the out-of-memory hook for this Lua state */
void tcl_open_cuda(lua_State *L) {
    oom_ctx *c = lua_newuserdatauv(L, sizeof *c, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    c->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    c->thread = pthread_self();
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, oom_ctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OOM_KEY);
    active = c;
    tc_cuda_set_oom_hook(collect, c);
}
