/* ltocha.c: the tocha Lua module: the tensor userdata and its metatable, the argument
 * helpers every binding file uses, the collector pacing, and luaopen_tocha, which also
 * puts the Lua library (lua/tocha/) on package.path and loads its Lua half. */
#include "ltocha.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- module state and registration ------------------------------------------------------ */
tcl_state *tcl_getstate(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static const char STATE_KEY = 0; /* address used as a registry key */

void tcl_register(lua_State *L, const luaL_Reg *fns) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
    luaL_setfuncs(L, fns, 1);
}

/* Lua sees 8 bytes per tensor; the storage it holds lives outside the Lua heap. So after
 * enough tensor bytes have been allocated since the last collection (a quarter of what is
 * in use, at least 2 MiB, at most 1 GiB), run one: memory stays flat without the script
 * calling collectgarbage. The floor bounds the garbage a small model's loop leaves between
 * collections; a full collection of a training script's small Lua heap is cheap. */
static void pace_collector(lua_State *L) {
    tcl_state *st = lua_touserdata(L, lua_upvalueindex(1));
    if (!st) return;
    size_t total = tc_mem_allocated_total(), since = total - st->gc_mark;
    size_t limit = st->gc_in_use / 4;
    if (limit < (2u << 20)) limit = 2u << 20;
    if (limit > (1u << 30)) limit = 1u << 30;
    if (since < limit) return;
    st->gc_mark = total;
    lua_gc(L, LUA_GCCOLLECT);
    st->gc_in_use = tc_mem_in_use();
}

/* ---- tensor userdata ---------------------------------------------------------------------- */
/* The metatable also sits in the registry under a light-userdata key: checking a tensor
 * argument is then two pointer lookups, not a string lookup by name (a measurable share
 * of a small op's cost). */
static const char METATABLE_KEY = 0;

tc_tensor **tcl_toslot(lua_State *L, int idx) {
    void *p = lua_touserdata(L, idx);
    if (!p || !lua_getmetatable(L, idx)) return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &METATABLE_KEY);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}

tc_tensor *tcl_test(lua_State *L, int idx) {
    tc_tensor **p = tcl_toslot(L, idx);
    return p ? *p : NULL;
}

tc_tensor *tcl_check(lua_State *L, int idx) {
    tc_tensor **p = tcl_toslot(L, idx);
    if (!p) luaL_typeerror(L, idx, TCL_TENSOR);
    if (!*p) luaL_argerror(L, idx, "tensor was released (used after <close>)");
    return *p;
}

static void set_tensor_metatable(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &METATABLE_KEY);
    lua_setmetatable(L, -2);
}

tc_tensor *tcl_opt(lua_State *L, int idx) { return lua_isnoneornil(L, idx) ? NULL : tcl_check(L, idx); }

tc_tensor **tcl_slot(lua_State *L) {
    tc_tensor **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL; /* closed until filled */
    set_tensor_metatable(L);
    return p;
}

int tcl_error(lua_State *L) { return luaL_error(L, "%s", tc_last_error()); }

int tcl_done(lua_State *L, tc_tensor *t) {
    if (!t) return tcl_error(L);
    pace_collector(L);
    return 1;
}

void tcl_push(lua_State *L, tc_tensor *t) {
    if (!t) { tcl_error(L); return; }
    tc_tensor **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = t; /* cannot fail after this line */
    set_tensor_metatable(L);
}

void tcl_check_rc(lua_State *L, int rc) {
    if (rc != TC_OK) tcl_error(L);
}

/* one release for __gc and __close */
static int tensor_release(lua_State *L) {
    tc_tensor **p = tcl_toslot(L, 1);
    if (!p) return luaL_typeerror(L, 1, TCL_TENSOR);
    tc_tensor_release(*p);
    *p = NULL;
    return 0;
}

tc_tensor *tcl_operand(lua_State *L, int idx, const tc_tensor *like) {
    if (tcl_toslot(L, idx)) return tcl_check(L, idx); /* raises if released */
    if (!lua_isnumber(L, idx) && !lua_isboolean(L, idx))
        luaL_typeerror(L, idx, "tensor or number");
    double v = lua_isboolean(L, idx) ? lua_toboolean(L, idx) : lua_tonumber(L, idx);
    tc_dtype dt = like ? like->dtype : TC_F32;
    tc_device dev = like ? like->storage->device : TC_DEV_CPU;
    if (!tc_dtype_is_float(dt) && (lua_isinteger(L, idx) || lua_isboolean(L, idx))) {
        if (dt == TC_BOOL && !lua_isboolean(L, idx)) dt = TC_I64;
    } else if (!tc_dtype_is_float(dt)) dt = TC_F32;
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_scalar_tensor(v, dt, dev);
    if (!*slot) tcl_error(L);
    lua_replace(L, idx); /* keep it alive where the number was */
    return *slot;
}

/* ---- argument helpers -------------------------------------------------------------------- */
int tcl_checkdim(lua_State *L, int idx) {
    lua_Integer d = luaL_checkinteger(L, idx);
    luaL_argcheck(L, d != 0, idx, "dimension 0 is invalid (dimensions are 1-based; -1 is the last)");
    luaL_argcheck(L, d >= -TC_MAX_DIMS && d <= TC_MAX_DIMS, idx, "dimension out of range");
    return d > 0 ? (int)d - 1 : (int)d;
}

int tcl_optdim(lua_State *L, int idx, int def) { return lua_isnoneornil(L, idx) ? def : tcl_checkdim(L, idx); }

int tcl_checkshape(lua_State *L, int idx, int64_t *shape) {
    int n = 0;
    if (lua_istable(L, idx)) {
        n = (int)luaL_len(L, idx);
        luaL_argcheck(L, n <= TC_MAX_DIMS, idx, "too many dimensions");
        for (int i = 0; i < n; i++) {
            lua_geti(L, idx, i + 1);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok) luaL_error(L, "bad shape: element %d is not an integer", i + 1);
            shape[i] = v;
            lua_pop(L, 1);
        }
        return n;
    }
    luaL_argexpected(L, lua_isnoneornil(L, idx) || lua_type(L, idx) == LUA_TNUMBER, idx, "shape (table or numbers)");
    int top = lua_gettop(L);
    for (int i = idx; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
        luaL_argcheck(L, n < TC_MAX_DIMS, i, "too many dimensions");
        shape[n++] = luaL_checkinteger(L, i);
    }
    return n;
}

int tcl_optdims(lua_State *L, int idx, int *dims) {
    if (lua_isnoneornil(L, idx)) return 0;
    if (lua_isnumber(L, idx)) { dims[0] = tcl_checkdim(L, idx); return 1; }
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)luaL_len(L, idx);
    luaL_argcheck(L, n <= TC_MAX_DIMS, idx, "too many dimensions");
    for (int i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        lua_Integer d = luaL_checkinteger(L, -1);
        luaL_argcheck(L, d != 0, idx, "dimension 0 is invalid (dimensions are 1-based)");
        dims[i] = d > 0 ? (int)d - 1 : (int)d;
        lua_pop(L, 1);
    }
    return n;
}

tc_dtype tcl_checkdtype(lua_State *L, int idx) {
    const char *s = luaL_checkstring(L, idx);
    int dt = tc_dtype_from_name(s);
    if (dt < 0) luaL_error(L, "unknown dtype '%s' (expected f32, f64, f16, bf16, i32, i64, u8 or bool)", s);
    return (tc_dtype)dt;
}

tc_device tcl_checkdevice(lua_State *L, int idx) {
    tc_device d;
    if (tc_device_parse(luaL_checkstring(L, idx), &d) != TC_OK) tcl_error(L);
    return d;
}

double tcl_optnumber(lua_State *L, int idx, const char *k, double def) {
    if (!lua_istable(L, idx)) return def;
    lua_getfield(L, idx, k);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1)) luaL_error(L, "option '%s' must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

int tcl_optbool(lua_State *L, int idx, const char *k, int def) {
    if (!lua_istable(L, idx)) return def;
    lua_getfield(L, idx, k);
    int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

tc_tensor *tcl_opttensor(lua_State *L, int idx, const char *k) {
    if (!lua_istable(L, idx)) return NULL;
    lua_getfield(L, idx, k);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return NULL; }
    tc_tensor *t = tcl_test(L, -1);
    if (!t) luaL_error(L, "option '%s' must be a tensor", k);
    return t; /* stays on the stack */
}

void tcl_optdtype_device(lua_State *L, int idx, tc_dtype *dt, tc_device *dev) {
    *dt = TC_F32;
    *dev = TC_DEV_CPU;
    if (!lua_istable(L, idx)) return;
    lua_getfield(L, idx, "dtype");
    if (!lua_isnil(L, -1)) *dt = tcl_checkdtype(L, -1);
    lua_getfield(L, idx, "device");
    if (!lua_isnil(L, -1)) *dev = tcl_checkdevice(L, -1);
    lua_pop(L, 2);
}

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

static const luaL_Reg meta[] = {
    {"__gc", tensor_release}, {"__close", tensor_release}, {"__len", tensor_len},
    {"__add", m_add},         {"__sub", m_sub},            {"__mul", m_mul},
    {"__div", m_div},         {"__pow", m_pow},            {"__unm", m_unm},
    {"__newindex", tensor_newindex}, {NULL, NULL},
};

static int release_method(lua_State *L) { return tensor_release(L); }

/* ---- opening the module -------------------------------------------------------------------- */
/* the repository root, two levels above this binary (build/tocha or build/tocha.so) */
static void push_root(lua_State *L) {
    Dl_info info;
    char path[PATH_MAX];
    const char *self = dladdr((void *)push_root, &info) && info.dli_fname ? info.dli_fname : "";
    size_t n = strlen(self);
    /* in a shared module dladdr names the .so; in the runner, /proc/self/exe is the binary */
    if (!(n > 3 && strcmp(self + n - 3, ".so") == 0)) self = "/proc/self/exe";
    if (!realpath(self, path)) { lua_pushnil(L); return; }
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(path, '/');
        if (slash) *slash = 0;
    }
    lua_pushstring(L, path);
}

static void add_library_path(lua_State *L) {
    push_root(L);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
    const char *root = lua_tostring(L, -1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s", root, root, old ? old : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 3);
}

int luaopen_tocha(lua_State *L);
int luaopen_tocha(lua_State *L) {
    tcl_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
    add_library_path(L);

    lua_newtable(L); /* T */
    lua_newtable(L); /* methods */
    tcl_register(L, tcl_tensor_methods);
    tcl_register(L, tcl_autograd_methods);
    tcl_register(L, tcl_index_methods);
    lua_pushcfunction(L, release_method);
    lua_setfield(L, -2, "release");

    luaL_newmetatable(L, TCL_TENSOR);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &METATABLE_KEY);
    tcl_register(L, meta);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
    lua_pushvalue(L, -3); /* methods */
    lua_pushcclosure(L, tensor_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "tensor");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1); /* metatable */

    lua_setfield(L, -2, "_methods");
    tcl_register(L, tcl_tensor_funcs);
    tcl_register(L, tcl_autograd_funcs);
    tcl_register(L, tcl_index_funcs);
    tcl_register(L, tcl_io_funcs);
    tcl_register(L, tcl_sys_funcs);
    tcl_register(L, tcl_log_funcs);
    lua_newtable(L);
    tcl_register(L, tcl_nn_funcs);
    tcl_register(L, tcl_norm_funcs);
    lua_setfield(L, -2, "_nn");
    lua_newtable(L);
    tcl_register(L, tcl_optim_funcs);
    lua_setfield(L, -2, "_optim");
    lua_newtable(L);
    tcl_register(L, tcl_image_funcs);
    lua_setfield(L, -2, "_image");
    lua_newtable(L);
    tcl_register(L, tcl_shapes_funcs);
    lua_setfield(L, -2, "_shapes");
    lua_newtable(L);
    tcl_register(L, tcl_linalg_funcs);
    lua_setfield(L, -2, "linalg");
    tcl_open_cuda(L);

    /* the Lua half of the module (printing, no_grad, checkpoint, ...) extends T in place */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "tocha.core");
    lua_call(L, 1, 1);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return 1;
}
