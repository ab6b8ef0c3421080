/* softmax.c: softmax and log_softmax along any dim, cross entropy (class or probability
 * targets, weights, ignore_index, label smoothing), and the mse and l1 losses. Each is one
 * autograd node with a fused backward; the kernels live in core/cpu/softmax.c. */
#include "../internal.h"

#include <math.h>
#include <stdio.h>

static bool check_float(const char *op, const char *what, const tc_tensor *t) {
    if (tc_dtype_is_float(t->dtype)) return true;
    tc_error("%s: %s must be a floating point tensor (got %s)", op, what, tc_dtype_name(t->dtype));
    return false;
}

/* an alias of x (no autograd) with the given shape: a view when the strides allow, else a copy */
static tc_tensor *reshaped(tc_tensor *x, int ndim, const int64_t *shape) {
    tc_tensor *a = tc_alias(x);
    tc_tensor *r = a ? tc_reshape(a, ndim, shape) : NULL;
    tc_tensor_release(a);
    return r;
}

/* ---- softmax, log_softmax ---------------------------------------------------------------- */
static int softmax_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *y = tc_saved(n, 0);
    tc_tensor *g = tc_empty_like(y, y->dtype);
    if (!g) return TC_ERR;
    if (tc_kern(y->storage->device)->softmax_backward(g, gy, y, (int)n->i[0], n->op == TC_OP_LOG_SOFTMAX) != TC_OK) {
        tc_tensor_release(g);
        return TC_ERR;
    }
    gx[0] = g;
    return TC_OK;
}

static tc_tensor *softmax_op(tc_op op, tc_tensor *x, int dim) {
    const char *name = tc_op_name(op);
    int d = tc_wrap_dim(dim, x->ndim, name);
    if (d < 0 || !check_float(name, "input", x)) return NULL;
    int64_t one = 1;
    /* a 0-d tensor is one row of one element */
    tc_tensor *xs = x->ndim ? tc_alias(x) : tc_tensor_make(x->storage, x->dtype, 1, &one, &one, x->offset);
    tc_tensor *y = xs ? tc_empty_like(xs, x->dtype) : NULL;
    int rc = y ? tc_kern(x->storage->device)->softmax(y, xs, d, op == TC_OP_LOG_SOFTMAX) : TC_ERR;
    tc_tensor_release(xs);
    if (rc != TC_OK) { tc_tensor_release(y); return NULL; }
    tc_node *n = tc_node_new(op, 1, &x, softmax_backward);
    if (n) {
        n->i[0] = d;
        tc_node_save(n, y);
    }
    if (x->ndim == 0) {
        tc_tensor *s = tc_tensor_make(y->storage, y->dtype, 0, NULL, NULL, 0);
        tc_tensor_release(y);
        if (!s) { tc_node_release(n); return NULL; }
        y = s;
    }
    return tc_attach(y, n);
}

/* under autocast: in f32 */
static tc_tensor *softmax_f32(tc_op op, tc_tensor *x, int dim) {
    if (!tc_autocast_enabled()) return softmax_op(op, x, dim);
    tc_tensor *c;
    if (tc_autocast_inputs(TC_CAST_UPPER, 1, &x, &c) != TC_OK) return NULL;
    tc_tensor *y = softmax_op(op, c, dim);
    tc_tensor_release(c);
    return y;
}

tc_tensor *tc_softmax(tc_tensor *x, int dim) { return softmax_f32(TC_OP_SOFTMAX, x, dim); }
tc_tensor *tc_log_softmax(tc_tensor *x, int dim) { return softmax_f32(TC_OP_LOG_SOFTMAX, x, dim); }

/* ---- cross entropy --------------------------------------------------------------------------
 * The kernel gives each sample's loss and its weight in a mean; the op reduces them, so
 * mean = sum(loss) / sum(weights) as PyTorch (N * d... for probability targets).
 * Saved: logits [N, C, D], target ([N, D] or [N, C, D]), weight; i[0] = reduction,
 * i[1] = ignore_index; d[1] = label smoothing, d[2] = the scale a reduced gradient takes. */
static int cross_entropy_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *lg = tc_saved(n, 0), *t = tc_saved(n, 1), *w = tc_saved(n, 2);
    int64_t ls[2] = {lg->shape[0], lg->shape[2]}, zero[2] = {0, 0};
    /* gy is [N, d...] (none) or a scalar: read it as [N, D], broadcasting a scalar */
    tc_tensor *g = n->i[0] == TC_REDUCTION_NONE ? reshaped(gy, 2, ls)
                                                : tc_tensor_make(gy->storage, gy->dtype, 2, ls, zero, gy->offset);
    bool need_l = tc_needs_grad(n, 0), need_t = tc_needs_grad(n, 1);
    tc_tensor *gl = g && need_l ? tc_empty_like(lg, lg->dtype) : NULL;
    tc_tensor *gt = g && need_t ? tc_empty_like(t, t->dtype) : NULL;
    int rc = g && (gl || !need_l) && (gt || !need_t) ? TC_OK : TC_ERR;
    if (rc == TC_OK)
        rc = tc_kern(lg->storage->device)->cross_entropy_backward(gl, gt, g, n->d[2], lg, t, w, n->i[1], n->d[1]);
    /* back to the inputs' own shapes */
    for (int i = 0; i < 2 && rc == TC_OK; i++) {
        tc_tensor *r = i ? gt : gl;
        if (!r) continue;
        gx[i] = tc_reshape(r, n->next[i].ndim, n->next[i].shape);
        if (!gx[i]) rc = TC_ERR;
    }
    tc_tensor_release(g);
    tc_tensor_release(gl);
    tc_tensor_release(gt);
    return rc;
}

/* validates the shapes; lshape gets the logits' [N, C, D] view (D: the trailing dims, 1 if none) */
static int ce_shapes(tc_tensor *logits, tc_tensor *target, tc_tensor *weight, bool probs, int64_t *lshape) {
    char a[128], b[128];
    tc_shape_str(logits->ndim, logits->shape, a, sizeof a);
    tc_shape_str(target->ndim, target->shape, b, sizeof b);
    if (logits->ndim < 1) return tc_error("cross_entropy: logits must be [C], [N, C] or [N, C, d...] (got %s)", a);
    int cdim = logits->ndim == 1 ? 0 : 1;
    int64_t N = logits->ndim == 1 ? 1 : logits->shape[0], C = logits->shape[cdim], D = 1;
    for (int i = 2; i < logits->ndim; i++) D *= logits->shape[i];
    if (probs) {
        if (!tc_same_shape(logits, target))
            return tc_error("cross_entropy: probability targets %s must have the logits' shape %s", b, a);
    } else {
        bool ok = target->ndim == logits->ndim - 1;
        for (int i = 0, j = 0; ok && i < logits->ndim; i++)
            if (i != cdim) ok = target->shape[j++] == logits->shape[i];
        if (!ok)
            return tc_error("cross_entropy: class targets %s do not match logits %s (expected the logits' shape "
                            "without the class dim %d)", b, a, cdim + 1);
    }
    if (weight && (weight->ndim != 1 || weight->shape[0] != C)) {
        tc_shape_str(weight->ndim, weight->shape, b, sizeof b);
        return tc_error("cross_entropy: weight must be 1-d with one entry per class (%lld), got %s", (long long)C, b);
    }
    lshape[0] = N;
    lshape[1] = C;
    lshape[2] = D;
    return TC_OK;
}

static tc_tensor *cross_entropy(tc_tensor *logits, tc_tensor *target, tc_tensor *weight, int64_t ignore_index,
                                double label_smoothing, tc_reduction red) {
    if (!check_float("cross_entropy", "logits", logits)) return NULL;
    bool probs = tc_dtype_is_float(target->dtype);
    if (!probs && target->dtype != TC_I64 && target->dtype != TC_I32) {
        tc_error("cross_entropy: target must hold class indices (i64 or i32) or probabilities (float), got %s",
                 tc_dtype_name(target->dtype));
        return NULL;
    }
    if (weight && !check_float("cross_entropy", "weight", weight)) return NULL;
    if (!(label_smoothing >= 0 && label_smoothing <= 1)) {
        tc_error("cross_entropy: label_smoothing must be between 0 and 1 (got %g)", label_smoothing);
        return NULL;
    }
    if (tc_check_same_device("cross_entropy", logits, target) != TC_OK ||
        (weight && tc_check_same_device("cross_entropy", logits, weight) != TC_OK))
        return NULL;
    int64_t ls[3];
    if (ce_shapes(logits, target, weight, probs, ls) != TC_OK) return NULL;
    int64_t ts[3] = {ls[0], probs ? ls[1] : ls[2], ls[2]};
    tc_tensor *lg = reshaped(logits, 3, ls), *t = reshaped(target, probs ? 3 : 2, ts);
    tc_dtype dt = logits->dtype;
    tc_device dev = logits->storage->device;
    const tc_kernels *k = tc_kern(dev);
    int64_t ns[2] = {ls[0], ls[2]}; /* [N, D]: one loss per sample */
    tc_tensor *loss = t && lg ? tc_empty(2, ns, dt, dev) : NULL;
    tc_tensor *tw = loss ? tc_empty(2, ns, dt == TC_F64 ? TC_F64 : TC_F32, dev) : NULL; /* the mean's weights */
    tc_tensor *out = NULL, *sum = NULL, *wsum = NULL;
    double scale = 1;
    int rc = tw ? k->cross_entropy(loss, tw, lg, t, weight, ignore_index, label_smoothing) : TC_ERR;
    if (rc == TC_OK && red == TC_REDUCTION_NONE) {
        /* logits' shape without the class dim; a scalar for [C] logits */
        int64_t os[TC_MAX_DIMS];
        int nd = 0;
        for (int i = 0; i < logits->ndim; i++)
            if (i != (logits->ndim == 1 ? 0 : 1)) os[nd++] = logits->shape[i];
        out = reshaped(loss, nd, os);
    } else if (rc == TC_OK) {
        sum = tc_empty(0, NULL, dt, dev);
        rc = sum ? k->reduce(sum, loss, TC_OP_SUM, 2) : TC_ERR;
        if (rc == TC_OK && red == TC_REDUCTION_MEAN) {
            double total = 0;
            wsum = tc_empty(0, NULL, TC_F64, dev);
            rc = wsum ? k->reduce(wsum, tw, TC_OP_SUM, 2) : TC_ERR;
            if (rc == TC_OK) rc = tc_item(wsum, &total);
            scale = 1 / total; /* all ignored: 0 / 0 = nan, as PyTorch */
            if (rc == TC_OK) rc = k->unary(sum, sum, TC_OP_MUL_SCALAR, scale, 0);
        }
        out = rc == TC_OK ? tc_tensor_retain(sum) : NULL;
    }
    tc_tensor *ins[2] = {logits, probs ? target : NULL};
    tc_node *n = out ? tc_node_new(TC_OP_CROSS_ENTROPY, 2, ins, cross_entropy_backward) : NULL;
    if (n) {
        tc_node_save(n, lg);
        tc_node_save(n, t);
        tc_node_save(n, weight);
        n->i[1] = ignore_index;
        n->d[1] = label_smoothing;
        n->d[2] = scale;
        n->i[0] = red;
    }
    tc_tensor *tmp[] = {lg, t, loss, tw, sum, wsum};
    for (int i = 0; i < 6; i++) tc_tensor_release(tmp[i]);
    return out ? tc_attach(out, n) : NULL;
}

/* ---- mse and l1 ----------------------------------------------------------------------------------
 * Saved: d = a - b. The gradient of the elementwise loss is 2 d (mse) or sign(d) (l1), times
 * gy (broadcast from a scalar when reduced) and 1 / numel for a mean. */
static int pointwise_loss_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *d = tc_saved(n, 0);
    tc_tensor *f = n->op == TC_OP_MSE_LOSS ? tc_unary_s(TC_OP_MUL_SCALAR, d, 2 * n->d[0], 0)
                                           : tc_unary(TC_OP_SIGN, d);
    if (f && n->op == TC_OP_L1_LOSS && n->d[0] != 1) {
        tc_tensor *s = tc_unary_s(TC_OP_MUL_SCALAR, f, n->d[0], 0);
        tc_tensor_release(f);
        f = s;
    }
    tc_tensor *g = f ? tc_binary(TC_OP_MUL, gy, f) : NULL;
    tc_tensor_release(f);
    if (!g) return TC_ERR;
    if (tc_needs_grad(n, 1) && !(gx[1] = tc_unary(TC_OP_NEG, g))) { tc_tensor_release(g); return TC_ERR; }
    if (tc_needs_grad(n, 0)) gx[0] = g;
    else tc_tensor_release(g);
    return TC_OK;
}

static tc_tensor *pointwise_loss(tc_op op, tc_tensor *a, tc_tensor *b, tc_reduction red) {
    const char *name = tc_op_name(op);
    if (!check_float(name, "input", a) || !check_float(name, "target", b)) return NULL;
    if (tc_check_same_device(name, a, b) != TC_OK) return NULL;
    if (!tc_same_shape(a, b)) {
        char x[128], y[128];
        tc_shape_str(a->ndim, a->shape, x, sizeof x);
        tc_shape_str(b->ndim, b->shape, y, sizeof y);
        tc_error("%s: input %s and target %s must have the same shape", name, x, y);
        return NULL;
    }
    tc_dtype dt = tc_promote(a->dtype, b->dtype);
    const tc_kernels *k = tc_kern(a->storage->device);
    tc_tensor *d = tc_empty_like(a, dt), *e = d ? tc_empty_like(a, dt) : NULL, *out = NULL;
    int rc = e ? TC_OK : TC_ERR;
    tc_tensor *ac = NULL, *bc = NULL;
    if (rc == TC_OK) { /* the kernel computes in the output's dtype */
        bool prev = tc_set_grad_enabled(false);
        ac = tc_to(a, dt, a->storage->device);
        bc = tc_to(b, dt, b->storage->device);
        tc_set_grad_enabled(prev);
        rc = ac && bc ? k->binary(d, ac, bc, TC_OP_SUB) : TC_ERR;
    }
    if (rc == TC_OK) rc = k->unary(e, d, op == TC_OP_MSE_LOSS ? TC_OP_SQUARE : TC_OP_ABS, 0, 0);
    int64_t numel = tc_numel(a);
    if (rc == TC_OK && red != TC_REDUCTION_NONE) {
        out = tc_empty(0, NULL, dt, a->storage->device);
        rc = out ? k->reduce(out, e, red == TC_REDUCTION_MEAN ? TC_OP_MEAN : TC_OP_SUM, e->ndim) : TC_ERR;
    } else if (rc == TC_OK) out = tc_tensor_retain(e);
    tc_tensor_release(ac);
    tc_tensor_release(bc);
    tc_tensor_release(e);
    if (rc != TC_OK) { tc_tensor_release(out); tc_tensor_release(d); return NULL; }
    tc_tensor *ins[2] = {a, b};
    tc_node *n = tc_node_new(op, 2, ins, pointwise_loss_backward);
    if (n) {
        tc_node_save(n, d);
        n->d[0] = red == TC_REDUCTION_MEAN ? 1.0 / (double)numel : 1.0;
    }
    tc_tensor_release(d);
    return tc_attach(out, n);
}

/* ---- under autocast, losses in f32 ---------------------------------------------------------- */
tc_tensor *tc_cross_entropy(tc_tensor *logits, tc_tensor *target, tc_tensor *weight, int64_t ignore_index,
                            double label_smoothing, tc_reduction red) {
    if (!tc_autocast_enabled()) return cross_entropy(logits, target, weight, ignore_index, label_smoothing, red);
    tc_tensor *c[3];
    if (tc_autocast_inputs(TC_CAST_UPPER, 3, (tc_tensor *[]){logits, target, weight}, c) != TC_OK) return NULL;
    tc_tensor *y = cross_entropy(c[0], c[1], c[2], ignore_index, label_smoothing, red);
    tc_autocast_release(3, c);
    return y;
}

static tc_tensor *pointwise_loss_f32(tc_op op, tc_tensor *a, tc_tensor *b, tc_reduction red) {
    if (!tc_autocast_enabled()) return pointwise_loss(op, a, b, red);
    tc_tensor *c[2];
    if (tc_autocast_inputs(TC_CAST_UPPER, 2, (tc_tensor *[]){a, b}, c) != TC_OK) return NULL;
    tc_tensor *y = pointwise_loss(op, c[0], c[1], red);
    tc_autocast_release(2, c);
    return y;
}

tc_tensor *tc_mse_loss(tc_tensor *a, tc_tensor *b, tc_reduction red) { return pointwise_loss_f32(TC_OP_MSE_LOSS, a, b, red); }
tc_tensor *tc_l1_loss(tc_tensor *a, tc_tensor *b, tc_reduction red) { return pointwise_loss_f32(TC_OP_L1_LOSS, a, b, red); }
