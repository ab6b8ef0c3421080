/* lindex.c: binding for the indexing ops: T.cat, T.stack, T.embedding, T.index_select,
 * T.gather, T.scatter_add, T.masked_fill and the matching tensor methods, with the in-place
 * x:masked_fill_ and x:scatter_add_. Dims are 1-based or negative; index values 1-based. */
#include "ltocha.h"

/* the tensors of the list at idx, in a Lua-owned array (the list keeps them alive) */
static int tensor_list(lua_State *L, int idx, const char *op, tc_tensor ***out) {
    luaL_argexpected(L, lua_istable(L, idx), idx, "list of tensors");
    int n = (int)luaL_len(L, idx);
    *out = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof **out, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        (*out)[i] = tcl_test(L, -1);
        if (!(*out)[i]) return luaL_error(L, "%s: entry %d of the list is a %s, not a tensor", op, i + 1, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    return n;
}

/* T.cat(list, dim = 1), T.stack(list, dim = 1) */
static int t_cat(lua_State *L) {
    int d = tcl_optdim(L, 2, 0);
    tc_tensor **xs;
    int n = tensor_list(L, 1, "cat", &xs);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_cat(n, xs, d);
    return tcl_done(L, *slot);
}

static int t_stack(lua_State *L) {
    int d = tcl_optdim(L, 2, 0);
    tc_tensor **xs;
    int n = tensor_list(L, 1, "stack", &xs);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_stack(n, xs, d);
    return tcl_done(L, *slot);
}

/* T.embedding(ids, weight, padding_idx = 0 (none)) */
static int t_embedding(lua_State *L) {
    tc_tensor *ids = tcl_check(L, 1), *w = tcl_check(L, 2);
    lua_Integer pad = luaL_optinteger(L, 3, 0);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_embedding(ids, w, pad);
    return tcl_done(L, *slot);
}

/* x:index_select(dim, idx), x:gather(dim, idx) */
static int m_index_select(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    int d = tcl_checkdim(L, 2);
    tc_tensor *idx = tcl_check(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_index_select(x, d, idx);
    return tcl_done(L, *slot);
}

static int m_gather(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    int d = tcl_checkdim(L, 2);
    tc_tensor *idx = tcl_check(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_gather(x, d, idx);
    return tcl_done(L, *slot);
}

/* x:scatter_add(dim, idx, src) and x:scatter_add_(dim, idx, src) */
static int m_scatter_add(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    int d = tcl_checkdim(L, 2);
    tc_tensor *idx = tcl_check(L, 3), *src = tcl_check(L, 4);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_scatter_add(x, d, idx, src);
    return tcl_done(L, *slot);
}

static int m_scatter_add_(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    int d = tcl_checkdim(L, 2);
    tc_tensor *idx = tcl_check(L, 3), *src = tcl_check(L, 4);
    tcl_check_rc(L, tc_scatter_add_(x, d, idx, src));
    lua_settop(L, 1);
    return 1;
}

/* the fill value: a number, a boolean, or a one-element tensor (its value, detached) */
static double fill_value(lua_State *L, int idx) {
    if (lua_isboolean(L, idx)) return lua_toboolean(L, idx);
    tc_tensor *t = tcl_test(L, idx);
    if (!t) return luaL_checknumber(L, idx);
    double v;
    tcl_check_rc(L, tc_item(t, &v));
    return v;
}

/* x:masked_fill(mask, value), x:masked_fill_(mask, value) */
static int m_masked_fill(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *mask = tcl_check(L, 2);
    double v = fill_value(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_masked_fill(x, mask, v);
    return tcl_done(L, *slot);
}

static int m_masked_fill_(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *mask = tcl_check(L, 2);
    tcl_check_rc(L, tc_masked_fill_(x, mask, fill_value(L, 3)));
    lua_settop(L, 1);
    return 1;
}

const luaL_Reg tcl_index_funcs[] = {
    {"cat", t_cat}, {"stack", t_stack}, {"embedding", t_embedding},
    {"index_select", m_index_select}, {"gather", m_gather}, {"scatter_add", m_scatter_add},
    {"masked_fill", m_masked_fill}, {NULL, NULL},
};

const luaL_Reg tcl_index_methods[] = {
    {"index_select", m_index_select}, {"gather", m_gather}, {"scatter_add", m_scatter_add},
    {"scatter_add_", m_scatter_add_}, {"masked_fill", m_masked_fill}, {"masked_fill_", m_masked_fill_},
    {NULL, NULL},
};
