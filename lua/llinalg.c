/* llinalg.c: binding for the linear algebra that has no autograd (core/ops/linalg.c), into
 * T.linalg: eigh(a, {uplo = "L"}) -> eigenvalues, eigenvectors; eigvalsh(a, {uplo}). */
#include "ltocha.h"

#include <string.h>

/* the triangle an options table at idx names: uplo = "L" (default) or "U" */
static bool check_upper(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return false;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "uplo");
    const char *s = luaL_optstring(L, -1, "L");
    if (strcmp(s, "L") != 0 && strcmp(s, "U") != 0) luaL_error(L, "linalg: uplo must be \"L\" or \"U\", got \"%s\"", s);
    lua_pop(L, 1);
    return s[0] == 'U';
}

static int l_eigh(lua_State *L) {
    tc_tensor *a = tcl_check(L, 1);
    bool upper = check_upper(L, 2);
    tc_tensor **w = tcl_slot(L), **v = tcl_slot(L);
    *w = tc_linalg_eigh(a, upper, v);
    if (!*w) return tcl_error(L);
    tcl_done(L, *v);
    return 2;
}

static int l_eigvalsh(lua_State *L) {
    tc_tensor *a = tcl_check(L, 1);
    bool upper = check_upper(L, 2);
    tc_tensor **w = tcl_slot(L);
    *w = tc_linalg_eigh(a, upper, NULL);
    return tcl_done(L, *w);
}

const luaL_Reg tcl_linalg_funcs[] = {
    {"eigh", l_eigh},
    {"eigvalsh", l_eigvalsh},
    {NULL, NULL},
};
