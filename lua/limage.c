/* limage.c: binding for images and data loading, into T._image: codecs, transforms, transform
 * pipelines, sample sources (files and shards), the worker-pool loader and zstd. The Lua side (tocha.image, tocha.data) gives these their user-facing shape. */
#include "ltocha.h"
#include "tocha_io.h"

#include <stdlib.h>
#include <string.h>

#define TCL_PIPELINE "tocha.Pipeline"
#define TCL_SOURCE "tocha.Source"
#define TCL_LOADER "tocha.Loader"
#define TCL_BATCH "tocha.LoaderBatch"

/* a userdata with metatable `name`, made on first use with gc as __gc and __close */
static void *new_udata(lua_State *L, size_t size, const char *name, lua_CFunction gc) {
    void *p = lua_newuserdatauv(L, size, 0);
    memset(p, 0, size);
    if (luaL_newmetatable(L, name)) {
        if (gc) {
            lua_pushcfunction(L, gc);
            lua_setfield(L, -2, "__gc");
            lua_pushcfunction(L, gc);
            lua_setfield(L, -2, "__close");
        }
    }
    lua_setmetatable(L, -2);
    return p;
}

/* ---- codecs ------------------------------------------------------------------------------------ */
static int checkchannels(lua_State *L, int idx) {
    lua_Integer c = luaL_optinteger(L, idx, 0);
    luaL_argcheck(L, c >= 0 && c <= 4, idx, "channels must be 0 (as stored), 1, 2, 3 or 4");
    return (int)c;
}

/* decode(bytes, channels, name) -> tensor | nil, msg */
static int l_decode(lua_State *L) {
    size_t n;
    const char *data = luaL_checklstring(L, 1, &n);
    int channels = checkchannels(L, 2);
    const char *name = luaL_optstring(L, 3, "image");
    tc_tensor **slot = tcl_slot(L);
    if (!(*slot = tc_image_decode(data, n, channels, name))) return tcl_fail(L);
    return tcl_done(L, *slot);
}

/* read(path, channels) -> tensor | nil, msg */
static int l_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int channels = checkchannels(L, 2);
    tc_tensor **slot = tcl_slot(L);
    if (!(*slot = tc_image_read(path, channels))) return tcl_fail(L);
    return tcl_done(L, *slot);
}

static tc_image_format checkformat(lua_State *L, int idx) {
    static const char *const names[] = {"png", "jpeg", "jpg", NULL};
    int i = luaL_checkoption(L, idx, "png", names);
    return i == 0 ? TC_IMAGE_PNG : TC_IMAGE_JPEG;
}

/* a malloc'd buffer handed to Lua as a string; the userdata frees it even if pushing fails */
typedef struct { void *data; } buffer;
static int buffer_gc(lua_State *L) {
    buffer *b = lua_touserdata(L, 1);
    free(b->data);
    b->data = NULL;
    return 0;
}

/* encode(t, "png" | "jpeg", quality, text) -> bytes; text: {key = value} PNG text chunks */
static int l_encode(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    tc_image_format fmt = checkformat(L, 2);
    int quality = (int)luaL_optinteger(L, 3, -1);
    int ntext = 0;
    const char **keys = NULL, **values = NULL;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        if (fmt != TC_IMAGE_PNG) return luaL_error(L, "image: text chunks are for PNG only");
        for (lua_pushnil(L); lua_next(L, 4); lua_pop(L, 1)) ntext++;
        keys = lua_newuserdatauv(L, ((size_t)ntext + 1) * sizeof *keys, 0); /* freed by Lua, even on error */
        values = lua_newuserdatauv(L, ((size_t)ntext + 1) * sizeof *values, 0);
        int i = 0;
        for (lua_pushnil(L); lua_next(L, 4); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "image: PNG text must map strings to strings");
            size_t len;
            values[i] = lua_tolstring(L, -1, &len);
            if (strlen(values[i]) != len) return luaL_error(L, "image: PNG text value for '%s' contains a NUL", lua_tostring(L, -2));
            keys[i++] = lua_tostring(L, -2); /* both stay alive in the table at 4 */
        }
    }
    buffer *b = new_udata(L, sizeof *b, "tocha.Buffer", buffer_gc);
    size_t n;
    int rc = fmt == TC_IMAGE_PNG ? tc_image_encode_png(t, quality, keys, values, ntext, &b->data, &n)
                                 : tc_image_encode(t, fmt, quality, &b->data, &n);
    if (rc != TC_OK) return tcl_error(L);
    lua_pushlstring(L, b->data, n);
    free(b->data);
    b->data = NULL;
    return 1;
}

/* write(path, t, quality) -> true; raises on failure */
static int l_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    tc_tensor *t = tcl_check(L, 2);
    tcl_check_rc(L, tc_image_write(path, t, (int)luaL_optinteger(L, 3, -1)));
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- transforms ----------------------------------------------------------------------------------- */
static const char *const resize_modes[] = {"nearest", "bilinear", "bicubic", "area", "lanczos", NULL};

/* resize(t, h, w, mode, antialias) */
static int l_resize(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), w = luaL_checkinteger(L, 3);
    int mode = luaL_checkoption(L, 4, "bilinear", resize_modes);
    int aa = lua_isnoneornil(L, 5) ? 1 : lua_toboolean(L, 5);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_image_resize(t, h, w, (tc_resize_mode)mode, aa);
    return tcl_done(L, *slot);
}

/* resize_float(t, h, w, mode, antialias) -> f32 [C, h, w] */
static int l_resize_float(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), w = luaL_checkinteger(L, 3);
    int mode = luaL_checkoption(L, 4, "bicubic", resize_modes);
    int aa = lua_isnoneornil(L, 5) ? 1 : lua_toboolean(L, 5);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_image_resize_float(t, h, w, (tc_resize_mode)mode, aa);
    return tcl_done(L, *slot);
}

/* crop(t, top, left, h, w): top and left 1-based */
static int l_crop(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    lua_Integer top = luaL_checkinteger(L, 2), left = luaL_checkinteger(L, 3);
    lua_Integer h = luaL_checkinteger(L, 4), w = luaL_checkinteger(L, 5);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_image_crop(t, top - 1, left - 1, h, w);
    return tcl_done(L, *slot);
}

static int l_hflip(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_image_hflip(t);
    return tcl_done(L, *slot);
}

static int l_to_float(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_image_to_float(t);
    return tcl_done(L, *slot);
}

/* to_u8(t, lo, hi) */
static int l_to_u8(lua_State *L) {
    tc_tensor *t = tcl_check(L, 1);
    double lo = luaL_optnumber(L, 2, -1), hi = luaL_optnumber(L, 3, 1);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_image_to_u8(t, lo, hi);
    return tcl_done(L, *slot);
}

/* ---- pipelines --------------------------------------------------------------------------------------
 * pipeline(channels, ops): ops a list of {op = "resize", h =, w =, mode =, antialias =},
 * {op = "center_crop" | "random_crop", h =, w =}, {op = "hflip", p =}, {op = "to_float"} */
static int l_pipeline(lua_State *L) {
    static const char *const kinds[] = {"resize", "center_crop", "random_crop", "hflip", "to_float", NULL};
    int channels = checkchannels(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    tc_pipeline *p = new_udata(L, sizeof *p, TCL_PIPELINE, NULL);
    p->channels = channels;
    p->nops = (int)luaL_len(L, 2);
    if (p->nops > TC_MAX_TRANSFORMS) return luaL_error(L, "pipeline: at most %d transforms", TC_MAX_TRANSFORMS);
    for (int i = 0; i < p->nops; i++) {
        tc_transform *t = &p->ops[i];
        lua_geti(L, 2, i + 1);
        int top = lua_gettop(L);
        if (!lua_istable(L, top)) return luaL_error(L, "pipeline: transform %d is not a table", i + 1);
        lua_getfield(L, top, "op");
        t->kind = (tc_tf_kind)luaL_checkoption(L, -1, NULL, kinds);
        lua_getfield(L, top, "mode");
        t->mode = (tc_resize_mode)luaL_checkoption(L, -1, "bilinear", resize_modes);
        lua_pop(L, 2);
        t->h = (int64_t)tcl_optnumber(L, top, "h", 0);
        t->w = (int64_t)tcl_optnumber(L, top, "w", 0);
        t->antialias = tcl_optbool(L, top, "antialias", 1);
        t->p = tcl_optnumber(L, top, "p", 0.5);
        lua_pop(L, 1);
    }
    tcl_check_rc(L, tc_pipeline_check(p));
    return 1;
}

/* the (seed, counter) for a run: given, or reserved from the global generator */
static void rng_key(lua_State *L, int idx, int nops, uint64_t *seed, uint64_t *counter) {
    if (!lua_isnoneornil(L, idx)) {
        *seed = (uint64_t)luaL_checkinteger(L, idx);
        *counter = (uint64_t)luaL_checkinteger(L, idx + 1);
        return;
    }
    uint64_t off;
    tc_rng_get(seed, &off);
    *counter = tc_rng_reserve((uint64_t)(nops > 0 ? nops : 1));
}

/* pipeline_run(p, img, [seed, counter]) */
static int l_pipeline_run(lua_State *L) {
    tc_pipeline *p = luaL_checkudata(L, 1, TCL_PIPELINE);
    tc_tensor *img = tcl_check(L, 2);
    uint64_t seed, counter;
    rng_key(L, 3, p->nops, &seed, &counter);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_pipeline_run(p, img, seed, counter);
    return tcl_done(L, *slot);
}

/* pipeline_shape(p) -> shape, dtype | nil */
static int l_pipeline_shape(lua_State *L) {
    tc_pipeline *p = luaL_checkudata(L, 1, TCL_PIPELINE);
    int64_t shape[3];
    tc_dtype dt;
    if (!tc_pipeline_out_shape(p, shape, &dt)) { lua_pushnil(L); return 1; }
    lua_createtable(L, 3, 0);
    for (int i = 0; i < 3; i++) {
        lua_pushinteger(L, shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushstring(L, tc_dtype_name(dt));
    return 2;
}

/* ---- sources ----------------------------------------------------------------------------------------- */
static int source_gc(lua_State *L) {
    tc_source **s = luaL_checkudata(L, 1, TCL_SOURCE);
    tc_source_release(*s);
    *s = NULL;
    return 0;
}

static tc_source *checksource(lua_State *L, int idx) {
    tc_source **s = luaL_checkudata(L, idx, TCL_SOURCE);
    if (!*s) luaL_argerror(L, idx, "source was closed");
    return *s;
}

/* a Lua list of strings as a C array that lives in a userdata on the stack */
static const char **string_list(lua_State *L, int idx, int64_t *n) {
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = (int64_t)luaL_len(L, idx);
    const char **out = lua_newuserdatauv(L, sizeof(char *) * (size_t)(*n ? *n : 1), 1);
    lua_pushvalue(L, idx); /* keeps the strings alive with the array */
    lua_setiuservalue(L, -2, 1);
    for (int64_t i = 0; i < *n; i++) {
        lua_geti(L, idx, i + 1);
        if (!(out[i] = lua_tostring(L, -1))) luaL_error(L, "element %d is not a string", (int)i + 1);
        lua_pop(L, 1);
    }
    return out;
}

/* source_files({paths}) */
static int l_source_files(lua_State *L) {
    int64_t n;
    const char **paths = string_list(L, 1, &n);
    tc_source **s = new_udata(L, sizeof *s, TCL_SOURCE, source_gc);
    if (!(*s = tc_source_files(n, paths))) return tcl_error(L);
    return 1;
}

/* source_shards({shard paths}, {shard (1-based)}, {offset}, {size}, {names}) */
static int l_source_shards(lua_State *L) {
    int64_t nshards, n;
    const char **paths = string_list(L, 1, &nshards);
    const char **names = string_list(L, 5, &n);
    int32_t *shard = lua_newuserdatauv(L, sizeof(int32_t) * (size_t)(n ? n : 1), 0);
    uint64_t *off = lua_newuserdatauv(L, sizeof(uint64_t) * (size_t)(n ? n : 1), 0);
    uint64_t *size = lua_newuserdatauv(L, sizeof(uint64_t) * (size_t)(n ? n : 1), 0);
    for (int64_t i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        lua_geti(L, 3, i + 1);
        lua_geti(L, 4, i + 1);
        int ok1, ok2, ok3;
        lua_Integer a = lua_tointegerx(L, -3, &ok1), b = lua_tointegerx(L, -2, &ok2), c = lua_tointegerx(L, -1, &ok3);
        if (!ok1 || !ok2 || !ok3 || b < 0 || c < 0) return luaL_error(L, "shards: bad index entry for sample %s", names[i]);
        shard[i] = (int32_t)(a - 1);
        off[i] = (uint64_t)b;
        size[i] = (uint64_t)c;
        lua_pop(L, 3);
    }
    tc_source **s = new_udata(L, sizeof *s, TCL_SOURCE, source_gc);
    if (!(*s = tc_source_shards((int)nshards, paths, n, shard, off, size, names))) return tcl_error(L);
    return 1;
}

/* source_read(src, i) -> bytes | nil, msg */
static int l_source_read(lua_State *L) {
    tc_source *s = checksource(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    buffer *b = new_udata(L, sizeof *b, "tocha.Buffer", buffer_gc);
    size_t n;
    if (tc_source_read(s, i - 1, &b->data, &n) != TC_OK) return tcl_fail(L);
    lua_pushlstring(L, b->data, n);
    free(b->data);
    b->data = NULL;
    return 1;
}

/* source_load(src, i, pipeline, [seed, counter]) -> tensor | nil, msg */
static int l_source_load(lua_State *L) {
    tc_source *s = checksource(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    tc_pipeline *p = luaL_checkudata(L, 3, TCL_PIPELINE);
    uint64_t seed, counter;
    rng_key(L, 4, p->nops, &seed, &counter);
    tc_tensor **slot = tcl_slot(L);
    if (!(*slot = tc_source_load(s, i - 1, p, seed, counter))) return tcl_fail(L);
    return tcl_done(L, *slot);
}

static int l_source_len(lua_State *L) {
    lua_pushinteger(L, tc_source_len(checksource(L, 1)));
    return 1;
}

/* ---- the loader --------------------------------------------------------------------------------------- */
static int loader_gc(lua_State *L) {
    tc_loader **l = luaL_checkudata(L, 1, TCL_LOADER);
    tc_loader_free(*l);
    *l = NULL;
    return 0;
}

static tc_loader *checkloader(lua_State *L, int idx) {
    tc_loader **l = luaL_checkudata(L, idx, TCL_LOADER);
    if (!*l) luaL_argerror(L, idx, "loader was closed");
    return *l;
}

/* loader_new(workers, depth) */
static int l_loader_new(lua_State *L) {
    int workers = (int)luaL_checkinteger(L, 1), depth = (int)luaL_checkinteger(L, 2);
    tc_loader **l = new_udata(L, sizeof *l, TCL_LOADER, loader_gc);
    if (!(*l = tc_loader_new(workers, depth))) return tcl_error(L);
    return 1;
}

static int l_loader_close(lua_State *L) { return loader_gc(L); }

static int l_loader_pending(lua_State *L) {
    lua_pushinteger(L, tc_loader_pending(checkloader(L, 1)));
    return 1;
}

/* loader_submit(l, samples, direct): samples[j] = {src, index, pipeline, seed, counter} or
 * {err = "why"}; direct: stack into one batch tensor when every sample shares a pipeline
 * whose output shape is fixed (rows of failed samples are dropped). Returns whether it did. */
static int l_loader_submit(lua_State *L) {
    tc_loader *l = checkloader(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int direct = lua_toboolean(L, 3);
    int n = (int)luaL_len(L, 2);
    luaL_argcheck(L, n >= 1, 2, "a batch needs at least one sample");
    tc_loader_sample *smp = lua_newuserdatauv(L, sizeof *smp * (size_t)n, 0);
    memset(smp, 0, sizeof *smp * (size_t)n);
    tc_pipeline *first = NULL;
    for (int j = 0; j < n; j++) {
        lua_geti(L, 2, j + 1);
        int t = lua_gettop(L);
        luaL_checktype(L, t, LUA_TTABLE);
        lua_getfield(L, t, "err");
        if (!lua_isnil(L, -1)) {
            smp[j].err = luaL_checkstring(L, -1); /* the samples table keeps it alive */
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 1);
        lua_geti(L, t, 1);
        smp[j].src = checksource(L, -1);
        lua_geti(L, t, 2);
        smp[j].index = luaL_checkinteger(L, -1) - 1;
        lua_geti(L, t, 3);
        smp[j].pipe = luaL_checkudata(L, -1, TCL_PIPELINE);
        lua_geti(L, t, 4);
        smp[j].seed = (uint64_t)luaL_checkinteger(L, -1);
        lua_geti(L, t, 5);
        smp[j].counter = (uint64_t)luaL_checkinteger(L, -1);
        lua_pop(L, 6);
        if (!first) first = (tc_pipeline *)smp[j].pipe;
        else if (smp[j].pipe != first) direct = 0;
    }
    int64_t shape[4];
    tc_dtype dt;
    tc_tensor **slot = tcl_slot(L);
    if (direct && first && tc_pipeline_out_shape(first, shape + 1, &dt)) {
        shape[0] = n;
        if (!(*slot = tc_empty(4, shape, dt, TC_DEV_CPU))) return tcl_error(L);
    }
    tcl_check_rc(L, tc_loader_submit(l, n, smp, *slot));
    lua_pushboolean(L, *slot != NULL);
    return 1;
}

static int batch_gc(lua_State *L) {
    tc_loader_batch *b = luaL_checkudata(L, 1, TCL_BATCH);
    tc_loader_batch_free(b);
    return 0;
}

/* loader_take(l) -> batch tensor or list of tensors (false where a sample failed),
 *                   errors {[j] = msg}, number of failures */
static int l_loader_take(lua_State *L) {
    tc_loader *l = checkloader(L, 1);
    tc_loader_batch *b = new_udata(L, sizeof *b, TCL_BATCH, batch_gc);
    tcl_check_rc(L, tc_loader_take(l, b));
    if (b->batch) {
        tc_tensor **slot = tcl_slot(L);
        *slot = b->batch;
        b->batch = NULL;
        tcl_done(L, *slot);
    } else {
        lua_createtable(L, b->n, 0);
        for (int j = 0; j < b->n; j++) {
            if (b->items[j]) {
                tcl_push(L, b->items[j]);
                b->items[j] = NULL;
            } else lua_pushboolean(L, 0);
            lua_rawseti(L, -2, j + 1);
        }
    }
    int nerr = 0;
    lua_newtable(L);
    for (int j = 0; j < b->n; j++)
        if (b->errors[j]) {
            lua_pushstring(L, b->errors[j]);
            lua_rawseti(L, -2, j + 1);
            nerr++;
        }
    lua_pushinteger(L, nerr);
    tc_loader_batch_free(b);
    return 3;
}

/* permutation(n, seed, epoch) -> {1-based indices} */
static int l_permutation(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0, 1, "negative size");
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 2), epoch = (uint64_t)luaL_checkinteger(L, 3);
    int64_t *p = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(n ? n : 1), 0);
    tc_permutation(n, seed, epoch, p);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_pushinteger(L, p[i] + 1);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* ---- zstd ------------------------------------------------------------------------------------------ */
/* zstd_compress(bytes, level) */
static int l_zstd_compress(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int level = (int)luaL_optinteger(L, 2, 3);
    buffer *b = new_udata(L, sizeof *b, "tocha.Buffer", buffer_gc);
    size_t m;
    if (tc_zstd_compress(s, n, level, &b->data, &m) != TC_OK) return tcl_error(L);
    lua_pushlstring(L, b->data, m);
    free(b->data);
    b->data = NULL;
    return 1;
}

/* zstd_decompress(bytes, what) -> bytes | nil, msg */
static int l_zstd_decompress(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *what = luaL_optstring(L, 2, "zstd");
    buffer *b = new_udata(L, sizeof *b, "tocha.Buffer", buffer_gc);
    size_t m;
    if (tc_zstd_decompress(s, n, &b->data, &m, what) != TC_OK) return tcl_fail(L);
    lua_pushlstring(L, b->data, m);
    free(b->data);
    b->data = NULL;
    return 1;
}

const luaL_Reg tcl_image_funcs[] = {
    {"decode", l_decode}, {"read", l_read}, {"encode", l_encode}, {"write", l_write},
    {"resize", l_resize}, {"resize_float", l_resize_float}, {"crop", l_crop}, {"hflip", l_hflip}, {"to_float", l_to_float},
    {"to_u8", l_to_u8}, {"pipeline", l_pipeline}, {"pipeline_run", l_pipeline_run},
    {"pipeline_shape", l_pipeline_shape}, {"source_files", l_source_files},
    {"source_shards", l_source_shards}, {"source_read", l_source_read},
    {"source_load", l_source_load}, {"source_len", l_source_len},
    {"loader_new", l_loader_new}, {"loader_close", l_loader_close},
    {"loader_pending", l_loader_pending}, {"loader_submit", l_loader_submit},
    {"loader_take", l_loader_take}, {"permutation", l_permutation},
    {"zstd_compress", l_zstd_compress}, {"zstd_decompress", l_zstd_decompress},
    {NULL, NULL},
};
