/* lsys.c: process-level helpers for scripts and benchmarks: a monotonic wall clock and
 * the number of CPU threads the kernels use (OpenMP and OpenBLAS together). */
#include "ltocha.h"

#include <omp.h>
#include <time.h>

void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

/* T.clock(): seconds from a monotonic clock (wall time, unlike os.clock's CPU time) */
static int t_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* T.set_num_threads(n): threads for elementwise kernels (OpenMP) and GEMM (OpenBLAS) */
static int t_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "number of threads must be between 1 and 1024");
    omp_set_num_threads((int)n);
    openblas_set_num_threads((int)n);
    return 0;
}

static int t_get_num_threads(lua_State *L) {
    lua_pushinteger(L, omp_get_max_threads());
    return 1;
}

const luaL_Reg tcl_sys_funcs[] = {
    {"clock", t_clock}, {"set_num_threads", t_set_num_threads}, {"get_num_threads", t_get_num_threads},
    {NULL, NULL},
};
