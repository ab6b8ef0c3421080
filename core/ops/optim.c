/* optim.c: the optimizer updates (SGD, Adam/AdamW), the EMA blend and the total gradient
 * norm. They validate, bring the gradient to the parameter's layout and dtype, mark the
 * in-place writes with grad mode off, and call the device's fused kernel. No autograd:
 * an update is never part of a graph. */
#include "../internal.h"

#include <math.h>
#include <stdlib.h>

/* t must be a contiguous float tensor shaped and placed like param (what = its role) */
static int check_state(const char *op, const char *what, tc_tensor *param, tc_tensor *t) {
    if (tc_check_same_device(op, param, t) != TC_OK) return TC_ERR;
    if (!tc_same_shape(param, t)) {
        char a[128], b[128];
        tc_shape_str(param->ndim, param->shape, a, sizeof a);
        tc_shape_str(t->ndim, t->shape, b, sizeof b);
        return tc_error("%s: %s of shape %s does not match the parameter's %s", op, what, b, a);
    }
    if (t->dtype != param->dtype)
        return tc_error("%s: %s is %s but the parameter is %s", op, what, tc_dtype_name(t->dtype),
                        tc_dtype_name(param->dtype));
    if (!tc_is_contiguous_format(t, tc_suggest_format(param)))
        return tc_error("%s: %s must be contiguous in the parameter's memory format", op, what);
    return TC_OK;
}

static int check_param(const char *op, tc_tensor *param) {
    if (param->dtype != TC_F32 && param->dtype != TC_F64)
        return tc_error("%s: parameters must be f32 or f64, got %s", op, tc_dtype_name(param->dtype));
    if (!tc_is_contiguous_format(param, tc_suggest_format(param)))
        return tc_error("%s: parameters must be contiguous (update a contiguous tensor, not a view of one)", op);
    return TC_OK;
}

/* the gradient as a contiguous tensor of param's dtype (g itself when it already is) */
static tc_tensor *ready_grad(const char *op, tc_tensor *param, tc_tensor *g) {
    if (tc_check_same_device(op, param, g) != TC_OK) return NULL;
    if (!tc_same_shape(param, g)) {
        char a[128], b[128];
        tc_shape_str(param->ndim, param->shape, a, sizeof a);
        tc_shape_str(g->ndim, g->shape, b, sizeof b);
        tc_error("%s: gradient of shape %s does not match the parameter's %s", op, b, a);
        return NULL;
    }
    if (!tc_dtype_is_float(g->dtype)) {
        tc_error("%s: gradient must be a float tensor, got %s", op, tc_dtype_name(g->dtype));
        return NULL;
    }
    tc_tensor *t = tc_to(g, param->dtype, param->storage->device);
    tc_tensor *c = t ? tc_contiguous_format(t, tc_suggest_format(param)) : NULL;
    tc_tensor_release(t);
    return c;
}

/* marks each written tensor (versions bumped, no leaf error: grad mode is off) */
static int mark_written(const char *op, int n, tc_tensor **ts) {
    for (int i = 0; i < n; i++)
        if (ts[i] && tc_check_inplace(ts[i], op) != TC_OK) return TC_ERR;
    return TC_OK;
}

/* ---- SGD ------------------------------------------------------------------------------------ */
int tc_sgd_step_(tc_tensor *param, tc_tensor *grad, tc_tensor *buf, const tc_sgd_opts *o) {
    if (check_param("sgd", param) != TC_OK) return TC_ERR;
    if (o->momentum != 0 && !buf) return tc_error("sgd: momentum %g needs a momentum buffer", o->momentum);
    if (buf && check_state("sgd", "momentum buffer", param, buf) != TC_OK) return TC_ERR;
    bool prev = tc_set_grad_enabled(false);
    tc_tensor *g = ready_grad("sgd", param, grad);
    tc_tensor *written[2] = {param, o->momentum != 0 ? buf : NULL};
    int rc = g && mark_written("sgd", 2, written) == TC_OK
                 ? tc_kern(param->storage->device)->sgd_step(param, g, written[1], o)
                 : TC_ERR;
    tc_tensor_release(g);
    tc_set_grad_enabled(prev);
    return rc;
}

/* ---- Adam and AdamW -------------------------------------------------------------------------- */
int tc_adam_step_(tc_tensor *param, tc_tensor *grad, tc_tensor *exp_avg, tc_tensor *exp_avg_sq,
                  tc_tensor *max_exp_avg_sq, const tc_adam_opts *o) {
    const char *op = o->decoupled ? "adamw" : "adam";
    if (check_param(op, param) != TC_OK) return TC_ERR;
    if (o->step < 1) return tc_error("%s: step must be at least 1 (got %lld)", op, (long long)o->step);
    if (o->amsgrad && !max_exp_avg_sq) return tc_error("%s: amsgrad needs a max_exp_avg_sq buffer", op);
    if (check_state(op, "exp_avg", param, exp_avg) != TC_OK ||
        check_state(op, "exp_avg_sq", param, exp_avg_sq) != TC_OK ||
        (o->amsgrad && check_state(op, "max_exp_avg_sq", param, max_exp_avg_sq) != TC_OK))
        return TC_ERR;
    bool prev = tc_set_grad_enabled(false);
    tc_tensor *g = ready_grad(op, param, grad);
    tc_tensor *written[4] = {param, exp_avg, exp_avg_sq, o->amsgrad ? max_exp_avg_sq : NULL};
    int rc = g && mark_written(op, 4, written) == TC_OK
                 ? tc_kern(param->storage->device)->adam_step(param, g, exp_avg, exp_avg_sq, written[3], o)
                 : TC_ERR;
    tc_tensor_release(g);
    tc_set_grad_enabled(prev);
    return rc;
}

/* ---- EMA -------------------------------------------------------------------------------------- */
int tc_ema_update_(tc_tensor *shadow, tc_tensor *param, double decay) {
    if (check_param("ema", shadow) != TC_OK) return TC_ERR;
    bool prev = tc_set_grad_enabled(false);
    tc_tensor *p = ready_grad("ema", shadow, param);
    int rc = p && mark_written("ema", 1, &shadow) == TC_OK
                 ? tc_kern(shadow->storage->device)->ema_update(shadow, p, decay)
                 : TC_ERR;
    tc_tensor_release(p);
    tc_set_grad_enabled(prev);
    return rc;
}

/* ---- the multi-tensor forms ---------------------------------------------------------------------
 * Every parameter is checked as the single-tensor update checks it, and must share the first's
 * device and dtype; the gradients are brought to the parameters' layout first, then every
 * written tensor is marked, then one kernel call updates them all. */
typedef struct {
    int n;
    tc_tensor **g; /* the ready gradients (or EMA's weights), owned */
    bool prev;     /* grad mode before */
} multi_call;

static int multi_begin(multi_call *c, const char *op, int n, tc_tensor **params, tc_tensor **grads) {
    c->n = 0;
    c->prev = tc_set_grad_enabled(false);
    c->g = calloc(n > 0 ? (size_t)n : 1, sizeof *c->g);
    if (!c->g) return tc_error("%s: out of memory", op);
    for (int i = 0; i < n; i++) {
        if (check_param(op, params[i]) != TC_OK || tc_check_same_device(op, params[0], params[i]) != TC_OK)
            return TC_ERR;
        if (params[i]->dtype != params[0]->dtype)
            return tc_error("%s: parameter %d is %s, parameter 1 %s (one dtype per call)", op, i + 1,
                            tc_dtype_name(params[i]->dtype), tc_dtype_name(params[0]->dtype));
        if (!(c->g[i] = ready_grad(op, params[i], grads[i]))) return TC_ERR;
        c->n = i + 1;
    }
    return TC_OK;
}

static int multi_end(multi_call *c, int rc) {
    for (int i = 0; i < c->n; i++) tc_tensor_release(c->g[i]);
    free(c->g);
    tc_set_grad_enabled(c->prev);
    return rc;
}

/* marks lists[k][i] for every k < nl (a NULL list is skipped) */
static int mark_lists(const char *op, int n, int nl, tc_tensor **const *lists) {
    for (int k = 0; k < nl; k++)
        if (lists[k] && mark_written(op, n, lists[k]) != TC_OK) return TC_ERR;
    return TC_OK;
}

int tc_sgd_multi_step_(int n, tc_tensor **params, tc_tensor **grads, tc_tensor **buf, const bool *first,
                       const tc_sgd_opts *o) {
    if (n == 0) return TC_OK;
    if (o->momentum != 0 && !buf) return tc_error("sgd: momentum %g needs momentum buffers", o->momentum);
    if (o->momentum == 0) buf = NULL;
    for (int i = 0; buf && i < n; i++)
        if (check_state("sgd", "momentum buffer", params[i], buf[i]) != TC_OK) return TC_ERR;
    if (o->scalars && params[0]->storage->device.type != TC_CUDA)
        return tc_error("sgd: scalars on the device are for CUDA parameters");
    multi_call c;
    int rc = multi_begin(&c, "sgd", n, params, grads);
    tc_tensor **written[2] = {params, buf};
    if (rc == TC_OK) rc = mark_lists("sgd", n, 2, written);
    if (rc == TC_OK) rc = tc_kern(params[0]->storage->device)->sgd_multi(n, params, (const tc_tensor *const *)c.g,
                                                                        buf, first, o);
    return multi_end(&c, rc);
}

int tc_adam_multi_step_(int n, tc_tensor **params, tc_tensor **grads, tc_tensor **exp_avg, tc_tensor **exp_avg_sq,
                        tc_tensor **vmax, const int64_t *steps, const tc_adam_opts *o) {
    const char *op = o->decoupled ? "adamw" : "adam";
    if (n == 0) return TC_OK;
    if (o->amsgrad && !vmax) return tc_error("%s: amsgrad needs max_exp_avg_sq buffers", op);
    if (!o->amsgrad) vmax = NULL;
    for (int i = 0; i < n; i++) {
        if (steps[i] < 1) return tc_error("%s: step must be at least 1 (got %lld)", op, (long long)steps[i]);
        if (check_state(op, "exp_avg", params[i], exp_avg[i]) != TC_OK ||
            check_state(op, "exp_avg_sq", params[i], exp_avg_sq[i]) != TC_OK ||
            (vmax && check_state(op, "max_exp_avg_sq", params[i], vmax[i]) != TC_OK))
            return TC_ERR;
    }
    if (o->scalars && params[0]->storage->device.type != TC_CUDA)
        return tc_error("%s: scalars on the device are for CUDA parameters", op);
    multi_call c;
    int rc = multi_begin(&c, op, n, params, grads);
    tc_tensor **written[4] = {params, exp_avg, exp_avg_sq, vmax};
    if (rc == TC_OK) rc = mark_lists(op, n, 4, written);
    if (rc == TC_OK)
        rc = tc_kern(params[0]->storage->device)
                 ->adam_multi(n, params, (const tc_tensor *const *)c.g, exp_avg, exp_avg_sq, vmax, steps, o);
    return multi_end(&c, rc);
}

int tc_ema_multi_update_(int n, tc_tensor **shadows, tc_tensor **params, double decay) {
    if (n == 0) return TC_OK;
    multi_call c;
    int rc = multi_begin(&c, "ema", n, shadows, params);
    if (rc == TC_OK) rc = mark_written("ema", n, shadows);
    if (rc == TC_OK)
        rc = tc_kern(shadows[0]->storage->device)->ema_multi(n, shadows, (const tc_tensor *const *)c.g, decay);
    return multi_end(&c, rc);
}

/* ---- total norm ---------------------------------------------------------------------------------- */
int tc_total_norm(int n, tc_tensor **xs, double p, double *out) {
    if (!(p > 0)) return tc_error("total_norm: norm type must be positive or inf (got %g)", p);
    double acc = 0;
    bool prev = tc_set_grad_enabled(false);
    int rc = TC_OK;
    for (int i = 0; i < n && rc == TC_OK; i++) {
        if (!tc_dtype_is_float(xs[i]->dtype)) {
            rc = tc_error("total_norm: tensor %d is %s, expected a float tensor", i + 1, tc_dtype_name(xs[i]->dtype));
            break;
        }
        /* f16/bf16 are summed through an f32 copy */
        tc_dtype dt = xs[i]->dtype == TC_F64 ? TC_F64 : TC_F32;
        tc_tensor *t = tc_to(xs[i], dt, xs[i]->storage->device);
        tc_tensor *c = t ? tc_contiguous_format(t, tc_suggest_format(t)) : NULL; /* any dense order sums alike */
        double s = 0;
        rc = c ? tc_kern(c->storage->device)->pow_sum(c, p, &s) : TC_ERR;
        tc_tensor_release(c);
        tc_tensor_release(t);
        if (isinf(p)) acc = s > acc || s != s ? s : acc;
        else acc += s;
    }
    tc_set_grad_enabled(prev);
    if (rc != TC_OK) return rc;
    *out = isinf(p) ? acc : p == 1 ? acc : p == 2 ? sqrt(acc) : pow(acc, 1 / p);
    return TC_OK;
}
