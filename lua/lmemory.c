/* lmemory.c: T.cpu, the CPU allocator's stats and cache, under the names T.cuda uses for the
 * GPU's (lcuda.c); T.memory_stats and T.empty_cache, for either device, are lua/tocha/core.lua. */
#include "ltocha.h"

static tc_cpu_memory_stats stats(void) {
    tc_cpu_memory_stats s;
    tc_cpu_memory(&s);
    return s;
}

static int c_memory_allocated(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().allocated); return 1; }
static int c_memory_reserved(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().reserved); return 1; }
static int c_max_memory_allocated(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().max_allocated); return 1; }
static int c_max_memory_reserved(lua_State *L) { lua_pushinteger(L, (lua_Integer)stats().max_reserved); return 1; }

static int c_reset_peak_memory_stats(lua_State *L) {
    (void)L;
    tc_cpu_reset_peak();
    return 0;
}

static int c_empty_cache(lua_State *L) {
    (void)L;
    tc_cpu_empty_cache();
    return 0;
}

/* T.cpu.memory_stats(): a table of byte counts, call counts and whether blocks are cached */
static int c_memory_stats(lua_State *L) {
    tc_cpu_memory_stats s = stats();
    const struct { const char *k; lua_Integer v; } f[] = {
        {"allocated", (lua_Integer)s.allocated}, {"max_allocated", (lua_Integer)s.max_allocated},
        {"reserved", (lua_Integer)s.reserved}, {"max_reserved", (lua_Integer)s.max_reserved},
        {"cached", (lua_Integer)(s.reserved - s.allocated)},
        {"allocs", s.allocs}, {"frees", s.frees}, {"cache_hits", s.cache_hits},
        {"os_allocs", s.os_allocs}, {"os_frees", s.os_frees}, {"ooms", s.ooms},
    };
    int n = (int)(sizeof f / sizeof f[0]);
    lua_createtable(L, 0, n + 1);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, f[i].v);
        lua_setfield(L, -2, f[i].k);
    }
    lua_pushboolean(L, s.caching);
    lua_setfield(L, -2, "caching");
    return 1;
}

/* T.cpu.memory_summary(): the allocator's table, as a string */
static int c_memory_summary(lua_State *L) {
    char buf[4096];
    tc_cpu_memory_summary(buf, sizeof buf);
    lua_pushstring(L, buf);
    return 1;
}

const luaL_Reg tcl_cpu_funcs[] = {
    {"memory_allocated", c_memory_allocated}, {"memory_reserved", c_memory_reserved},
    {"max_memory_allocated", c_max_memory_allocated}, {"max_memory_reserved", c_max_memory_reserved},
    {"reset_peak_memory_stats", c_reset_peak_memory_stats}, {"empty_cache", c_empty_cache},
    {"memory_stats", c_memory_stats}, {"memory_summary", c_memory_summary},
    {NULL, NULL},
};
