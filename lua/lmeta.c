/* lmeta.c: the tensor type's metatable: properties (x.shape, x.grad, ...), x[i] reads and
 * writes, #x, the arithmetic metamethods (each a one-line wrapper over one helper), the
 * comparisons that explain themselves, and
 * release for __gc, __close and x:release(). Methods come from the families' tables. */
#include "ltocha.h"

#include <string.h>

/* ---- the metatable: properties, x[i], methods ------------------------------------------- */
static void push_shape(lua_State *L, const tc_tensor *t) {
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* x[i]'s 1-based (or negative, from the end) position along the first dim, 0-based */
static int64_t check_position(lua_State *L, const tc_tensor *t, lua_Integer i) {
    if (t->ndim == 0) luaL_error(L, "select: cannot index a 0-d tensor");
    int64_t n = t->shape[0];
    if (i == 0) luaL_error(L, "index 0 is invalid (indices are 1-based)");
    if (i > n || i < -n)
        luaL_error(L, "select: index %I out of range for dimension 1 of size %I", i, (lua_Integer)n);
    return i > 0 ? i - 1 : n + i;
}

/* upvalue 2: the methods table */
static int tensor_index(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) { /* x[i]: select along the first dim */
        int64_t pos = check_position(L, t, luaL_checkinteger(L, 2));
        tc_tensor **slot = tcl_slot(L);
        *slot = tc_select(t, 0, pos);
        return tcl_done(L, *slot);
    }
    const char *k = luaL_checkstring(L, 2);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    char buf[32];
    switch (k[0]) {
    case 's': if (!strcmp(k, "shape")) { push_shape(L, t); return 1; } break;
    case 'd':
        if (!strcmp(k, "dtype")) { lua_pushstring(L, tc_dtype_name(t->dtype)); return 1; }
        if (!strcmp(k, "device")) { tc_device_str(t->storage->device, buf, sizeof buf); lua_pushstring(L, buf); return 1; }
        if (!strcmp(k, "data")) { /* x.data: x detached, sharing its storage */
            tc_tensor **slot = tcl_slot(L);
            *slot = tc_detach(t);
            return tcl_done(L, *slot);
        }
        break;
    case 'g':
        if (!strcmp(k, "grad")) {
            if (!t->grad) lua_pushnil(L);
            else tcl_push(L, tc_tensor_retain(t->grad));
            return 1;
        }
        if (!strcmp(k, "grad_fn")) {
            const char *name = tc_grad_fn_name(t);
            if (name) lua_pushstring(L, name);
            else lua_pushnil(L);
            return 1;
        }
        break;
    case 'r': if (!strcmp(k, "requires_grad")) { lua_pushboolean(L, t->requires_grad); return 1; } break;
    case 'n': if (!strcmp(k, "ndim")) { lua_pushinteger(L, t->ndim); return 1; } break;
    case 'i': if (!strcmp(k, "is_leaf")) { lua_pushboolean(L, t->grad_fn == NULL); return 1; } break;
    case 'T':
        if (!strcmp(k, "T")) {
            tc_tensor **slot = tcl_slot(L);
            *slot = t->ndim < 2 ? tc_view(t, t->ndim, t->shape) : tc_transpose(t, -2, -1);
            return tcl_done(L, *slot);
        }
        break;
    }
    return 0; /* nil, like a missing table field */
}

static int tensor_newindex(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) { /* x[i] = v */
        int64_t pos = check_position(L, t, luaL_checkinteger(L, 2));
        tc_tensor **slot = tcl_slot(L);
        *slot = tc_select(t, 0, pos);
        if (!*slot) return tcl_error(L);
        tc_tensor *row = *slot;
        if (lua_isnumber(L, 3)) tcl_check_rc(L, tc_fill_(row, lua_tonumber(L, 3)));
        else if (lua_isboolean(L, 3)) tcl_check_rc(L, tc_fill_(row, lua_toboolean(L, 3)));
        else tcl_check_rc(L, tc_copy_(row, tcl_check(L, 3)));
        return 0;
    }
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "grad")) {
        tc_tensor *g = tcl_opt(L, 3);
        if (g && (g->ndim != t->ndim || memcmp(g->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) != 0)) return luaL_error(L, "assigned grad has a different shape than the tensor");
        if (g) tc_tensor_retain(g);
        tc_tensor_release(t->grad);
        t->grad = g;
        return 0;
    }
    if (!strcmp(k, "requires_grad")) {
        tcl_check_rc(L, tc_requires_grad_(t, lua_toboolean(L, 3)));
        return 0;
    }
    if (!strcmp(k, "data")) { /* x.data = y (PyTorch's): x takes y's storage, dtype and shape in
                                 place, so whoever holds x (an optimizer) sees the change */
        tc_tensor *src = tcl_check(L, 3);
        if (t->grad_fn) return luaL_error(L, "cannot set .data of a non-leaf tensor (%s)", tc_grad_fn_name(t));
        bool same = t->dtype == src->dtype && tc_device_eq(t->storage->device, src->storage->device) &&
                    t->ndim == src->ndim && memcmp(t->shape, src->shape, sizeof(int64_t) * (size_t)t->ndim) == 0;
        tc_storage_retain(src->storage);
        tc_storage_release(t->storage);
        t->storage = src->storage;
        t->dtype = src->dtype;
        t->ndim = src->ndim;
        memcpy(t->shape, src->shape, sizeof t->shape);
        memcpy(t->stride, src->stride, sizeof t->stride);
        t->offset = src->offset;
        t->is_view = src->is_view;
        if (!same) { /* a grad of the old dtype/device/shape no longer fits */
            tc_tensor_release(t->grad);
            t->grad = NULL;
        }
        return 0;
    }
    return luaL_error(L, "cannot set field '%s' of a tensor", k);
}

static int tensor_len(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    if (t->ndim == 0) return luaL_error(L, "len() of a 0-d tensor");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

/* arithmetic metamethods: one line each over a shared helper; a number on either side
 * becomes a scalar op (no 0-d tensor), anything else a broadcasting binary op */
static int arith(lua_State *L, tc_op op, tc_op scalar_op, tc_op rscalar_op) {
    tc_tensor *a = tcl_test(L, 1), *b = tcl_test(L, 2);
    tc_tensor **slot;
    if (a && !b && scalar_op != TC_OP_NONE && lua_type(L, 2) == LUA_TNUMBER) {
        double v = lua_tonumber(L, 2);
        slot = tcl_slot(L);
        *slot = tc_unary_s(scalar_op, a, op == TC_OP_SUB ? -v : v, 0);
        return tcl_done(L, *slot);
    }
    if (b && !a && lua_type(L, 1) == LUA_TNUMBER) {
        double v = lua_tonumber(L, 1);
        slot = tcl_slot(L);
        *slot = tc_unary_s(rscalar_op, b, v, 0);
        return tcl_done(L, *slot);
    }
    a = tcl_operand(L, 1, b);
    b = tcl_operand(L, 2, a);
    slot = tcl_slot(L);
    *slot = tc_binary(op, a, b);
    return tcl_done(L, *slot);
}

static int m_add(lua_State *L) { return arith(L, TC_OP_ADD, TC_OP_ADD_SCALAR, TC_OP_ADD_SCALAR); }
static int m_sub(lua_State *L) { return arith(L, TC_OP_SUB, TC_OP_ADD_SCALAR, TC_OP_RSUB_SCALAR); }
static int m_mul(lua_State *L) { return arith(L, TC_OP_MUL, TC_OP_MUL_SCALAR, TC_OP_MUL_SCALAR); }
static int m_div(lua_State *L) { return arith(L, TC_OP_DIV, TC_OP_NONE, TC_OP_RDIV_SCALAR); }
static int m_pow(lua_State *L) { return arith(L, TC_OP_POW, TC_OP_POW_SCALAR, TC_OP_RPOW_SCALAR); }

static int m_unm(lua_State *L) {
    tc_tensor *a = tcl_check(L, 1);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_unary(TC_OP_NEG, a);
    return tcl_done(L, *slot);
}

/* a < b and a <= b (and > and >=, which Lua turns into them) cannot give a tensor: Lua makes
 * the result one boolean. Say what to write instead. (a == b stays Lua's identity test: Lua
 * calls __eq only for two different objects and keeps a boolean too.) */
static int compare(lua_State *L, const char *ops, const char *names) {
    return luaL_error(L, "attempt to compare tensors with %s: Lua comparisons give one boolean; for an elementwise "
                         "bool tensor use %s, for a one-element tensor compare x:item()", ops, names);
}

static int m_lt(lua_State *L) { return compare(L, "'<' or '>'", "x:lt(y) or x:gt(y) (T.lt, T.gt)"); }
static int m_le(lua_State *L) { return compare(L, "'<=' or '>='", "x:le(y) or x:ge(y) (T.le, T.ge)"); }

static const luaL_Reg meta[] = {
    {"__gc", tcl_release}, {"__close", tcl_release}, {"__len", tensor_len},
    {"__add", m_add},         {"__sub", m_sub},            {"__mul", m_mul},
    {"__div", m_div},         {"__pow", m_pow},            {"__unm", m_unm},
    {"__lt", m_lt},           {"__le", m_le},
    {"__newindex", tensor_newindex}, {NULL, NULL},
};


/* the metatable, with the methods table on top of the stack as __index's upvalue */
void tcl_open_tensor_type(lua_State *L) {
    lua_pushcfunction(L, tcl_release);
    lua_setfield(L, -2, "release");
    tcl_newtensormeta(L);
    tcl_register(L, meta);
    tcl_pushstate(L);
    lua_pushvalue(L, -3); /* methods */
    lua_pushcclosure(L, tensor_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "tensor");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}
