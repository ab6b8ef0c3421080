/* loptim.c: binding for the fused optimizer updates, the EMA blend and the total norm
 * (T._optim.*, called by lua/tocha/optim.lua). */
#include "ltocha.h"


/* ---- updates ------------------------------------------------------------------------------ */
/* The hyperparameters come by name from the parameter group (lr, momentum, betas, ...) and
 * the per-parameter state from its table, as PyTorch's param_groups and state hold them. */

/* SGD's options from the group at idx {lr, momentum, dampening, weight_decay, nesterov} */
static tc_sgd_opts sgd_opts(lua_State *L, int idx) {
    tc_sgd_opts o = {
        .lr = tcl_getnumber(L, idx, "lr"),
        .momentum = tcl_getnumber(L, idx, "momentum"),
        .dampening = tcl_getnumber(L, idx, "dampening"),
        .weight_decay = tcl_getnumber(L, idx, "weight_decay"),
        .nesterov = tcl_optbool(L, idx, "nesterov", 0),
    };
    return o;
}

/* sgd_step(p, grad, group, momentum_buffer|nil) -> the momentum buffer: a new one on the first
 * step with momentum (holding the gradient, as PyTorch's), nothing without momentum */
static int o_sgd_step(lua_State *L) {
    tc_tensor *p = tcl_check(L, 1), *g = tcl_check(L, 2), *buf = tcl_opt(L, 4);
    tc_sgd_opts o = sgd_opts(L, 3);
    o.first = buf == NULL;
    if (o.momentum == 0) {
        tcl_check_rc(L, tc_sgd_step_(p, g, buf, &o));
        return 0;
    }
    if (buf) lua_pushvalue(L, 4);
    else {
        tc_tensor **slot = tcl_slot(L);
        /* in the parameter's memory format, as the update requires */
        *slot = tc_empty_format(p->ndim, p->shape, p->dtype, p->storage->device, tc_suggest_format(p));
        if (!*slot) return tcl_error(L);
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

/* ---- the multi-tensor forms ------------------------------------------------------------------ */
/* the n tensors of the list at idx (field `key` of each element when key is not NULL), in a
 * userdata left on the stack (so an error frees it); the list's tables keep them alive */
static tc_tensor **tensor_list(lua_State *L, int idx, int n, const char *key, const char *who) {
    luaL_checktype(L, idx, LUA_TTABLE);
    if ((int)luaL_len(L, idx) != n) luaL_error(L, "%s: list %d holds %d entries, expected %d", who, idx,
                                               (int)luaL_len(L, idx), n);
    tc_tensor **ts = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ts, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        if (key) {
            if (!lua_istable(L, -1)) luaL_error(L, "%s: entry %d of list %d is not a table", who, i + 1, idx);
            lua_getfield(L, -1, key);
            lua_remove(L, -2);
        }
        ts[i] = tcl_test(L, -1);
        if (!ts[i]) luaL_error(L, "%s: entry %d of list %d has no tensor%s%s", who, i + 1, idx, key ? " " : "",
                               key ? key : "");
        lua_pop(L, 1);
    }
    return ts;
}

/* the optional device scalars at idx (a CUDA tensor; see tc_sgd_opts) and, at idx + 1, true
 * when they are written already (a capture: a function run before each replay writes them) */
static void opt_scalars(lua_State *L, int idx, tc_tensor **scalars, bool *ready) {
    *scalars = tcl_opt(L, idx);
    *ready = lua_toboolean(L, idx + 1);
}

/* sgd_multi({p...}, {grad...}, group, {momentum_buffer...}|nil, {first...}, scalars, ready):
 * every buffer exists (first[i] true: it starts as the gradient on this step) */
static int o_sgd_multi(lua_State *L) {
    lua_settop(L, 7); /* the lists below go above the arguments */
    int n = (int)luaL_len(L, 1);
    tc_tensor **p = tensor_list(L, 1, n, NULL, "sgd_multi"), **g = tensor_list(L, 2, n, NULL, "sgd_multi");
    tc_sgd_opts o = sgd_opts(L, 3);
    opt_scalars(L, 6, &o.scalars, &o.scalars_ready);
    tc_tensor **buf = lua_isnoneornil(L, 4) ? NULL : tensor_list(L, 4, n, NULL, "sgd_multi");
    bool *first = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *first, 0);
    for (int i = 0; i < n; i++) {
        first[i] = false;
        if (buf) {
            luaL_checktype(L, 5, LUA_TTABLE);
            lua_geti(L, 5, i + 1);
            first[i] = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
    }
    tcl_check_rc(L, tc_sgd_multi_step_(n, p, g, buf, first, &o));
    return 0;
}

/* Adam's options from the group at idx and the state list at sidx: their steps in a userdata
 * left on the stack */
static int64_t *adam_opts(lua_State *L, int idx, int sidx, int n, bool decoupled, tc_adam_opts *o) {
    *o = (tc_adam_opts){
        .lr = tcl_getnumber(L, idx, "lr"),
        .eps = tcl_getnumber(L, idx, "eps"),
        .weight_decay = tcl_getnumber(L, idx, "weight_decay"),
        .amsgrad = tcl_optbool(L, idx, "amsgrad", 0),
        .decoupled = decoupled,
    };
    tcl_getpair(L, idx, "betas", &o->beta1, &o->beta2);
    luaL_checktype(L, sidx, LUA_TTABLE);
    int64_t *steps = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *steps, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, sidx, i + 1);
        steps[i] = tcl_getinteger(L, lua_gettop(L), "step");
        lua_pop(L, 1);
    }
    return steps;
}

/* adam_scalars(scalars, {state...}, group, decoupled, param): writes the device scalars of the
 * next update of parameters in state (a captured step's, before each replay) */
static int o_adam_scalars(lua_State *L) {
    lua_settop(L, 5);
    tc_tensor *buf = tcl_check(L, 1), *p = tcl_check(L, 5);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)luaL_len(L, 2);
    tc_adam_opts o;
    int64_t *steps = adam_opts(L, 3, 2, n, lua_toboolean(L, 4), &o);
    tcl_check_rc(L, tc_cuda_adam_scalars(buf, n, steps, &o, p->dtype));
    return 0;
}

/* sgd_scalars(scalars, group, param): as adam_scalars, for SGD */
static int o_sgd_scalars(lua_State *L) {
    tc_tensor *buf = tcl_check(L, 1), *p = tcl_check(L, 3);
    tc_sgd_opts o = sgd_opts(L, 2);
    tcl_check_rc(L, tc_cuda_sgd_scalars(buf, &o, p->dtype));
    return 0;
}

/* adam_multi({p...}, {grad...}, {state...}, group, decoupled, scalars, ready): each state
 * {step, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)} */
static int o_adam_multi(lua_State *L) {
    lua_settop(L, 7);
    int n = (int)luaL_len(L, 1);
    tc_adam_opts o;
    int64_t *steps = adam_opts(L, 4, 3, n, lua_toboolean(L, 5), &o);
    tc_tensor **p = tensor_list(L, 1, n, NULL, "adam_multi"), **g = tensor_list(L, 2, n, NULL, "adam_multi");
    tc_tensor **m = tensor_list(L, 3, n, "exp_avg", "adam_multi"), **v = tensor_list(L, 3, n, "exp_avg_sq", "adam_multi");
    tc_tensor **vmax = o.amsgrad ? tensor_list(L, 3, n, "max_exp_avg_sq", "adam_multi") : NULL;
    opt_scalars(L, 6, &o.scalars, &o.scalars_ready);
    tcl_check_rc(L, tc_adam_multi_step_(n, p, g, m, v, vmax, steps, &o));
    return 0;
}

/* ema_multi({shadow...}, {param...}, decay) */
static int o_ema_multi(lua_State *L) {
    lua_settop(L, 3);
    int n = (int)luaL_len(L, 1);
    tc_tensor **s = tensor_list(L, 1, n, NULL, "ema_multi"), **p = tensor_list(L, 2, n, NULL, "ema_multi");
    tcl_check_rc(L, tc_ema_multi_update_(n, s, p, luaL_checknumber(L, 3)));
    return 0;
}

const luaL_Reg tcl_optim_funcs[] = {
    {"sgd_multi", o_sgd_multi},   {"adam_multi", o_adam_multi}, {"ema_multi", o_ema_multi},
    {"sgd_step", o_sgd_step},     {"adam_step", o_adam_step}, {"adamw_step", o_adamw_step},
    {"ema_update", o_ema_update}, {"total_norm", o_total_norm}, {"adam_scalars", o_adam_scalars},
    {"sgd_scalars", o_sgd_scalars}, {NULL, NULL},
};
