/* laux.c: the helpers every binding file uses, as Lua's lauxlib.c is for its libraries: the
 * module state and registration, tensors on the Lua stack and the result protocol, the
 * collector pacing, argument and option checks, and the nil-message results of I/O calls.
 * The opener (ltocha.c) and the tensor metatable (lmeta.c) are built on these. */
#include "ltocha.h"

#include <string.h>

/* ---- module state and registration ------------------------------------------------------ */
tcl_state *tcl_getstate(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static const char STATE_KEY = 0; /* address used as a registry key */

void tcl_newstate(lua_State *L) {
    tcl_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
}

void tcl_register(lua_State *L, const luaL_Reg *fns) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
    luaL_setfuncs(L, fns, 1);
}

void tcl_push_counts(lua_State *L, const tcl_count *counts, int n) {
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, counts[i].v);
        lua_setfield(L, -2, counts[i].k);
    }
}

void tcl_pushstate(lua_State *L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY); }

/* Lua sees 8 bytes per tensor; the storage it holds lives outside the Lua heap. So after
 * enough tensor bytes have been allocated since the last collection (a quarter of what is
 * in use, at least 2 MiB, at most 1 GiB), run one: memory stays flat without the script
 * calling collectgarbage. The floor bounds the garbage a small model's loop leaves between
 * collections. The collector is generational (luaopen_tocha sets it): that collection is a
 * young one, which visits only the objects made since the one before, and frees the
 * temporaries of a loop in a microsecond; a full collection visits the whole Lua heap (the
 * library's modules: 14 us in a bare script, 1-2 ms under the demo's training step). Tensors
 * that lived through two young collections (a forward's activations) are old, and only a full
 * collection frees them: one runs when the bytes in use still exceed by a quarter those after
 * the last full one. A forward's growth is mostly live (the graph holds it), and a full
 * collection then frees next to nothing: after one that freed less than a quarter of the growth
 * it was run for, the next waits for twice as much growth (up to 8 times, and 1 GiB), and one
 * that frees more starts again from a quarter. The demo's training step ran five full
 * collections a step, each freeing under 2 MB but the first, and one with this. */
static void pace_collector(lua_State *L) {
    tcl_state *st = lua_touserdata(L, lua_upvalueindex(1));
    if (!st) return;
    size_t total = tc_mem_allocated_total(), since = total - st->gc_mark;
    size_t limit = st->gc_in_use / 4;
    if (limit < (2u << 20)) limit = 2u << 20;
    if (limit > (1u << 30)) limit = 1u << 30;
    if (since < limit) return;
    st->gc_mark = total;
    lua_gc(L, LUA_GCSTEP, 0); /* young (a step of the incremental collector, if a script chose that one) */
    size_t in_use = tc_mem_in_use(), full_limit = limit << st->gc_backoff;
    if (full_limit > (1u << 30)) full_limit = 1u << 30;
    if (in_use < st->gc_in_use) st->gc_in_use = in_use; /* memory went back: the bound follows it down */
    else if (in_use - st->gc_in_use > full_limit) {
        size_t grown = in_use - st->gc_in_use;
        lua_gc(L, LUA_GCCOLLECT);
        size_t after = tc_mem_in_use(), freed = after < in_use ? in_use - after : 0;
        if (freed >= grown / 4) st->gc_backoff = 0;
        else if (st->gc_backoff < 3) st->gc_backoff++;
        st->gc_in_use = after;
    }
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

/* true when the running function is a tensor method (the very closure in the methods table,
 * not T's function of the same name) called as a field, x.sum() rather than x:sum() */
static int called_with_dot(lua_State *L, lua_Debug *ar) {
    int top = lua_gettop(L);
    if (!lua_getstack(L, 0, ar) || !lua_getinfo(L, "nf", ar)) return 0;
    int dot = ar->name && strcmp(ar->namewhat, "method") != 0 && luaL_getmetatable(L, TCL_TENSOR) == LUA_TTABLE &&
              lua_getfield(L, -1, "__index") == LUA_TFUNCTION && lua_getupvalue(L, -1, 2) &&
              lua_getfield(L, -1, ar->name) == LUA_TFUNCTION && lua_rawequal(L, -1, -5);
    lua_settop(L, top);
    return dot;
}

tc_tensor *tcl_check(lua_State *L, int idx) {
    tc_tensor **p = tcl_toslot(L, idx);
    lua_Debug ar;
    if (!p && idx == 1 && called_with_dot(L, &ar))
        luaL_error(L, "bad argument #1 to '%s' (tocha.Tensor expected, got %s): a method is called with ':', as in x:%s(...)",
                   ar.name, luaL_typename(L, 1), ar.name);
    if (!p) luaL_typeerror(L, idx, TCL_TENSOR);
    if (!*p) luaL_argerror(L, idx, "tensor was released (used after <close>)");
    return *p;
}

void tcl_newtensormeta(lua_State *L) {
    luaL_newmetatable(L, TCL_TENSOR);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &METATABLE_KEY);
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

/* one release for __gc, __close and x:release() */
int tcl_release(lua_State *L) {
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

/* ---- arguments -------------------------------------------------------------------- */
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

/* ---- fields of an options table or a parameter group, read by name ----------------------- */
/* the field k of the table at idx pushed, with its type; raises unless the table is one */
static int getfield(lua_State *L, int idx, const char *k) {
    luaL_checktype(L, idx, LUA_TTABLE);
    return lua_getfield(L, idx, k);
}

static int field_error(lua_State *L, const char *k, const char *want) {
    return luaL_error(L, "field '%s' must be %s (got %s)", k, want, luaL_typename(L, -1));
}

double tcl_getnumber(lua_State *L, int idx, const char *k) {
    getfield(L, idx, k);
    if (!lua_isnumber(L, -1)) field_error(L, k, "a number");
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

lua_Integer tcl_getinteger(lua_State *L, int idx, const char *k) {
    getfield(L, idx, k);
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok) field_error(L, k, "an integer");
    lua_pop(L, 1);
    return v;
}

tc_tensor *tcl_gettensor(lua_State *L, int idx, const char *k) {
    getfield(L, idx, k);
    tc_tensor *t = tcl_test(L, -1);
    if (!t) field_error(L, k, "a tensor");
    lua_pop(L, 1); /* the table keeps it alive */
    return t;
}

/* {a, b} in field k: two numbers (Adam's betas) */
void tcl_getpair(lua_State *L, int idx, const char *k, double *a, double *b) {
    if (getfield(L, idx, k) != LUA_TTABLE) field_error(L, k, "a pair of numbers");
    lua_geti(L, -1, 1);
    lua_geti(L, -2, 2);
    if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1)) {
        lua_pop(L, 2);
        field_error(L, k, "a pair of numbers");
    }
    *a = lua_tonumber(L, -2);
    *b = lua_tonumber(L, -1);
    lua_pop(L, 3);
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

/* ---- results of calls that fail for ordinary reasons: true, or nil and a message ---------- */
int tcl_fail(lua_State *L) {
    lua_pushnil(L);
    lua_pushstring(L, tc_last_error());
    return 2;
}

int tcl_result(lua_State *L, int rc) {
    if (rc != TC_OK) return tcl_fail(L);
    lua_pushboolean(L, 1);
    return 1;
}
