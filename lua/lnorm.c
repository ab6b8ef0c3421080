/* lnorm.c: binding for softmax, the losses, the norms, dropout, attention and the fused
 * activations, registered
 * into T._nn. The argument orders are the ones tocha/nn/functional.lua calls with; dims
 * are Lua's (1-based, negative from the end). */
#include "ltocha.h"

static int n_softmax_op(lua_State *L, bool as_log) {
    tc_tensor *x = tcl_check(L, 1);
    int d = tcl_checkdim(L, 2);
    tc_tensor **slot = tcl_slot(L);
    *slot = as_log ? tc_log_softmax(x, d) : tc_softmax(x, d);
    return tcl_done(L, *slot);
}
static int n_softmax(lua_State *L) { return n_softmax_op(L, false); }
static int n_log_softmax(lua_State *L) { return n_softmax_op(L, true); }

static tc_reduction check_reduction(lua_State *L, int idx) {
    static const char *const names[] = {"none", "mean", "sum", NULL};
    static const tc_reduction values[] = {TC_REDUCTION_NONE, TC_REDUCTION_MEAN, TC_REDUCTION_SUM};
    return values[luaL_checkoption(L, idx, "mean", names)];
}

/* cross_entropy(logits, target, weight_or_nil, ignore_index, label_smoothing, reduction) */
static int n_cross_entropy(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1), *t = tcl_check(L, 2), *w = tcl_opt(L, 3);
    lua_Integer ignore = luaL_optinteger(L, 4, -100);
    double eps = luaL_optnumber(L, 5, 0);
    tc_reduction red = check_reduction(L, 6);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_cross_entropy(x, t, w, ignore, eps, red);
    return tcl_done(L, *slot);
}

static int n_pointwise_loss(lua_State *L, bool mse) {
    tc_tensor *a = tcl_check(L, 1), *b = tcl_check(L, 2);
    tc_reduction red = check_reduction(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = mse ? tc_mse_loss(a, b, red) : tc_l1_loss(a, b, red);
    return tcl_done(L, *slot);
}
static int n_mse_loss(lua_State *L) { return n_pointwise_loss(L, true); }
static int n_l1_loss(lua_State *L) { return n_pointwise_loss(L, false); }

/* layer_norm(x, nnorm, w, b, {eps = 1e-5}) */
static int n_layer_norm(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    lua_Integer nn = luaL_checkinteger(L, 2);
    tc_tensor *w = tcl_opt(L, 3), *b = tcl_opt(L, 4);
    double eps = tcl_optnumber(L, 5, "eps", 1e-5);
    luaL_argcheck(L, nn >= 1 && nn <= TC_MAX_DIMS, 2, "number of normalised dims out of range");
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_layer_norm(x, (int)nn, w, b, eps);
    return tcl_done(L, *slot);
}

/* group_norm(x, groups, w, b, {eps = 1e-5, silu = false}) */
static int n_group_norm(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    lua_Integer g = luaL_checkinteger(L, 2);
    tc_tensor *w = tcl_opt(L, 3), *b = tcl_opt(L, 4);
    double eps = tcl_optnumber(L, 5, "eps", 1e-5);
    bool silu = tcl_optbool(L, 5, "silu", 0);
    luaL_argcheck(L, g >= 1 && g <= (1 << 30), 2, "number of groups must be positive");
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_group_norm(x, (int)g, w, b, eps, silu);
    return tcl_done(L, *slot);
}

/* dropout(x, p, training) */
static int n_dropout(lua_State *L) {
    tc_tensor *x = tcl_check(L, 1);
    double p = luaL_optnumber(L, 2, 0.5);
    int training = lua_isnone(L, 3) ? 1 : lua_toboolean(L, 3);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_dropout(x, p, training);
    return tcl_done(L, *slot);
}

/* sdpa(q, k, v, {attn_mask, is_causal, dropout_p = 0, scale = 0 (1/sqrt(E))}) */
static int n_sdpa(lua_State *L) {
    tc_tensor *q = tcl_check(L, 1), *k = tcl_check(L, 2), *v = tcl_check(L, 3);
    tc_tensor *mask = tcl_opttensor(L, 4, "attn_mask");
    bool causal = tcl_optbool(L, 4, "is_causal", 0);
    double p = tcl_optnumber(L, 4, "dropout_p", 0), scale = tcl_optnumber(L, 4, "scale", 0);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_sdpa(q, k, v, mask, causal, p, scale);
    return tcl_done(L, *slot);
}

/* bias_act(x, b_or_nil, act, glu): act(x + b) as one op; glu: GEGLU's halves */
static int n_bias_act(lua_State *L) {
    static const char *const names[] = {"relu", "silu", "gelu", "gelu_tanh", "quick_gelu", "sigmoid", "tanh", NULL};
    static const tc_op ops[] = {TC_OP_RELU, TC_OP_SILU, TC_OP_GELU, TC_OP_GELU_TANH, TC_OP_QUICK_GELU,
                                TC_OP_SIGMOID, TC_OP_TANH};
    tc_tensor *x = tcl_check(L, 1), *b = tcl_opt(L, 2);
    tc_op act = ops[luaL_checkoption(L, 3, NULL, names)];
    bool glu = lua_toboolean(L, 4);
    tc_tensor **slot = tcl_slot(L);
    *slot = tc_bias_act(x, b, act, glu);
    return tcl_done(L, *slot);
}

const luaL_Reg tcl_norm_funcs[] = {
    {"softmax", n_softmax}, {"log_softmax", n_log_softmax}, {"cross_entropy", n_cross_entropy},
    {"mse_loss", n_mse_loss}, {"l1_loss", n_l1_loss}, {"layer_norm", n_layer_norm},
    {"group_norm", n_group_norm}, {"dropout", n_dropout}, {"sdpa", n_sdpa}, {"bias_act", n_bias_act},
    {NULL, NULL},
};
