/* loptim.c: binding for the fused optimizer updates, the EMA blend and the total norm
 * (T._optim.*, called by lua/tocha/optim.lua). */
#include "ltocha.h"


/* ---- updates ------------------------------------------------------------------------------ */
/* sgd_step(p, g, buf|nil, lr, momentum, dampening, weight_decay, nesterov, first) */
static int o_sgd_step(lua_State *L) {
    tc_tensor *p = tcl_check(L, 1), *g = tcl_check(L, 2), *buf = tcl_opt(L, 3);
    tc_sgd_opts o = {
        .lr = luaL_checknumber(L, 4),
        .momentum = luaL_checknumber(L, 5),
        .dampening = luaL_checknumber(L, 6),
        .weight_decay = luaL_checknumber(L, 7),
        .nesterov = lua_toboolean(L, 8),
        .first = lua_toboolean(L, 9),
    };
    tcl_check_rc(L, tc_sgd_step_(p, g, buf, &o));
    return 0;
}

/* adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq|nil, step, lr, beta1, beta2, eps,
 *           weight_decay, amsgrad, decoupled) */
static int o_adam_step(lua_State *L) {
    tc_tensor *p = tcl_check(L, 1), *g = tcl_check(L, 2), *m = tcl_check(L, 3), *v = tcl_check(L, 4);
    tc_tensor *vmax = tcl_opt(L, 5);
    tc_adam_opts o = {
        .step = luaL_checkinteger(L, 6),
        .lr = luaL_checknumber(L, 7),
        .beta1 = luaL_checknumber(L, 8),
        .beta2 = luaL_checknumber(L, 9),
        .eps = luaL_checknumber(L, 10),
        .weight_decay = luaL_checknumber(L, 11),
        .amsgrad = lua_toboolean(L, 12),
        .decoupled = lua_toboolean(L, 13),
    };
    tcl_check_rc(L, tc_adam_step_(p, g, m, v, vmax, &o));
    return 0;
}

/* ema_update(shadow, param, decay) */
static int o_ema_update(lua_State *L) {
    tc_tensor *s = tcl_check(L, 1), *p = tcl_check(L, 2);
    tcl_check_rc(L, tc_ema_update_(s, p, luaL_checknumber(L, 3)));
    return 0;
}

/* total_norm({tensors}, p) -> number */
static int o_total_norm(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double p = luaL_optnumber(L, 2, 2);
    int n = (int)luaL_len(L, 1);
    /* the pointer array is a userdata, so an error below frees it */
    tc_tensor **xs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *xs, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        xs[i] = tcl_test(L, -1);
        if (!xs[i]) return luaL_error(L, "total_norm: element %d is not a tensor", i + 1);
        lua_pop(L, 1); /* the table keeps it alive */
    }
    double out;
    tcl_check_rc(L, tc_total_norm(n, xs, p, &out));
    lua_pushnumber(L, out);
    return 1;
}

const luaL_Reg tcl_optim_funcs[] = {
    {"sgd_step", o_sgd_step},     {"adam_step", o_adam_step}, {"ema_update", o_ema_update},
    {"total_norm", o_total_norm}, {NULL, NULL},
};
