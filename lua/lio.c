/* lio.c: binding for tensor files. T.save(path, {name = tensor, ...}, metadata) writes a
 * safetensors file (atomically); T.load(path) returns its tensors, zero-copy views of the
 * mapped file, and its metadata table. I/O failures raise with the engine's message.
 * x:tobytes() and T.frombytes(s, dtype, shape) move a CPU tensor's elements to and from a
 * Lua string (for records in other containers: zstd frames, sockets). */
#include "ltocha.h"
#include "tocha_io.h"

#include <string.h>

#define TCL_DICT "tocha.TensorDict"

/* a string at idx without embedded NULs (the C side takes NUL-terminated names) */
static const char *check_text(lua_State *L, int idx, const char *what) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (strlen(s) != len) luaL_error(L, "save: %s '%s' contains a NUL character", what, s);
    return s;
}

static int count_entries(lua_State *L, int idx) {
    int n = 0;
    if (lua_isnil(L, idx)) return 0;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) n++;
    return n;
}

/* T.save(path, tensors, metadata): tensor names and metadata keys are strings; metadata
 * values are strings, numbers are written as tostring gives them. Every array handed to
 * the C side is a Lua userdata, so an argument error midway leaks nothing. */
static int io_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    int n = count_entries(L, 2), nmeta = count_entries(L, 3);
    tc_tensor_dict d = {0};
    d.names = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *d.names, 0);
    d.tensors = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *d.tensors, 0);
    d.meta_keys = lua_newuserdatauv(L, ((size_t)nmeta + 1) * sizeof *d.meta_keys, 0);
    d.meta_values = lua_newuserdatauv(L, ((size_t)nmeta + 1) * sizeof *d.meta_values, 0);
    lua_newtable(L); /* keeps the strings made from numbers alive */
    int anchor = lua_gettop(L);

    for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "save: tensor names must be strings (got a %s key)", luaL_typename(L, -2));
        const char *name = check_text(L, -2, "tensor name");
        tc_tensor **p = tcl_toslot(L, -1);
        if (!p) return luaL_error(L, "save: value for '%s' is not a tensor (got %s)", name, luaL_typename(L, -1));
        if (!*p) return luaL_error(L, "save: tensor '%s' was released (used after <close>)", name);
        d.names[d.count] = (char *)name;
        d.tensors[d.count++] = *p;
    }
    if (nmeta)
        for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                return luaL_error(L, "save: metadata keys must be strings (got a %s key)", luaL_typename(L, -2));
            const char *key = check_text(L, -2, "metadata key");
            int vt = lua_type(L, -1);
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
                return luaL_error(L, "save: metadata value for '%s' must be a string or a number (got %s)", key, luaL_typename(L, -1));
            luaL_tolstring(L, -1, NULL); /* the string as it is, or tostring of the number */
            d.meta_keys[d.nmeta] = (char *)key;
            d.meta_values[d.nmeta++] = (char *)check_text(L, -1, "metadata value");
            lua_rawseti(L, anchor, d.nmeta);
        }
    tcl_check_rc(L, tc_safetensors_save(path, &d));
    return 0;
}

static int dict_gc(lua_State *L) {
    tc_tensor_dict_free(luaL_checkudata(L, 1, TCL_DICT));
    return 0;
}

/* T.load(path) -> tensors, metadata. The loaded dict lives in a userdata whose __gc frees
 * what was not yet handed to Lua, so no error while building the tables can leak it. */
static int io_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    tc_tensor_dict *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    if (luaL_newmetatable(L, TCL_DICT)) {
        lua_pushcfunction(L, dict_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (tc_safetensors_load(path, d) != TC_OK) return tcl_error(L);

    lua_createtable(L, 0, d->count);
    for (int i = 0; i < d->count; i++) {
        tc_tensor **slot = tcl_slot(L);
        *slot = d->tensors[i];
        d->tensors[i] = NULL; /* now Lua's */
        lua_setfield(L, -2, d->names[i]);
    }
    lua_createtable(L, 0, d->nmeta);
    for (int i = 0; i < d->nmeta; i++) {
        lua_pushstring(L, d->meta_values[i]);
        lua_setfield(L, -2, d->meta_keys[i]);
    }
    tc_tensor_dict_free(d);
    return 2;
}

/* x:tobytes() -> the elements of a CPU tensor, row-major, as a string */
static int io_tobytes(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    if (x->storage->device.type != TC_CPU) return luaL_error(L, "tobytes: the tensor is on %s; move it to the CPU first",
                                                         x->storage->device.type == TC_CUDA ? "cuda" : "another device");
    tc_tensor **slot = tcl_slot(L); /* keeps a contiguous copy alive (and released) through pushlstring */
    *slot = tc_contiguous(x);
    if (!*slot) return tcl_error(L);
    lua_pushlstring(L, tc_data(*slot), (size_t)tc_numel(*slot) * tc_dtype_size(x->dtype));
    return 1;
}

/* T.frombytes(s, dtype, shape) -> a new CPU tensor holding a copy of s's bytes */
static int io_frombytes(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    tc_dtype dt = tcl_checkdtype(L, 2);
    int64_t shape[TC_MAX_DIMS];
    int nd = tcl_checkshape(L, 3, shape);
    size_t want = (size_t)tc_shape_numel(nd, shape) * tc_dtype_size(dt);
    if (want != n) return luaL_error(L, "frombytes: %d bytes do not make a %s tensor of that shape (%d bytes)", (int)n,
                                     tc_dtype_name(dt), (int)want);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_empty(nd, shape, dt, TC_DEV_CPU);
    if (*slot && n) memcpy(tc_data(*slot), s, n);
    return tcl_done(L, *slot);
}

const luaL_Reg tcl_io_funcs[] = {{"save", io_save}, {"load", io_load}, {"frombytes", io_frombytes}, {NULL, NULL}};
const luaL_Reg tcl_io_methods[] = {{"tobytes", io_tobytes}, {NULL, NULL}};
