/* llog.c: binding for run logs (T._log, used by lua/tocha/log.lua, run.lua and cli/plot.lua):
 * log files and TensorBoard event writers (core/io/tensorboard.c), a TFRecord reader, and a
 * small cairo canvas that `tocha plot` draws its curves with (and labelled image grids).
 * File operations that fail for ordinary reasons return nil, message; Lua raises at the call. */
#include "ltocha.h"
#include "tocha_io.h"

#include <cairo.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TCL_LOGFILE "tocha.LogFile"
#define TCL_CANVAS "tocha.Canvas"

/* ---- log files --------------------------------------------------------------------------- */
static tc_logfile **new_logfile(lua_State *L) {
    tc_logfile **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL; /* closed until opened */
    luaL_setmetatable(L, TCL_LOGFILE);
    return p;
}

static tc_logfile *check_logfile(lua_State *L) {
    tc_logfile **p = luaL_checkudata(L, 1, TCL_LOGFILE);
    if (!*p) luaL_error(L, "log file is closed");
    return *p;
}

/* one release for __gc and __close; :close() reports the last flush's error */
static int lf_close(lua_State *L) {
    tc_logfile **p = luaL_checkudata(L, 1, TCL_LOGFILE);
    tc_logfile *f = *p;
    *p = NULL;
    return tcl_result(L, tc_logfile_close(f));
}

/* tb_open(dir, suffix, flush_secs) -> writer, or nil, message */
static int l_tb_open(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1), *suffix = luaL_optstring(L, 2, "");
    double secs = luaL_optnumber(L, 3, 10);
    tc_logfile **p = new_logfile(L);
    if (!(*p = tc_tb_open(dir, suffix, secs))) return tcl_fail(L);
    return 1;
}

/* logfile_open(path, flush_secs) -> file (appending), or nil, message */
static int l_logfile_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    double secs = luaL_optnumber(L, 2, 10);
    tc_logfile **p = new_logfile(L);
    if (!(*p = tc_logfile_open(path, secs))) return tcl_fail(L);
    return 1;
}

static int lf_write(lua_State *L) {
    tc_logfile *f = check_logfile(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    return tcl_result(L, tc_logfile_write(f, s, n));
}

static int lf_flush(lua_State *L) { return tcl_result(L, tc_logfile_flush(check_logfile(L))); }

static int lf_path(lua_State *L) {
    lua_pushstring(L, tc_logfile_path(check_logfile(L)));
    return 1;
}

static int lf_bytes(lua_State *L) {
    lua_pushinteger(L, tc_logfile_bytes(check_logfile(L)));
    return 1;
}

static int64_t check_step(lua_State *L, int idx) {
    int ok;
    lua_Integer step = lua_tointegerx(L, idx, &ok);
    if (!ok) luaL_argerror(L, idx, "step must be an integer");
    return step;
}

/* f:scalar(tag, value, step, wall_time) */
static int lf_scalar(lua_State *L) {
    tc_logfile *f = check_logfile(L);
    return tcl_result(L, tc_tb_scalar(f, luaL_checkstring(L, 2), luaL_checknumber(L, 3), check_step(L, 4),
                                  luaL_optnumber(L, 5, -1)));
}

/* f:image(tag, u8 [H, W, C], step, wall_time) */
static int lf_image(lua_State *L) {
    tc_logfile *f = check_logfile(L);
    return tcl_result(L, tc_tb_image(f, luaL_checkstring(L, 2), tcl_check(L, 3), check_step(L, 4), luaL_optnumber(L, 5, -1)));
}

/* f:histogram(tag, x, bins, step, wall_time) -> number of non-finite values left out, or nil, message */
static int lf_histogram(lua_State *L) {
    tc_logfile *f = check_logfile(L);
    int64_t bad = 0;
    int rc = tc_tb_histogram(f, luaL_checkstring(L, 2), tcl_check(L, 3), (int)luaL_checkinteger(L, 4),
                             check_step(L, 5), luaL_optnumber(L, 6, -1), &bad);
    if (rc != TC_OK) return tcl_fail(L);
    lua_pushinteger(L, bad);
    return 1;
}

/* f:text(tag, text, step, wall_time) */
static int lf_text(lua_State *L) {
    tc_logfile *f = check_logfile(L);
    size_t n;
    const char *tag = luaL_checkstring(L, 2), *s = luaL_checklstring(L, 3, &n);
    return tcl_result(L, tc_tb_text(f, tag, s, n, check_step(L, 4), luaL_optnumber(L, 5, -1)));
}

/* f:hparams({{name, value}, ...}, {metric tags}, wall_time): values are numbers, strings or
 * booleans. The arrays live in userdata, so an argument error midway leaks nothing. */
static int lf_hparams(lua_State *L) {
    tc_logfile *f = check_logfile(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    double wall = luaL_optnumber(L, 4, -1);
    lua_settop(L, 4);
    int n = (int)luaL_len(L, 2), nm = (int)luaL_len(L, 3);
    tc_hparam *hp = lua_newuserdatauv(L, sizeof *hp * (size_t)(n + 1), 0);
    const char **tags = lua_newuserdatauv(L, sizeof *tags * (size_t)(nm + 1), 0);
    lua_newtable(L); /* keeps every string referenced from C alive */
    int anchor = lua_gettop(L), kept = 0;
    for (int i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        luaL_argexpected(L, lua_istable(L, -1), 2, "list of {name, value} pairs");
        lua_geti(L, -1, 1);
        hp[i].name = luaL_checkstring(L, -1);
        lua_rawseti(L, anchor, ++kept);
        lua_geti(L, -1, 2);
        switch (lua_type(L, -1)) {
        case LUA_TNUMBER: hp[i].type = TC_HPARAM_NUMBER; hp[i].number = lua_tonumber(L, -1); break;
        case LUA_TBOOLEAN: hp[i].type = TC_HPARAM_BOOL; hp[i].boolean = lua_toboolean(L, -1); break;
        case LUA_TSTRING: hp[i].type = TC_HPARAM_STRING; hp[i].string = lua_tostring(L, -1); break;
        default: return luaL_error(L, "add_hparams: '%s' must be a number, string or boolean (got %s)", hp[i].name, luaL_typename(L, -1));
        }
        lua_rawseti(L, anchor, ++kept);
        lua_pop(L, 1);
    }
    for (int i = 0; i < nm; i++) {
        lua_geti(L, 3, i + 1);
        tags[i] = luaL_checkstring(L, -1);
        lua_rawseti(L, anchor, ++kept);
    }
    return tcl_result(L, tc_tb_hparams(f, n, hp, nm, tags, wall));
}

/* ---- reading ------------------------------------------------------------------------------ */
/* read_records(path) -> {record strings}, and "truncated" when the file ends inside a record
 * (one still being written); nil, message when it cannot be read or a checksum is wrong */
static int l_read_records(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    void *data;
    size_t n, pos = 0;
    if (tc_read_file(path, &data, &n) != TC_OK) return tcl_fail(L);
    /* the bytes go into a Lua string first, so no error below can leak them */
    lua_pushlstring(L, data, n);
    free(data);
    const char *s = lua_tostring(L, -1);
    lua_newtable(L);
    int count = 0, rc;
    const void *rec;
    size_t len;
    while ((rc = tc_tfrecord_next(s, n, &pos, &rec, &len)) == 1) {
        lua_pushlstring(L, rec, len);
        lua_rawseti(L, -2, ++count);
    }
    if (rc == TC_ERR) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, tc_last_error());
        return 2;
    }
    if (rc == 2) {
        lua_pushliteral(L, "truncated");
        return 2;
    }
    return 1;
}

/* crc32c(s) -> the CRC-32C of s, and its TFRecord mask */
static int l_crc32c(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    uint32_t crc = tc_crc32c(0, s, n);
    lua_pushinteger(L, crc);
    lua_pushinteger(L, tc_crc32c_mask(crc));
    return 2;
}

/* ---- canvas: cairo for `tocha plot` ------------------------------------------------------- */
typedef struct {
    cairo_surface_t *surface;
    cairo_t *cr;
} canvas;

static canvas *check_canvas(lua_State *L) {
    canvas *c = luaL_checkudata(L, 1, TCL_CANVAS);
    if (!c->cr) luaL_error(L, "canvas is closed");
    return c;
}

static int cv_gc(lua_State *L) {
    canvas *c = luaL_checkudata(L, 1, TCL_CANVAS);
    if (c->cr) cairo_destroy(c->cr);
    if (c->surface) cairo_surface_destroy(c->surface);
    c->cr = NULL;
    c->surface = NULL;
    return 0;
}

/* canvas(width, height): an RGB image, white */
static int l_canvas(lua_State *L) {
    lua_Integer w = luaL_checkinteger(L, 1), h = luaL_checkinteger(L, 2);
    luaL_argcheck(L, w >= 1 && w <= 16384, 1, "width must be 1 to 16384");
    luaL_argcheck(L, h >= 1 && h <= 16384, 2, "height must be 1 to 16384");
    canvas *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->surface = NULL;
    c->cr = NULL;
    luaL_setmetatable(L, TCL_CANVAS);
    c->surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)w, (int)h);
    c->cr = cairo_create(c->surface);
    if (cairo_status(c->cr) != CAIRO_STATUS_SUCCESS) return luaL_error(L, "canvas: %s", cairo_status_to_string(cairo_status(c->cr)));
    cairo_set_source_rgb(c->cr, 1, 1, 1);
    cairo_paint(c->cr);
    cairo_select_font_face(c->cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    return 1;
}

static int cv_color(lua_State *L) {
    canvas *c = check_canvas(L);
    cairo_set_source_rgba(c->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3), luaL_checknumber(L, 4),
                          luaL_optnumber(L, 5, 1));
    return 0;
}

static int cv_line_width(lua_State *L) {
    cairo_set_line_width(check_canvas(L)->cr, luaL_checknumber(L, 2));
    return 0;
}

/* c:dash({on, off, ...}) or c:dash() for solid lines */
static int cv_dash(lua_State *L) {
    canvas *c = check_canvas(L);
    double d[8];
    int n = lua_istable(L, 2) ? (int)luaL_len(L, 2) : 0;
    luaL_argcheck(L, n <= 8, 2, "at most 8 dash lengths");
    for (int i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        d[i] = luaL_checknumber(L, -1);
        lua_pop(L, 1);
    }
    cairo_set_dash(c->cr, d, n, 0);
    return 0;
}

static int cv_move_to(lua_State *L) {
    cairo_move_to(check_canvas(L)->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3));
    return 0;
}

static int cv_line_to(lua_State *L) {
    cairo_line_to(check_canvas(L)->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3));
    return 0;
}

/* c:polyline(xs, ys): one path through the points, skipping non-finite ones (a gap) */
static int cv_polyline(lua_State *L) {
    canvas *c = check_canvas(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    bool pen = false;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        lua_geti(L, 3, i);
        double x = lua_tonumber(L, -2), y = lua_tonumber(L, -1);
        lua_pop(L, 2);
        if (!isfinite(x) || !isfinite(y)) { pen = false; continue; }
        if (pen) cairo_line_to(c->cr, x, y);
        else cairo_move_to(c->cr, x, y);
        pen = true;
    }
    return 0;
}

static int cv_rect(lua_State *L) {
    cairo_rectangle(check_canvas(L)->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3), luaL_checknumber(L, 4),
                    luaL_checknumber(L, 5));
    return 0;
}

static int cv_stroke(lua_State *L) {
    cairo_stroke(check_canvas(L)->cr);
    return 0;
}

static int cv_fill(lua_State *L) {
    cairo_fill(check_canvas(L)->cr);
    return 0;
}

/* c:clip(x, y, w, h) limits drawing to a rectangle; c:clip() lifts it */
static int cv_clip(lua_State *L) {
    canvas *c = check_canvas(L);
    cairo_reset_clip(c->cr);
    if (!lua_isnoneornil(L, 2)) {
        cairo_rectangle(c->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3), luaL_checknumber(L, 4), luaL_checknumber(L, 5));
        cairo_clip(c->cr);
    }
    return 0;
}

/* c:text(x, y, s, size, halign, rotate): halign 0 left, 0.5 centre, 1 right of x; y is the
 * baseline; rotate (radians) turns the text about (x, y) */
static int cv_text(lua_State *L) {
    canvas *c = check_canvas(L);
    double x = luaL_checknumber(L, 2), y = luaL_checknumber(L, 3);
    const char *s = luaL_checkstring(L, 4);
    double size = luaL_optnumber(L, 5, 12), align = luaL_optnumber(L, 6, 0), rot = luaL_optnumber(L, 7, 0);
    cairo_text_extents_t e;
    cairo_set_font_size(c->cr, size);
    cairo_text_extents(c->cr, s, &e);
    cairo_save(c->cr);
    cairo_translate(c->cr, x, y);
    cairo_rotate(c->cr, rot);
    cairo_move_to(c->cr, -align * e.x_advance, 0);
    cairo_show_text(c->cr, s);
    cairo_restore(c->cr);
    cairo_new_path(c->cr);
    return 0;
}

/* c:text_width(s, size) -> advance in pixels */
static int cv_text_width(lua_State *L) {
    canvas *c = check_canvas(L);
    cairo_text_extents_t e;
    cairo_set_font_size(c->cr, luaL_optnumber(L, 3, 12));
    cairo_text_extents(c->cr, luaL_checkstring(L, 2), &e);
    lua_pushnumber(L, e.x_advance);
    return 1;
}

/* c:image(img, x, y): paints img (u8 [H, W, 3], CPU) with its top left corner at (x, y) */
static int cv_image(lua_State *L) {
    canvas *c = check_canvas(L);
    tc_tensor *img = tcl_check(L, 2);
    int x0 = (int)luaL_checkinteger(L, 3), y0 = (int)luaL_checkinteger(L, 4);
    if (img->dtype != TC_U8 || img->ndim != 3 || img->shape[2] != 3 || img->storage->device.type != TC_CPU)
        return luaL_error(L, "canvas:image: expected a u8 [H, W, 3] image on the CPU");
    cairo_surface_flush(c->surface);
    unsigned char *data = cairo_image_surface_get_data(c->surface);
    int W = cairo_image_surface_get_width(c->surface), H = cairo_image_surface_get_height(c->surface);
    int stride = cairo_image_surface_get_stride(c->surface);
    const unsigned char *p = tc_data(img);
    int64_t h = img->shape[0], w = img->shape[1], s0 = img->stride[0], s1 = img->stride[1], s2 = img->stride[2];
    for (int64_t i = 0; i < h; i++) {
        int64_t y = y0 + i;
        if (y < 0 || y >= H) continue;
        for (int64_t j = 0; j < w; j++) {
            int64_t x = x0 + j;
            if (x < 0 || x >= W) continue;
            const unsigned char *q = p + i * s0 + j * s1;
            uint32_t px = (uint32_t)q[0] << 16 | (uint32_t)q[s2] << 8 | (uint32_t)q[2 * s2]; /* RGB24: 0x00RRGGBB */
            memcpy(data + y * stride + x * 4, &px, 4);
        }
    }
    cairo_surface_mark_dirty(c->surface);
    return 0;
}

/* c:pixels() -> the canvas as a u8 [H, W, 3] image */
static int cv_pixels(lua_State *L) {
    canvas *c = check_canvas(L);
    cairo_surface_flush(c->surface);
    const unsigned char *data = cairo_image_surface_get_data(c->surface);
    int W = cairo_image_surface_get_width(c->surface), H = cairo_image_surface_get_height(c->surface);
    int stride = cairo_image_surface_get_stride(c->surface);
    int64_t shape[3] = {H, W, 3};
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_empty(3, shape, TC_U8, TC_DEV_CPU);
    if (!*slot) return tcl_error(L);
    unsigned char *out = tc_data(*slot);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint32_t px;
            memcpy(&px, data + y * stride + x * 4, 4);
            unsigned char *o = out + ((int64_t)y * W + x) * 3;
            o[0] = (unsigned char)(px >> 16);
            o[1] = (unsigned char)(px >> 8);
            o[2] = (unsigned char)px;
        }
    return 1;
}

/* c:write_png(path) -> true, or nil, message */
static int cv_write_png(lua_State *L) {
    canvas *c = check_canvas(L);
    const char *path = luaL_checkstring(L, 2);
    cairo_surface_flush(c->surface);
    cairo_status_t st = cairo_surface_write_to_png(c->surface, path);
    if (st != CAIRO_STATUS_SUCCESS) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot write %s: %s", path, st == CAIRO_STATUS_WRITE_ERROR ? strerror(errno) : cairo_status_to_string(st));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- the module table ----------------------------------------------------------------------- */
static const luaL_Reg logfile_methods[] = {
    {"write", lf_write}, {"flush", lf_flush},         {"close", lf_close}, {"path", lf_path},
    {"bytes", lf_bytes}, {"scalar", lf_scalar},       {"image", lf_image}, {"histogram", lf_histogram},
    {"text", lf_text},   {"hparams", lf_hparams},     {NULL, NULL},
};

static const luaL_Reg canvas_methods[] = {
    {"color", cv_color},   {"line_width", cv_line_width}, {"dash", cv_dash},       {"move_to", cv_move_to},
    {"line_to", cv_line_to}, {"polyline", cv_polyline}, {"rect", cv_rect},         {"stroke", cv_stroke},
    {"fill", cv_fill},     {"clip", cv_clip},             {"text", cv_text},       {"text_width", cv_text_width},
    {"write_png", cv_write_png}, {"image", cv_image}, {"pixels", cv_pixels}, {NULL, NULL},
};

const luaL_Reg tcl_log_funcs[] = {
    {"tb_open", l_tb_open}, {"logfile_open", l_logfile_open}, {"read_records", l_read_records},
    {"crc32c", l_crc32c},   {"canvas", l_canvas},             {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    tcl_register(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}

/* the classes T._log's functions make */
void tcl_open_log(lua_State *L) {
    new_class(L, TCL_LOGFILE, logfile_methods, lf_close);
    new_class(L, TCL_CANVAS, canvas_methods, cv_gc);
}
