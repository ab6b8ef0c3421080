/* lautograd.c: binding for autograd: x:backward(), x:requires_grad_(), grad mode,
 * T.autograd.grad, and the hook that lets a derivative be written in Lua
 * (T.autograd.Function in lua/tocha/core.lua is built on _custom_attach). */
#include "ltocha.h"

#include <stdlib.h>

static int m_backward(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    tc_tensor *g = tcl_test(L, 2);
    int opts = lua_istable(L, 2) ? 2 : 3; /* backward({opts}) or backward(grad or nil, {opts}) */
    int retain = tcl_optbool(L, opts, "retain_graph", 0);
    tcl_getstate(L)->L = L;
    tcl_check_rc(L, tc_backward(x, g, retain));
    return 0;
}

static int m_requires_grad_(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    tcl_check_rc(L, tc_requires_grad_(x, lua_isnone(L, 2) ? true : lua_toboolean(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int t_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, tc_grad_enabled());
    return 1;
}

static int t_set_grad_enabled(lua_State *L) {
    lua_pushboolean(L, tc_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

/* T._autocast() -> enabled, dtype; T._autocast(enabled, dtype) sets them and returns the
 * previous pair (tocha.core's T.autocast scopes build on this) */
static int t_autocast(lua_State *L) {
    bool prev = tc_autocast_enabled();
    tc_dtype prev_dt = tc_autocast_dtype();
    if (!lua_isnoneornil(L, 1)) tcl_check_rc(L, tc_set_autocast(lua_toboolean(L, 1), tcl_checkdtype(L, 2)));
    lua_pushboolean(L, prev);
    lua_pushstring(L, tc_dtype_name(prev_dt));
    return 2;
}

/* list of tensors in the table at idx into a Lua-owned array; returns the count */
static int tensor_list(lua_State *L, int idx, tc_tensor ***out) {
    if (tcl_test(L, idx)) {
        *out = lua_newuserdatauv(L, sizeof **out, 0);
        (*out)[0] = tcl_check(L, idx);
        return 1;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)luaL_len(L, idx);
    *out = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof **out, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        (*out)[i] = tcl_check(L, -1); /* the table keeps it alive */
        lua_pop(L, 1);
    }
    return n;
}

/* _autograd_grad(outputs, inputs, grad_outputs or nil, retain_graph, allow_unused) -> {grads} */
static int t_autograd_grad(lua_State *L) {
    tc_tensor **outs, **ins, **gouts = NULL;
    int nout = tensor_list(L, 1, &outs), nin = tensor_list(L, 2, &ins);
    if (!lua_isnoneornil(L, 3) && tensor_list(L, 3, &gouts) != nout)
        return luaL_error(L, "autograd.grad: grad_outputs must match outputs in number");
    tc_tensor **res = lua_newuserdatauv(L, (size_t)(nin ? nin : 1) * sizeof *res, 0);
    tcl_getstate(L)->L = L;
    tcl_check_rc(L, tc_autograd_grad(nout, outs, gouts, nin, ins, res, lua_toboolean(L, 4), lua_toboolean(L, 5)));
    lua_createtable(L, nin, 0);
    /* push every result before anything can raise, so none leaks */
    for (int i = 0; i < nin; i++) {
        if (res[i]) {
            tc_tensor **slot = tcl_slot(L);
            *slot = res[i];
            res[i] = NULL;
            lua_rawseti(L, -2, i + 1);
        }
    }
    return 1;
}

/* ---- derivatives written in Lua -------------------------------------------------------------- */
typedef struct {
    tcl_state *st;
    lua_State *main;
    int ref; /* registry reference to the Lua backward function */
} lua_fn_ctx;

static int lua_backward(void *vctx, tc_tensor *gy, int nin, tc_tensor **gx) {
    lua_fn_ctx *c = vctx;
    lua_State *L = c->st->L ? c->st->L : c->main;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, nin + 4)) return tc_error("custom backward: Lua stack overflow");
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    tcl_push(L, tc_tensor_retain(gy));
    if (lua_pcall(L, 1, nin, 0) != LUA_OK) {
        int rc = tc_error("%s", lua_tostring(L, -1));
        lua_settop(L, top);
        return rc;
    }
    int rc = TC_OK;
    for (int i = 0; i < nin; i++) {
        int idx = top + 1 + i;
        if (lua_isnil(L, idx)) continue;
        tc_tensor *g = tcl_test(L, idx);
        if (!g) { rc = tc_error("custom backward: result %d is not a tensor or nil", i + 1); break; }
        gx[i] = tc_tensor_retain(g);
    }
    lua_settop(L, top);
    return rc;
}

static void lua_fn_free(void *vctx) {
    lua_fn_ctx *c = vctx;
    luaL_unref(c->main, LUA_REGISTRYINDEX, c->ref);
    free(c);
}

/* _custom_attach(out, {inputs}, backward_fn) -> out with a grad_fn calling backward_fn(gy) */
static int t_custom_attach(lua_State *L) {
    tc_tensor *out = tcl_check(L, 1);
    tc_tensor **ins;
    int nin = tensor_list(L, 2, &ins);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    tc_tensor **slot = tcl_slot(L);
    lua_fn_ctx *c = malloc(sizeof *c);
    if (!c) return luaL_error(L, "out of memory");
    c->st = tcl_getstate(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    c->main = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, 3);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *slot = tc_custom_attach(out, nin, ins, lua_backward, c, lua_fn_free); /* frees c on failure */
    return tcl_done(L, *slot);
}

const luaL_Reg tcl_autograd_funcs[] = {
    {"is_grad_enabled", t_is_grad_enabled}, {"set_grad_enabled", t_set_grad_enabled}, {"_autocast", t_autocast},
    {"_autograd_grad", t_autograd_grad},    {"_custom_attach", t_custom_attach},
    {NULL, NULL},
};

const luaL_Reg tcl_autograd_methods[] = {
    {"backward", m_backward}, {"requires_grad_", m_requires_grad_}, {NULL, NULL},
};
