/* ltensor.c: binding for tensor creation, conversion, views, elementwise ops, reductions
 * and matmul: T.zeros, T.tensor, x:view(...), x:exp(), x:sum(dim, keepdim), ... */
#include "ltocha.h"

#include <math.h>
#include <string.h>

/* ---- creation ------------------------------------------------------------------------------ */
/* shape from idx (table or numbers), then an optional options table after it */
static int shape_and_opts(lua_State *L, int idx, int64_t *shape, int *opts) {
    int n = tcl_checkshape(L, idx, shape);
    *opts = lua_istable(L, idx) ? idx + 1 : idx + n;
    return n;
}

static void apply_requires_grad(lua_State *L, int opts, tc_tensor *t) {
    if (tcl_optbool(L, opts, "requires_grad", 0)) tcl_check_rc(L, tc_requires_grad_(t, true));
}

static int filled(lua_State *L, double v, int is_empty) {
    int64_t shape[TC_MAX_DIMS];
    int opts;
    int n = shape_and_opts(L, 1, shape, &opts);
    tc_dtype dt;
    tc_device dev;
    tcl_optdtype_device(L, opts, &dt, &dev);
    tc_tensor **slot = tcl_slot(L);
    *slot = is_empty ? tc_empty(n, shape, dt, dev) : tc_full(n, shape, v, dt, dev);
    if (!*slot) return tcl_error(L);
    apply_requires_grad(L, opts, *slot);
    return tcl_done(L, *slot);
}

static int t_zeros(lua_State *L) { return filled(L, 0, 0); }
static int t_ones(lua_State *L) { return filled(L, 1, 0); }
static int t_empty(lua_State *L) { return filled(L, 0, 1); }

static int t_full(lua_State *L) {
    int64_t shape[TC_MAX_DIMS];
    int n = tcl_checkshape(L, 1, shape);
    luaL_checktype(L, 1, LUA_TTABLE);
    double v = luaL_checknumber(L, 2);
    tc_dtype dt;
    tc_device dev;
    tcl_optdtype_device(L, 3, &dt, &dev);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_full(n, shape, v, dt, dev);
    if (!*slot) return tcl_error(L);
    apply_requires_grad(L, 3, *slot);
    return tcl_done(L, *slot);
}

static int random_tensor(lua_State *L, bool normal) {
    int64_t shape[TC_MAX_DIMS];
    int opts;
    int n = shape_and_opts(L, 1, shape, &opts);
    tc_dtype dt;
    tc_device dev;
    tcl_optdtype_device(L, opts, &dt, &dev);
    tc_tensor **slot = tcl_slot(L);
    *slot = normal ? tc_randn(n, shape, dt, dev) : tc_rand(n, shape, dt, dev);
    if (!*slot) return tcl_error(L);
    apply_requires_grad(L, opts, *slot);
    return tcl_done(L, *slot);
}

static int t_rand(lua_State *L) { return random_tensor(L, false); }
static int t_randn(lua_State *L) { return random_tensor(L, true); }

/* T.randint(low, high, shape, opts) or T.randint(high, shape, opts); default dtype i64 */
static int t_randint(lua_State *L) {
    lua_Integer lo = 0, hi;
    int at = 2;
    if (lua_isnumber(L, 2)) { lo = luaL_checkinteger(L, 1); hi = luaL_checkinteger(L, 2); at = 3; }
    else hi = luaL_checkinteger(L, 1);
    int64_t shape[TC_MAX_DIMS];
    luaL_checktype(L, at, LUA_TTABLE);
    int n = tcl_checkshape(L, at, shape);
    tc_dtype dt = TC_I64;
    tc_device dev = TC_DEV_CPU;
    if (lua_istable(L, at + 1)) {
        tcl_optdtype_device(L, at + 1, &dt, &dev);
        lua_getfield(L, at + 1, "dtype");
        if (lua_isnil(L, -1)) dt = TC_I64;
        lua_pop(L, 1);
    }
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_randint(lo, hi, n, shape, dt, dev);
    return tcl_done(L, *slot);
}

static int t_randperm(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    tc_dtype dt = TC_I64;
    tc_device dev = TC_DEV_CPU;
    if (lua_istable(L, 2)) {
        tcl_optdtype_device(L, 2, &dt, &dev);
        lua_getfield(L, 2, "dtype");
        if (lua_isnil(L, -1)) dt = TC_I64;
        lua_pop(L, 1);
    }
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_randperm(n, dt, dev);
    return tcl_done(L, *slot);
}

static int t_multinomial(lua_State *L) {
    tc_tensor *p = tcl_check(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    int repl = lua_istable(L, 3) ? tcl_optbool(L, 3, "replacement", 0) : lua_toboolean(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_multinomial(p, n, repl);
    return tcl_done(L, *slot);
}

static int t_arange(lua_State *L) {
    double start = 0, end, step = 1;
    int top = lua_gettop(L), nnum = 0;
    while (nnum < top && lua_type(L, nnum + 1) == LUA_TNUMBER) nnum++;
    if (nnum == 1) end = luaL_checknumber(L, 1);
    else {
        start = luaL_checknumber(L, 1);
        end = luaL_checknumber(L, 2);
        if (nnum >= 3) step = luaL_checknumber(L, 3);
    }
    tc_dtype dt;
    tc_device dev;
    tcl_optdtype_device(L, nnum + 1, &dt, &dev);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_arange(start, end, step, dt, dev);
    return tcl_done(L, *slot);
}

static int t_linspace(lua_State *L) {
    double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    tc_dtype dt;
    tc_device dev;
    tcl_optdtype_device(L, 4, &dt, &dev);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_linspace(a, b, n, dt, dev);
    return tcl_done(L, *slot);
}

/* T.tensor(nested tables or a number, opts): the shape is read from the first elements,
 * every row is checked against it (ragged tables are an error) */
static int probe_shape(lua_State *L, int idx, int64_t *shape, int *has_bool) {
    int n = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (n == TC_MAX_DIMS) luaL_error(L, "tensor: too deeply nested (at most %d dimensions)", TC_MAX_DIMS);
        shape[n++] = (int64_t)luaL_len(L, -1);
        if (shape[n - 1] == 0) break;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    *has_bool = lua_isboolean(L, -1);
    lua_pop(L, 1);
    return n;
}

/* one element as an i64, exact for every Lua integer (a double holds only 53 bits);
 * a float truncates as a conversion to i64 does: NaN is 0, out of range saturates */
static int64_t element_i64(lua_State *L, int idx) {
    int isint;
    lua_Integer i = lua_tointegerx(L, idx, &isint);
    if (isint) return (int64_t)i;
    double v = lua_tonumber(L, idx);
    if (v != v) return 0;
    return v >= 0x1p63 ? INT64_MAX : v < -0x1p63 ? INT64_MIN : (int64_t)v;
}

/* fills out (doubles, or int64_t when i64) from nested tables, row-major */
static void fill_from_table(lua_State *L, int idx, int d, int ndim, const int64_t *shape, void *out, bool i64,
                            int64_t *pos) {
    if (d == ndim) {
        if (!lua_isboolean(L, idx) && !lua_isnumber(L, idx))
            luaL_error(L, "tensor: expected a number at element %d, got %s", (int)*pos + 1, luaL_typename(L, idx));
        if (i64) ((int64_t *)out)[*pos] = lua_isboolean(L, idx) ? lua_toboolean(L, idx) : element_i64(L, idx);
        else ((double *)out)[*pos] = lua_isboolean(L, idx) ? lua_toboolean(L, idx) : lua_tonumber(L, idx);
        (*pos)++;
        return;
    }
    if (!lua_istable(L, idx) || (int64_t)luaL_len(L, idx) != shape[d])
        luaL_error(L, "tensor: ragged nested table (dimension %d: expected %d elements, got %s)", d + 1,
                   (int)shape[d], lua_istable(L, idx) ? lua_pushfstring(L, "%d", (int)luaL_len(L, idx)) : luaL_typename(L, idx));
    for (int64_t i = 0; i < shape[d]; i++) {
        lua_geti(L, idx, i + 1);
        fill_from_table(L, lua_gettop(L), d + 1, ndim, shape, out, i64, pos);
        lua_pop(L, 1);
    }
}

static int t_tensor(lua_State *L) {
    if (tcl_test(L, 1)) { /* T.tensor(x): a copy */
        tc_tensor **slot = tcl_slot(L);
        *slot = tc_clone(tcl_check(L, 1));
        return tcl_done(L, *slot);
    }
    luaL_argexpected(L, lua_istable(L, 1) || lua_isnumber(L, 1) || lua_isboolean(L, 1), 1, "table or number");
    int64_t shape[TC_MAX_DIMS];
    int has_bool;
    int ndim = probe_shape(L, 1, shape, &has_bool);
    tc_dtype dt;
    tc_device dev;
    tcl_optdtype_device(L, 2, &dt, &dev);
    if (has_bool) { /* a table of booleans is a bool tensor unless a dtype is given */
        int given = lua_istable(L, 2) && lua_getfield(L, 2, "dtype") != LUA_TNIL;
        if (lua_istable(L, 2)) lua_pop(L, 1);
        if (!given) dt = TC_BOOL;
    }
    int64_t n = tc_shape_numel(ndim, shape);
    /* staging buffer owned by Lua, so a ragged-table error frees it; f64, or i64 for an i64
     * tensor so that integers past 2^53 stay exact */
    bool i64 = dt == TC_I64;
    void *buf = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof(double), 0);
    int64_t pos = 0;
    fill_from_table(L, 1, 0, ndim, shape, buf, i64, &pos);
    tc_tensor **host = tcl_slot(L);
    *host = tc_empty(ndim, shape, i64 ? TC_I64 : TC_F64, TC_DEV_CPU);
    if (!*host) return tcl_error(L);
    memcpy(tc_data(*host), buf, (size_t)n * sizeof(double));
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_to(*host, dt, dev);
    if (!*slot) return tcl_error(L);
    apply_requires_grad(L, 2, *slot);
    return tcl_done(L, *slot);
}

/* zeros_like, ones_like, rand_like, randn_like, empty_like, full_like (x, v) */
static int like(lua_State *L, int kind) {
    tc_tensor *x = tcl_check(L, 1);
    int opts = kind == 5 ? 3 : 2;
    double v = kind == 5 ? luaL_checknumber(L, 2) : kind == 1;
    tc_dtype dt = x->dtype;
    tc_device dev = x->storage->device;
    if (lua_istable(L, opts)) {
        lua_getfield(L, opts, "dtype");
        if (!lua_isnil(L, -1)) dt = tcl_checkdtype(L, -1);
        lua_getfield(L, opts, "device");
        if (!lua_isnil(L, -1)) dev = tcl_checkdevice(L, -1);
        lua_pop(L, 2);
    }
    tc_tensor **slot = tcl_slot(L);
    switch (kind) {
    case 2: *slot = tc_rand(x->ndim, x->shape, dt, dev); break;
    case 3: *slot = tc_randn(x->ndim, x->shape, dt, dev); break;
    case 4: *slot = tc_empty_format(x->ndim, x->shape, dt, dev, tc_suggest_format(x)); break;
    default: /* in x's memory format, as PyTorch's preserve_format (optimizer states match their parameter) */
        *slot = tc_empty_format(x->ndim, x->shape, dt, dev, tc_suggest_format(x));
        if (*slot && tc_fill_(*slot, v) != TC_OK) {
            tc_tensor_release(*slot);
            *slot = NULL;
        }
        break;
    }
    if (!*slot) return tcl_error(L);
    apply_requires_grad(L, opts, *slot);
    return tcl_done(L, *slot);
}
static int t_zeros_like(lua_State *L) { return like(L, 0); }
static int t_ones_like(lua_State *L) { return like(L, 1); }
static int t_rand_like(lua_State *L) { return like(L, 2); }
static int t_randn_like(lua_State *L) { return like(L, 3); }
static int t_empty_like(lua_State *L) { return like(L, 4); }
static int t_full_like(lua_State *L) { return like(L, 5); }

static int t_is_tensor(lua_State *L) {
    lua_pushboolean(L, tcl_toslot(L, 1) != NULL);
    return 1;
}

/* ---- random state -------------------------------------------------------------------------- */
static int t_manual_seed(lua_State *L) {
    tc_manual_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

/* the state is {seed = s, offset = o}: plain integers, easy to save in a checkpoint */
static int t_get_rng_state(lua_State *L) {
    uint64_t s, o;
    tc_rng_get(&s, &o);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)s);
    lua_setfield(L, -2, "seed");
    lua_pushinteger(L, (lua_Integer)o);
    lua_setfield(L, -2, "offset");
    return 1;
}

static int t_set_rng_state(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "seed");
    lua_getfield(L, 1, "offset");
    int ok1, ok2;
    lua_Integer s = lua_tointegerx(L, -2, &ok1), o = lua_tointegerx(L, -1, &ok2);
    luaL_argcheck(L, ok1 && ok2, 1, "expected {seed = integer, offset = integer}");
    tc_rng_set((uint64_t)s, (uint64_t)o);
    return 0;
}

/* ---- reading values out ---------------------------------------------------------------------- */
/* x itself when on the CPU, else a host copy pushed on the stack */
static tc_tensor *on_host(lua_State *L, tc_tensor *t) {
    if (t->storage->device.type == TC_CPU) return t;
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_to(t, t->dtype, TC_DEV_CPU);
    if (!*slot) tcl_error(L);
    return *slot;
}

/* one element of a host tensor as a Lua value; i64 is read as an integer, exact past 2^53 */
static void push_element(lua_State *L, const tc_tensor *t, const int64_t *idx) {
    if (t->dtype == TC_I64) {
        int64_t off = 0;
        for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
        lua_pushinteger(L, ((const int64_t *)tc_data(t))[off]);
        return;
    }
    double v = tc_get(t, idx);
    if (t->dtype == TC_BOOL) lua_pushboolean(L, v != 0);
    else if (!tc_dtype_is_float(t->dtype)) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
}

static int m_item(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    if (tc_numel(t) != 1) {
        double v;
        tcl_check_rc(L, tc_item(t, &v)); /* raises: its message says why */
    }
    int64_t idx[TC_MAX_DIMS] = {0};
    push_element(L, on_host(L, t), idx);
    return 1;
}

static void tolist_rec(lua_State *L, const tc_tensor *t, int d, int64_t *idx) {
    if (d == t->ndim) { push_element(L, t, idx); return; }
    lua_createtable(L, (int)t->shape[d], 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        idx[d] = i;
        tolist_rec(L, t, d + 1, idx);
        lua_rawseti(L, -2, i + 1);
    }
}

static int m_tolist(lua_State *L) {
    tc_tensor *t = on_host(L, tcl_check(L, 1));
    int64_t idx[TC_MAX_DIMS] = {0};
    luaL_checkstack(L, t->ndim + 4, "tolist");
    tolist_rec(L, t, 0, idx);
    return 1;
}

static int m_numel(lua_State *L) { lua_pushinteger(L, tc_numel(tcl_check(L, 1))); return 1; }
static int m_dim(lua_State *L) { lua_pushinteger(L, tcl_check(L, 1)->ndim); return 1; }

static int m_size(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_createtable(L, t->ndim, 0);
        for (int i = 0; i < t->ndim; i++) { lua_pushinteger(L, t->shape[i]); lua_rawseti(L, -2, i + 1); }
        return 1;
    }
    int d = tc_wrap_dim(tcl_checkdim(L, 2), t->ndim, "size");
    if (d < 0) return tcl_error(L);
    lua_pushinteger(L, t->shape[d]);
    return 1;
}

static int m_stride(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) { lua_pushinteger(L, t->stride[i]); lua_rawseti(L, -2, i + 1); }
    return 1;
}

/* the memory format named by an options table at index i: {memory_format = "channels_last"} */
static tc_memory_format opt_memory_format(lua_State *L, int i) {
    if (lua_isnoneornil(L, i)) return TC_CONTIGUOUS_FORMAT;
    luaL_checktype(L, i, LUA_TTABLE);
    lua_getfield(L, i, "memory_format");
    const char *name = lua_isnil(L, -1) ? "contiguous_format" : lua_tostring(L, -1);
    tc_memory_format f = TC_CONTIGUOUS_FORMAT;
    if (name && strcmp(name, "channels_last") == 0) f = TC_CHANNELS_LAST;
    else if (!name || strcmp(name, "contiguous_format") != 0)
        luaL_error(L, "memory_format must be \"contiguous_format\" or \"channels_last\", got %s",
                   name ? name : luaL_typename(L, -1));
    lua_pop(L, 1);
    return f;
}

/* is_contiguous() or is_contiguous{memory_format = "channels_last"} */
static int m_is_contiguous(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    lua_pushboolean(L, tc_is_contiguous_format(x, opt_memory_format(L, 2)));
    return 1;
}

/* same storage (for tests of views) */
static int m_storage_id(lua_State *L) {
    lua_pushlightuserdata(L, tcl_check(L, 1)->storage->data);
    return 1;
}

/* ---- conversions and copies --------------------------------------------------------------------- */
static int m_to(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    tc_dtype dt = t->dtype;
    tc_device dev = t->storage->device;
    for (int i = 2; i <= 3 && lua_isstring(L, i); i++) {
        const char *s = lua_tostring(L, i);
        int d = tc_dtype_from_name(s);
        if (d >= 0) dt = (tc_dtype)d;
        else dev = tcl_checkdevice(L, i);
    }
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "dtype");
        if (!lua_isnil(L, -1)) dt = tcl_checkdtype(L, -1);
        lua_getfield(L, 2, "device");
        if (!lua_isnil(L, -1)) dev = tcl_checkdevice(L, -1);
        lua_pop(L, 2);
    }
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_to(t, dt, dev);
    return tcl_done(L, *slot);
}

/* a method of x and up to nargs - 1 more arguments; settop pins the arguments below the
 * result slot (absent ones become nil), so call may read any of them */
#define SIMPLE(name, nargs, call)                                           \
    static int name(lua_State *L) {                                         \
        tc_tensor *x = tcl_check(L, 1);                                     \
        lua_settop(L, nargs);                                               \
        tc_tensor **slot = tcl_slot(L);                                     \
        *slot = call;                                                       \
        return tcl_done(L, *slot);                                          \
    }
/* contiguous() or contiguous{memory_format = "channels_last"} */
static int m_contiguous(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    tc_memory_format f = opt_memory_format(L, 2);
    lua_settop(L, 2);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_contiguous_format(x, f);
    return tcl_done(L, *slot);
}
SIMPLE(m_clone, 1, tc_clone(x))
SIMPLE(m_detach, 1, tc_detach(x))
SIMPLE(m_float, 1, tc_to(x, TC_F32, x->storage->device))
SIMPLE(m_pin_memory, 1, tc_pin_memory(x)) /* a copy in page-locked memory (x when already pinned) */
static int m_is_pinned(lua_State *L) { lua_pushboolean(L, tc_is_pinned(tcl_check(L, 1))); return 1; }
SIMPLE(m_double, 1, tc_to(x, TC_F64, x->storage->device))
SIMPLE(m_long, 1, tc_to(x, TC_I64, x->storage->device))

static int m_copy_(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *src = tcl_check(L, 2);
    tcl_check_rc(L, tc_copy_(x, src));
    lua_settop(L, 1);
    return 1;
}

static int m_fill_(lua_State *L) {
    tcl_check_rc(L, tc_fill_(tcl_check(L, 1), luaL_checknumber(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int m_zero_(lua_State *L) {
    tcl_check_rc(L, tc_zero_(tcl_check(L, 1)));
    lua_settop(L, 1);
    return 1;
}

static int m_uniform_(lua_State *L) {
    tcl_check_rc(L, tc_uniform_(tcl_check(L, 1), luaL_optnumber(L, 2, 0), luaL_optnumber(L, 3, 1)));
    lua_settop(L, 1);
    return 1;
}

static int m_normal_(lua_State *L) {
    tcl_check_rc(L, tc_normal_(tcl_check(L, 1), luaL_optnumber(L, 2, 0), luaL_optnumber(L, 3, 1)));
    lua_settop(L, 1);
    return 1;
}

/* ---- views ---------------------------------------------------------------------------------------- */
/* x:view(shape), x:reshape(shape), x:expand(shape): shape as a table or as numbers */
static int shaped(lua_State *L, tc_tensor *(*op)(tc_tensor *, int, const int64_t *)) {
    tc_tensor *x = tcl_check(L, 1);
    int64_t shape[TC_MAX_DIMS];
    int n = tcl_checkshape(L, 2, shape);
    tc_tensor **slot = tcl_slot(L);
    *slot = op(x, n, shape);
    return tcl_done(L, *slot);
}
static int m_view(lua_State *L) { return shaped(L, tc_view); }
static int m_reshape(lua_State *L) { return shaped(L, tc_reshape); }
static int m_expand(lua_State *L) { return shaped(L, tc_expand); }

static int m_expand_as(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *y = tcl_check(L, 2);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_expand(x, y->ndim, y->shape);
    return tcl_done(L, *slot);
}

static int m_permute(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    int perm[TC_MAX_DIMS];
    int n = lua_istable(L, 2) ? tcl_optdims(L, 2, perm) : 0;
    if (!lua_istable(L, 2))
        for (int i = 2; i <= lua_gettop(L) && n < TC_MAX_DIMS; i++) perm[n++] = tcl_checkdim(L, i);
    if (n != x->ndim) return luaL_error(L, "permute: expected %d dimensions, got %d", x->ndim, n);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_permute(x, perm);
    return tcl_done(L, *slot);
}

SIMPLE(m_transpose, 3, tc_transpose(x, tcl_checkdim(L, 2), tcl_checkdim(L, 3)))
SIMPLE(m_t, 1, x->ndim < 2 ? tc_view(x, x->ndim, x->shape) : tc_transpose(x, 0, 1))
SIMPLE(m_narrow, 4, tc_narrow(x, tcl_checkdim(L, 2), luaL_checkinteger(L, 3) - 1, luaL_checkinteger(L, 4)))
SIMPLE(m_select, 3, tc_select(x, tcl_checkdim(L, 2), luaL_checkinteger(L, 3) - 1))
SIMPLE(m_squeeze, 2, tc_squeeze(x, tcl_optdim(L, 2, TC_ALL_DIMS)))
SIMPLE(m_unsqueeze, 2, tc_unsqueeze(x, tcl_checkdim(L, 2)))
SIMPLE(m_flatten, 3, tc_flatten(x, tcl_optdim(L, 2, 0), tcl_optdim(L, 3, -1)))

/* ---- elementwise ---------------------------------------------------------------------------------------- */
#define UNARY(name, op) SIMPLE(name, 1, tc_unary(op, x))
UNARY(m_neg, TC_OP_NEG)
UNARY(m_exp, TC_OP_EXP)
UNARY(m_log, TC_OP_LOG)
UNARY(m_sqrt, TC_OP_SQRT)
UNARY(m_rsqrt, TC_OP_RSQRT)
UNARY(m_abs, TC_OP_ABS)
UNARY(m_sin, TC_OP_SIN)
UNARY(m_cos, TC_OP_COS)
UNARY(m_tanh, TC_OP_TANH)
UNARY(m_sigmoid, TC_OP_SIGMOID)
UNARY(m_relu, TC_OP_RELU)
UNARY(m_silu, TC_OP_SILU)
UNARY(m_quick_gelu, TC_OP_QUICK_GELU)
UNARY(m_softplus, TC_OP_SOFTPLUS)
UNARY(m_sign, TC_OP_SIGN)
UNARY(m_reciprocal, TC_OP_RECIPROCAL)
UNARY(m_square, TC_OP_SQUARE)
UNARY(m_logical_not, TC_OP_LOGICAL_NOT)
UNARY(m_isfinite, TC_OP_ISFINITE)

/* gelu(x) or gelu(x, {approximate = "tanh"}) / gelu(x, "tanh") */
static int m_gelu(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    const char *approx = "none";
    if (lua_isstring(L, 2)) approx = lua_tostring(L, 2);
    else if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "approximate");
        approx = luaL_optstring(L, -1, "none");
    }
    bool t = strcmp(approx, "tanh") == 0;
    if (!t && strcmp(approx, "none") != 0) return luaL_error(L, "gelu: approximate must be \"none\" or \"tanh\"");
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_unary(t ? TC_OP_GELU_TANH : TC_OP_GELU, x);
    return tcl_done(L, *slot);
}

static int m_clamp(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    double lo = lua_isnoneornil(L, 2) ? -INFINITY : luaL_checknumber(L, 2);
    double hi = lua_isnoneornil(L, 3) ? INFINITY : luaL_checknumber(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_unary_s(TC_OP_CLAMP, x, lo, hi);
    return tcl_done(L, *slot);
}

SIMPLE(m_leaky_relu, 2, tc_unary_s(TC_OP_LEAKY_RELU, x, luaL_optnumber(L, 2, 0.01), 0))

static int m_pow(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    tc_tensor **slot;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        double p = lua_tonumber(L, 2);
        slot = tcl_slot(L);
        *slot = tc_unary_s(TC_OP_POW_SCALAR, x, p, 0);
        return tcl_done(L, *slot);
    }
    tc_tensor *e = tcl_check(L, 2);
    slot = tcl_slot(L);
    *slot = tc_binary(TC_OP_POW, x, e);
    return tcl_done(L, *slot);
}

/* binary methods take a tensor or a number as the other operand */
static int binary_method(lua_State *L, tc_op op) {
    tc_tensor *a = tcl_check(L, 1);
    tc_tensor *b = tcl_operand(L, 2, a);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_binary(op, a, b);
    return tcl_done(L, *slot);
}
#define BINARY(name, op) static int name(lua_State *L) { return binary_method(L, op); }
BINARY(m_add, TC_OP_ADD)
BINARY(m_sub, TC_OP_SUB)
BINARY(m_mul, TC_OP_MUL)
BINARY(m_div, TC_OP_DIV)
BINARY(m_maximum, TC_OP_MAXIMUM)
BINARY(m_minimum, TC_OP_MINIMUM)
BINARY(m_eq, TC_OP_EQ)
BINARY(m_ne, TC_OP_NE)
BINARY(m_lt, TC_OP_LT)
BINARY(m_le, TC_OP_LE)
BINARY(m_gt, TC_OP_GT)
BINARY(m_ge, TC_OP_GE)
BINARY(m_logical_and, TC_OP_LOGICAL_AND)
BINARY(m_logical_or, TC_OP_LOGICAL_OR)

/* x:add(y, alpha) is x + alpha * y, as in PyTorch */
static int m_add_alpha(lua_State *L) {
    if (lua_isnoneornil(L, 3)) return m_add(L);
    tc_tensor *a = tcl_check(L, 1), *b = tcl_operand(L, 2, a);
    tc_tensor **t = tcl_slot(L);
    *t = tc_unary_s(TC_OP_MUL_SCALAR, b, luaL_checknumber(L, 3), 0);
    if (!*t) return tcl_error(L);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_binary(TC_OP_ADD, a, *t);
    return tcl_done(L, *slot);
}

/* in-place: x:add_(y), x:mul_(2), ... return x */
static int inplace(lua_State *L, tc_op op, tc_op scalar_op) {
    tc_tensor *a = tcl_check(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER && scalar_op != TC_OP_NONE) {
        double v = lua_tonumber(L, 2);
        if (!lua_isnoneornil(L, 3)) v *= luaL_checknumber(L, 3); /* add_(number, alpha) */
        tcl_check_rc(L, tc_unary_(scalar_op, a, op == TC_OP_SUB ? -v : v, 0));
    } else {
        tc_tensor *b = tcl_operand(L, 2, a);
        if (!lua_isnoneornil(L, 3)) { /* add_(y, alpha) */
            tc_tensor **t = tcl_slot(L);
            *t = tc_unary_s(TC_OP_MUL_SCALAR, b, luaL_checknumber(L, 3), 0);
            if (!*t) return tcl_error(L);
            b = *t;
        }
        tcl_check_rc(L, tc_binary_(op, a, b));
    }
    lua_settop(L, 1);
    return 1;
}
static int m_add_(lua_State *L) { return inplace(L, TC_OP_ADD, TC_OP_ADD_SCALAR); }
static int m_sub_(lua_State *L) { return inplace(L, TC_OP_SUB, TC_OP_ADD_SCALAR); }
static int m_mul_(lua_State *L) { return inplace(L, TC_OP_MUL, TC_OP_MUL_SCALAR); }
static int m_div_(lua_State *L) { return inplace(L, TC_OP_DIV, TC_OP_NONE); }

static int m_clamp_(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    double lo = lua_isnoneornil(L, 2) ? -INFINITY : luaL_checknumber(L, 2);
    double hi = lua_isnoneornil(L, 3) ? INFINITY : luaL_checknumber(L, 3);
    tcl_check_rc(L, tc_unary_(TC_OP_CLAMP, x, lo, hi));
    lua_settop(L, 1);
    return 1;
}

static int t_where(lua_State *L) {
    tc_tensor *c = tcl_check(L, 1);
    tc_tensor *a = tcl_test(L, 2), *b = tcl_test(L, 3);
    if (!a) a = tcl_operand(L, 2, b);
    if (!b) b = tcl_operand(L, 3, a);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_where(c, a, b);
    return tcl_done(L, *slot);
}

/* ---- reductions ------------------------------------------------------------------------------------- */
/* x:sum(), x:sum(dim), x:sum({d1, d2}, keepdim) */
static int reduction(lua_State *L, tc_op op) {
    tc_tensor *x = tcl_check(L, 1);
    int dims[TC_MAX_DIMS];
    int n = tcl_optdims(L, 2, dims);
    int keep = lua_toboolean(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_reduce(op, x, n, dims, keep);
    return tcl_done(L, *slot);
}
static int m_sum(lua_State *L) { return reduction(L, TC_OP_SUM); }
static int m_mean(lua_State *L) { return reduction(L, TC_OP_MEAN); }
static int m_prod(lua_State *L) { return reduction(L, TC_OP_PROD); }
static int m_logsumexp(lua_State *L) { return reduction(L, TC_OP_LOGSUMEXP); }
static int m_amax(lua_State *L) { return reduction(L, TC_OP_MAX); }
static int m_amin(lua_State *L) { return reduction(L, TC_OP_MIN); }

/* x:max() -> value; x:max(dim, keepdim) -> values, indices (1-based); x:max(y) -> maximum */
static int maxmin(lua_State *L, tc_op op) {
    tc_tensor *x = tcl_check(L, 1);
    if (tcl_test(L, 2)) return binary_method(L, op == TC_OP_MAX ? TC_OP_MAXIMUM : TC_OP_MINIMUM);
    if (lua_isnoneornil(L, 2)) return reduction(L, op);
    int d = tcl_checkdim(L, 2);
    int keep = lua_toboolean(L, 3);
    tc_tensor **vs = tcl_slot(L), **is = tcl_slot(L);
    tc_tensor *v, *i;
    tcl_check_rc(L, tc_max_dim(op, x, d, keep, &v, &i));
    *vs = v;
    *is = i;
    return 2;
}
static int m_max(lua_State *L) { return maxmin(L, TC_OP_MAX); }
static int m_min(lua_State *L) { return maxmin(L, TC_OP_MIN); }

static int argmaxmin(lua_State *L, tc_op op) {
    tc_tensor *x = tcl_check(L, 1);
    int d = tcl_optdim(L, 2, TC_ALL_DIMS), keep = lua_toboolean(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_argmax(op, x, d, keep);
    return tcl_done(L, *slot);
}
static int m_argmax(lua_State *L) { return argmaxmin(L, TC_OP_ARGMAX); }
static int m_argmin(lua_State *L) { return argmaxmin(L, TC_OP_ARGMIN); }

/* var/std(dim, keepdim, {correction = 1}) or (dim, {unbiased = false}) */
static int varstd(lua_State *L, bool std) {
    tc_tensor *x = tcl_check(L, 1);
    int dims[TC_MAX_DIMS];
    int n = tcl_optdims(L, 2, dims), keep = 0, opts = 0;
    if (lua_isboolean(L, 3)) { keep = lua_toboolean(L, 3); opts = 4; }
    else opts = 3;
    double corr = 1;
    if (lua_istable(L, opts)) {
        corr = tcl_optnumber(L, opts, "correction", tcl_optbool(L, opts, "unbiased", 1) ? 1 : 0);
        keep = tcl_optbool(L, opts, "keepdim", keep);
    }
    tc_tensor **slot = tcl_slot(L);
    *slot = std ? tc_std(x, n, dims, corr, keep) : tc_var(x, n, dims, corr, keep);
    return tcl_done(L, *slot);
}
static int m_var(lua_State *L) { return varstd(L, false); }
static int m_std(lua_State *L) { return varstd(L, true); }

/* x:norm(p = 2, dim, keepdim) */
static int m_norm(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    double p = 2;
    if (lua_type(L, 2) == LUA_TNUMBER) p = lua_tonumber(L, 2);
    else if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "inf") == 0) p = INFINITY;
    else if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "fro") == 0) p = 2;
    else if (!lua_isnoneornil(L, 2)) return luaL_argerror(L, 2, "p must be a number, \"fro\" or \"inf\"");
    int dims[TC_MAX_DIMS];
    int n = tcl_optdims(L, 3, dims), keep = lua_toboolean(L, 4);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_norm(x, p, n, dims, keep);
    return tcl_done(L, *slot);
}

/* ---- linear algebra ---------------------------------------------------------------------------------- */
#define BINOP(name, call)                                                    \
    static int name(lua_State *L) {                                          \
        tc_tensor *a = tcl_check(L, 1), *b = tcl_check(L, 2);                \
        tc_tensor **slot = tcl_slot(L);                                      \
        *slot = call;                                                        \
        return tcl_done(L, *slot);                                           \
    }
BINOP(m_matmul, tc_matmul(a, b))
BINOP(m_bmm, tc_bmm(a, b))
BINOP(m_outer, tc_outer(a, b))

static int m_linear(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *w = tcl_check(L, 2), *b = tcl_opt(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_linear(x, w, b);
    return tcl_done(L, *slot);
}

/* ---- registration ---------------------------------------------------------------------------------- */
const luaL_Reg tcl_tensor_funcs[] = {
    {"zeros", t_zeros}, {"ones", t_ones}, {"empty", t_empty}, {"full", t_full},
    {"rand", t_rand}, {"randn", t_randn}, {"randint", t_randint}, {"randperm", t_randperm},
    {"multinomial", t_multinomial}, {"arange", t_arange}, {"linspace", t_linspace},
    {"tensor", t_tensor}, {"zeros_like", t_zeros_like}, {"ones_like", t_ones_like},
    {"rand_like", t_rand_like}, {"randn_like", t_randn_like}, {"empty_like", t_empty_like},
    {"full_like", t_full_like}, {"is_tensor", t_is_tensor}, {"manual_seed", t_manual_seed},
    {"get_rng_state", t_get_rng_state}, {"set_rng_state", t_set_rng_state},
    {"where", t_where}, {"matmul", m_matmul}, {"bmm", m_bmm}, {"outer", m_outer},
    {"maximum", m_maximum}, {"minimum", m_minimum}, {"linear", m_linear},
    {"eq", m_eq}, {"ne", m_ne}, {"lt", m_lt}, {"le", m_le}, {"gt", m_gt}, {"ge", m_ge},
    {NULL, NULL},
};

const luaL_Reg tcl_tensor_methods[] = {
    {"item", m_item}, {"tolist", m_tolist}, {"numel", m_numel}, {"dim", m_dim}, {"size", m_size},
    {"stride", m_stride}, {"is_contiguous", m_is_contiguous}, {"storage_id", m_storage_id},
    {"to", m_to}, {"contiguous", m_contiguous}, {"clone", m_clone}, {"detach", m_detach},
    {"float", m_float}, {"double", m_double}, {"long", m_long},
    {"pin_memory", m_pin_memory}, {"is_pinned", m_is_pinned},
    {"copy_", m_copy_}, {"fill_", m_fill_}, {"zero_", m_zero_}, {"uniform_", m_uniform_}, {"normal_", m_normal_},
    {"view", m_view}, {"reshape", m_reshape}, {"expand", m_expand}, {"expand_as", m_expand_as},
    {"permute", m_permute}, {"transpose", m_transpose}, {"t", m_t}, {"narrow", m_narrow},
    {"select", m_select}, {"squeeze", m_squeeze}, {"unsqueeze", m_unsqueeze}, {"flatten", m_flatten},
    {"neg", m_neg}, {"exp", m_exp}, {"log", m_log}, {"sqrt", m_sqrt}, {"rsqrt", m_rsqrt}, {"abs", m_abs},
    {"sin", m_sin}, {"cos", m_cos}, {"tanh", m_tanh}, {"sigmoid", m_sigmoid}, {"relu", m_relu},
    {"silu", m_silu}, {"gelu", m_gelu}, {"quick_gelu", m_quick_gelu}, {"softplus", m_softplus},
    {"sign", m_sign}, {"reciprocal", m_reciprocal}, {"square", m_square}, {"logical_not", m_logical_not},
    {"isfinite", m_isfinite}, {"clamp", m_clamp}, {"leaky_relu", m_leaky_relu}, {"pow", m_pow},
    {"add", m_add_alpha}, {"sub", m_sub}, {"mul", m_mul}, {"div", m_div}, {"maximum", m_maximum},
    {"minimum", m_minimum}, {"eq", m_eq}, {"ne", m_ne}, {"lt", m_lt}, {"le", m_le}, {"gt", m_gt},
    {"ge", m_ge}, {"logical_and", m_logical_and}, {"logical_or", m_logical_or},
    {"add_", m_add_}, {"sub_", m_sub_}, {"mul_", m_mul_}, {"div_", m_div_}, {"clamp_", m_clamp_},
    {"sum", m_sum}, {"mean", m_mean}, {"prod", m_prod}, {"logsumexp", m_logsumexp}, {"amax", m_amax},
    {"amin", m_amin}, {"max", m_max}, {"min", m_min}, {"argmax", m_argmax}, {"argmin", m_argmin},
    {"var", m_var}, {"std", m_std}, {"norm", m_norm},
    {"matmul", m_matmul}, {"bmm", m_bmm}, {"outer", m_outer},
    {NULL, NULL},
};
