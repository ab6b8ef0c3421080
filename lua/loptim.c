/* loptim.c: binding for the fused optimizer updates, the EMA blend and the total norm
 * (T._optim.*, called by lua/tocha/optim.lua). */
#include "ltocha.h"


/* ---- updates ------------------------------------------------------------------------------ */
/* The hyperparameters come by name from the parameter group (lr, momentum, betas, ...) and
 * the per-parameter state from its table, as PyTorch's param_groups and state hold them. */

/* sgd_step(p, grad, group, momentum_buffer|nil) -> the momentum buffer: a new one on the first
 * step with momentum (holding the gradient, as PyTorch's), nothing without momentum */
static int o_sgd_step(lua_State *L) {
    tc_tensor *p = tcl_check(L, 1), *g = tcl_check(L, 2), *buf = tcl_opt(L, 4);
    tc_sgd_opts o = {
        .lr = tcl_getnumber(L, 3, "lr"),
        .momentum = tcl_getnumber(L, 3, "momentum"),
        .dampening = tcl_getnumber(L, 3, "dampening"),
        .weight_decay = tcl_getnumber(L, 3, "weight_decay"),
        .nesterov = tcl_optbool(L, 3, "nesterov", 0),
        .first = buf == NULL,
    };
    if (o.momentum == 0) {
        tcl_check_rc(L, tc_sgd_step_(p, g, buf, &o));
        return 0;
    }
    if (buf) lua_pushvalue(L, 4);
    else {
        tc_tensor **slot = tcl_slot(L);
        if (!(*slot = tc_empty(p->ndim, p->shape, p->dtype, p->storage->device))) return tcl_error(L);
        buf = *slot;
    }
    tcl_check_rc(L, tc_sgd_step_(p, g, buf, &o));
    return 1;
}

/* Adam's update with the state {step, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)} at 3
 * and the group {lr, betas, eps, weight_decay, amsgrad} at 4 */
static int adam_step(lua_State *L, bool decoupled) {
    tc_tensor *p = tcl_check(L, 1), *g = tcl_check(L, 2);
    tc_adam_opts o = {
        .step = tcl_getinteger(L, 3, "step"),
        .lr = tcl_getnumber(L, 4, "lr"),
        .eps = tcl_getnumber(L, 4, "eps"),
        .weight_decay = tcl_getnumber(L, 4, "weight_decay"),
        .amsgrad = tcl_optbool(L, 4, "amsgrad", 0),
        .decoupled = decoupled,
    };
    tcl_getpair(L, 4, "betas", &o.beta1, &o.beta2);
    tc_tensor *m = tcl_gettensor(L, 3, "exp_avg"), *v = tcl_gettensor(L, 3, "exp_avg_sq");
    tc_tensor *vmax = o.amsgrad ? tcl_gettensor(L, 3, "max_exp_avg_sq") : NULL;
    tcl_check_rc(L, tc_adam_step_(p, g, m, v, vmax, &o));
    return 0;
}

/* adam_step(p, grad, state, group): the L2 penalty joins the gradient */
static int o_adam_step(lua_State *L) { return adam_step(L, false); }
/* adamw_step(p, grad, state, group): decoupled weight decay */
static int o_adamw_step(lua_State *L) { return adam_step(L, true); }

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
    {"sgd_step", o_sgd_step},     {"adam_step", o_adam_step}, {"adamw_step", o_adamw_step},
    {"ema_update", o_ema_update}, {"total_norm", o_total_norm}, {NULL, NULL},
};
