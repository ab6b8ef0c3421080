/* lnn.c: binding for convolution, pooling, resampling and padding, registered into T._nn.
 * The argument orders are those lua/tocha/nn/functional.lua calls with; options tables
 * are unpacked there, so each function here takes plain positional values. */
#include "ltocha.h"

#include <limits.h>
#include <string.h>

/* a Lua integer that fits a C int */
static int checkint(lua_State *L, int idx) {
    lua_Integer v = luaL_checkinteger(L, idx);
    luaL_argcheck(L, v >= INT_MIN && v <= INT_MAX, idx, "integer out of range");
    return (int)v;
}

/* conv2d(x, w, b, sh, sw, ph, pw, dh, dw, groups) */
static int nn_conv2d(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *w = tcl_check(L, 2), *b = tcl_opt(L, 3);
    tc_conv_params p = {
        .stride = {checkint(L, 4), checkint(L, 5)}, .padding = {checkint(L, 6), checkint(L, 7)},
        .dilation = {checkint(L, 8), checkint(L, 9)}, .output_padding = {0, 0}, .groups = checkint(L, 10),
    };
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_conv2d(x, w, b, &p);
    return tcl_done(L, *slot);
}

/* conv_transpose2d(x, w, b, sh, sw, ph, pw, oph, opw, dh, dw, groups) */
static int nn_conv_transpose2d(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *w = tcl_check(L, 2), *b = tcl_opt(L, 3);
    tc_conv_params p = {
        .stride = {checkint(L, 4), checkint(L, 5)}, .padding = {checkint(L, 6), checkint(L, 7)},
        .output_padding = {checkint(L, 8), checkint(L, 9)}, .dilation = {checkint(L, 10), checkint(L, 11)},
        .groups = checkint(L, 12),
    };
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_conv_transpose2d(x, w, b, &p);
    return tcl_done(L, *slot);
}

/* avg_pool2d(x, kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad) */
static int nn_avg_pool2d(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    tc_pool_params p = {
        .kernel = {checkint(L, 2), checkint(L, 3)}, .stride = {checkint(L, 4), checkint(L, 5)},
        .padding = {checkint(L, 6), checkint(L, 7)}, .dilation = {1, 1},
        .ceil_mode = lua_toboolean(L, 8), .count_include_pad = lua_toboolean(L, 9),
    };
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_avg_pool2d(x, &p);
    return tcl_done(L, *slot);
}

/* max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode) */
static int nn_max_pool2d(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    tc_pool_params p = {
        .kernel = {checkint(L, 2), checkint(L, 3)}, .stride = {checkint(L, 4), checkint(L, 5)},
        .padding = {checkint(L, 6), checkint(L, 7)}, .dilation = {checkint(L, 8), checkint(L, 9)},
        .ceil_mode = lua_toboolean(L, 10), .count_include_pad = false,
    };
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_max_pool2d(x, &p);
    return tcl_done(L, *slot);
}

/* interpolate(x, out_h, out_w, mode, align_corners) */
static int nn_interpolate(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), w = luaL_checkinteger(L, 3);
    const char *mode = luaL_checkstring(L, 4);
    tc_interp_mode m;
    if (strcmp(mode, "nearest") == 0) m = TC_INTERP_NEAREST;
    else if (strcmp(mode, "bilinear") == 0) m = TC_INTERP_BILINEAR;
    else return luaL_error(L, "interpolate: mode must be \"nearest\" or \"bilinear\" (got \"%s\")", mode);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_interpolate(x, h, w, m, lua_toboolean(L, 5));
    return tcl_done(L, *slot);
}

/* pad(x, {before, after, ...} from the last dim, mode, value) */
static int nn_pad(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)luaL_len(L, 2);
    if (n % 2 != 0 || n > 2 * TC_MAX_DIMS)
        return luaL_error(L, "pad: pads must hold (before, after) pairs, at most %d numbers (got %d)", 2 * TC_MAX_DIMS, n);
    int64_t pads[2 * TC_MAX_DIMS];
    for (int i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        int ok;
        pads[i] = lua_tointegerx(L, -1, &ok);
        if (!ok) return luaL_error(L, "pad: pads[%d] is not an integer", i + 1);
        lua_pop(L, 1);
    }
    const char *mode = luaL_optstring(L, 3, "constant");
    tc_pad_mode m;
    if (strcmp(mode, "constant") == 0) m = TC_PAD_CONSTANT;
    else if (strcmp(mode, "reflect") == 0) m = TC_PAD_REFLECT;
    else if (strcmp(mode, "replicate") == 0) m = TC_PAD_REPLICATE;
    else return luaL_error(L, "pad: mode must be \"constant\", \"reflect\" or \"replicate\" (got \"%s\")", mode);
    double value = luaL_optnumber(L, 4, 0);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_pad(x, n / 2, pads, m, value);
    return tcl_done(L, *slot);
}

const luaL_Reg tcl_nn_funcs[] = {
    {"conv2d", nn_conv2d},
    {"conv_transpose2d", nn_conv_transpose2d},
    {"avg_pool2d", nn_avg_pool2d},
    {"max_pool2d", nn_max_pool2d},
    {"interpolate", nn_interpolate},
    {"pad", nn_pad},
    {NULL, NULL},
};
