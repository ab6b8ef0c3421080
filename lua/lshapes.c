/* lshapes.c: binding for the synthetic shapes (core/io/shapes.c), into T._shapes: drawing
 * shapes into an image tensor, and finding colored regions with their shape fits. The Lua
 * side (tocha.data.shapes, tocha.eval.shapes) gives them their user-facing shape. */
#include "ltocha.h"

#include "io/shapes.h"

/* a number field of the table at idx */
static double num_field(lua_State *L, int idx, const char *k, int item) {
    lua_getfield(L, idx, k);
    int ok;
    double v = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "shapes.render: shape %d: field '%s' must be a number", item, k);
    lua_pop(L, 1);
    return v;
}

/* three numbers in [0, 1] from the list at idx */
static void check_rgb(lua_State *L, int idx, float rgb[3], const char *what) {
    if (!lua_istable(L, idx)) luaL_error(L, "shapes: %s must be a list of 3 numbers in [0, 1]", what);
    for (int k = 0; k < 3; k++) {
        lua_geti(L, idx, k + 1);
        int ok;
        double v = lua_tonumberx(L, -1, &ok);
        if (!ok || !(v >= 0 && v <= 1)) luaL_error(L, "shapes: %s must be a list of 3 numbers in [0, 1]", what);
        rgb[k] = (float)v;
        lua_pop(L, 1);
    }
}

/* render(out, bg, noise, seed, shapes): draws into out (f32 [3, H, W] or u8 [H, W, 3]) the
 * shapes {shape = "circle", x =, y =, r =, rgb = {r, g, b}} (pixels, RGB in [0, 1]) over bg */
static int l_render(lua_State *L) {
    tc_tensor *out = tcl_check(L, 1);
    float bg[3];
    check_rgb(L, 2, bg, "background");
    double noise = luaL_checknumber(L, 3);
    luaL_argcheck(L, noise >= 0 && noise <= 1, 3, "noise must be in [0, 1]");
    lua_Integer seed = luaL_checkinteger(L, 4);
    luaL_checktype(L, 5, LUA_TTABLE);
    int n = (int)luaL_len(L, 5);
    luaL_argcheck(L, n >= 0 && n <= 64, 5, "at most 64 shapes");
    tc_shape shapes[64];
    for (int i = 0; i < n; i++) {
        lua_geti(L, 5, i + 1);
        int t = lua_gettop(L);
        if (!lua_istable(L, t)) return luaL_error(L, "shapes.render: shape %d is not a table", i + 1);
        lua_getfield(L, t, "shape");
        const char *name = lua_tostring(L, -1);
        int kind = name ? tc_shape_from_name(name) : -1;
        if (kind < 0) return luaL_error(L, "shapes.render: shape %d: unknown shape '%s'", i + 1, name ? name : "nil");
        lua_pop(L, 1);
        shapes[i].kind = (tc_shape_kind)kind;
        shapes[i].cx = num_field(L, t, "x", i + 1);
        shapes[i].cy = num_field(L, t, "y", i + 1);
        shapes[i].r = num_field(L, t, "r", i + 1);
        lua_getfield(L, t, "rgb");
        check_rgb(L, -1, shapes[i].rgb, "a shape's rgb");
        lua_pop(L, 2);
    }
    tcl_check_rc(L, tc_shapes_render(out, bg, (float)noise, (uint64_t)seed, shapes, n));
    lua_settop(L, 1);
    return 1;
}

/* analyze(img, palette, max_residual, min_pixels, cap) -> regions, background, count.
 * img: f32 [H, W, 3] in [0, 1]; palette: a list of {r, g, b}. Each region: {color = palette
 * index (absent: no palette color), pixels, area, x, y (centroid), x0, y0, x1, y1 (pixel box,
 * 0-based, end exclusive), iou = {circle = ..., ...}}, largest area first. */
static int l_analyze(lua_State *L) {
    tc_tensor *img = tcl_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    double max_res = luaL_checknumber(L, 3);
    lua_Integer min_pixels = luaL_checkinteger(L, 4);
    lua_Integer cap = luaL_optinteger(L, 5, 16);
    luaL_argcheck(L, cap >= 1 && cap <= 4096, 5, "cap must be in 1 to 4096");
    int npal = (int)luaL_len(L, 2);
    luaL_argcheck(L, npal >= 1 && npal <= 256, 2, "the palette must hold 1 to 256 colors");
    float *palette = lua_newuserdatauv(L, (size_t)npal * 3 * sizeof(float), 0);
    for (int c = 0; c < npal; c++) {
        lua_geti(L, 2, c + 1);
        check_rgb(L, -1, palette + 3 * c, "a palette color");
        lua_pop(L, 1);
    }
    tc_shapes_blob *blobs = lua_newuserdatauv(L, (size_t)cap * sizeof *blobs, 0);
    float bg[3];
    int count;
    tcl_check_rc(L, tc_shapes_analyze(img, palette, npal, (float)max_res, min_pixels, bg, blobs, (int)cap, &count));
    int shown = count < cap ? count : (int)cap;
    lua_createtable(L, shown, 0);
    for (int i = 0; i < shown; i++) {
        const tc_shapes_blob *b = &blobs[i];
        lua_createtable(L, 0, 11);
        if (b->color >= 0) {
            lua_pushinteger(L, b->color + 1);
            lua_setfield(L, -2, "color");
        }
        lua_pushinteger(L, b->pixels);
        lua_setfield(L, -2, "pixels");
        lua_pushnumber(L, b->area);
        lua_setfield(L, -2, "area");
        lua_pushnumber(L, b->cx);
        lua_setfield(L, -2, "x");
        lua_pushnumber(L, b->cy);
        lua_setfield(L, -2, "y");
        const int64_t box[4] = {b->x0, b->y0, b->x1, b->y1};
        const char *const box_names[4] = {"x0", "y0", "x1", "y1"};
        for (int k = 0; k < 4; k++) {
            lua_pushinteger(L, box[k]);
            lua_setfield(L, -2, box_names[k]);
        }
        lua_createtable(L, 0, TC_SHAPE_COUNT);
        for (int k = 0; k < TC_SHAPE_COUNT; k++) {
            lua_pushnumber(L, b->iou[k]);
            lua_setfield(L, -2, tc_shape_name((tc_shape_kind)k));
        }
        lua_setfield(L, -2, "iou");
        lua_rawseti(L, -2, i + 1);
    }
    lua_createtable(L, 3, 0);
    for (int k = 0; k < 3; k++) {
        lua_pushnumber(L, bg[k]);
        lua_rawseti(L, -2, k + 1);
    }
    lua_pushinteger(L, count);
    return 3;
}

/* kinds() -> {name = {area =, x0 =, y0 =, x1 =, y1 =}}: each kind's area and extent at r = 1 */
static int l_kinds(lua_State *L) {
    lua_createtable(L, 0, TC_SHAPE_COUNT);
    for (int k = 0; k < TC_SHAPE_COUNT; k++) {
        double e[4];
        tc_shape_extent((tc_shape_kind)k, e);
        lua_createtable(L, 0, 5);
        lua_pushnumber(L, tc_shape_unit_area((tc_shape_kind)k));
        lua_setfield(L, -2, "area");
        const char *const names[4] = {"x0", "y0", "x1", "y1"};
        for (int j = 0; j < 4; j++) {
            lua_pushnumber(L, e[j]);
            lua_setfield(L, -2, names[j]);
        }
        lua_setfield(L, -2, tc_shape_name((tc_shape_kind)k));
    }
    return 1;
}

const luaL_Reg tcl_shapes_funcs[] = {
    {"render", l_render}, {"analyze", l_analyze}, {"kinds", l_kinds},
    {NULL, NULL},
};
