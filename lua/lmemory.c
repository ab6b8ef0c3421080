/* lmemory.c: T.cpu, the CPU allocator's stats and cache, under the names T.cuda uses for the
 * GPU's (lcuda.c). The single numbers (memory_allocated, ...) and T.memory_stats /
 * T.empty_cache, for either device, are lua/tocha/core.lua's. */
#include "ltocha.h"

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
    tc_cpu_memory_stats s;
    tc_cpu_memory(&s);
    const tcl_count f[] = {
        {"allocated", (lua_Integer)s.allocated}, {"max_allocated", (lua_Integer)s.max_allocated},
        {"reserved", (lua_Integer)s.reserved}, {"max_reserved", (lua_Integer)s.max_reserved},
        {"cached", (lua_Integer)(s.reserved - s.allocated)}, {"allocs", s.allocs}, {"frees", s.frees},
        {"cache_hits", s.cache_hits}, {"os_allocs", s.os_allocs}, {"os_frees", s.os_frees}, {"ooms", s.ooms},
    };
    tcl_push_counts(L, f, (int)(sizeof f / sizeof f[0]));
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
    {"reset_peak_memory_stats", c_reset_peak_memory_stats}, {"empty_cache", c_empty_cache},
    {"memory_stats", c_memory_stats}, {"memory_summary", c_memory_summary},
    {NULL, NULL},
};
