/* norm.c: layer norm (over the last dims) and group norm (over channel groups of
 * [N, C, *], optionally followed by a fused silu), each one autograd node: forward saves mean
 * and 1/std, and the fused backward kernel gives the input, weight and bias gradients in one
 * pass (core/cpu/norm.c). */
#include "../internal.h"

#include <stdio.h>

/* an alias of x (no autograd) with the given shape: a view when the strides allow, else a copy */
static tc_tensor *reshaped(tc_tensor *x, int ndim, const int64_t *shape) {
    tc_tensor *a = tc_alias(x);
    tc_tensor *r = a ? tc_reshape(a, ndim, shape) : NULL;
    tc_tensor_release(a);
    return r;
}

static tc_dtype stat_dtype(tc_dtype dt) { return dt == TC_F64 ? TC_F64 : TC_F32; }

/* an empty channels-last tensor of the 4-d shape, and in *rows its view [N, C, H W] (strides
 * {H W C, 1, C}) that the kernels read and write: group norm keeps a channels-last layout */
static tc_tensor *empty_channels_last(const int64_t *shape, tc_dtype dt, tc_device dev, tc_tensor **rows) {
    tc_tensor *t = tc_empty_format(4, shape, dt, dev, TC_CHANNELS_LAST);
    int64_t s3[3] = {shape[0], shape[1], shape[2] * shape[3]}, st[3] = {t ? t->stride[0] : 0, 1, shape[1]};
    *rows = t ? tc_tensor_make(t->storage, dt, 3, s3, st, 0) : NULL;
    if (!*rows) { tc_tensor_release(t); return NULL; }
    return t;
}

/* checks an optional affine parameter: float, on x's device, of the given shape */
static int check_param(const char *op, const char *name, tc_tensor *x, tc_tensor *p, int ndim, const int64_t *shape) {
    if (!p) return TC_OK;
    if (!tc_dtype_is_float(p->dtype))
        return tc_error("%s: %s must be a floating point tensor (got %s)", op, name, tc_dtype_name(p->dtype));
    if (tc_check_same_device(op, x, p) != TC_OK) return TC_ERR;
    bool ok = p->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = p->shape[i] == shape[i];
    if (ok) return TC_OK;
    char a[128], b[128];
    tc_shape_str(p->ndim, p->shape, a, sizeof a);
    tc_shape_str(ndim, shape, b, sizeof b);
    return tc_error("%s: %s has shape %s, expected %s", op, name, a, b);
}

/* Every node: saved x (2-d or 3-d view), mean, rstd, w, and b where the silu of group norm
 * needs it to recompute what it activated; i[0] = groups (group norm), i[1] = the memory
 * format of x and y. Gradients come back in the shapes of x, w and b (x's in its format). */
static int norm_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *x = tc_saved(n, 0), *mean = tc_saved(n, 1), *rstd = tc_saved(n, 2), *w = tc_saved(n, 3);
    tc_tensor *b = n->op == TC_OP_GROUP_NORM_SILU ? tc_saved(n, 4) : NULL;
    bool cl = n->i[1] == TC_CHANNELS_LAST;
    tc_tensor *g = reshaped(gy, x->ndim, x->shape), *r[3] = {NULL, NULL, NULL}, *gx4 = NULL;
    int rc = g ? TC_OK : TC_ERR;
    for (int i = 0; i < 3 && rc == TC_OK; i++) {
        if (!tc_needs_grad(n, i)) continue;
        if (i == 0 && cl) gx4 = empty_channels_last(n->next[0].shape, x->dtype, x->storage->device, &r[0]);
        else r[i] = i == 0 ? tc_empty_like(x, x->dtype) : tc_empty(1, &x->shape[1], n->next[i].dtype, x->storage->device);
        if (!r[i]) rc = TC_ERR;
    }
    const tc_kernels *k = tc_kern(x->storage->device);
    if (rc == TC_OK)
        rc = n->op == TC_OP_LAYER_NORM ? k->layer_norm_backward(r[0], r[1], r[2], g, x, mean, rstd, w)
                                       : k->group_norm_backward(r[0], r[1], r[2], g, x, mean, rstd, w, b, (int)n->i[0],
                                                                n->op == TC_OP_GROUP_NORM_SILU);
    for (int i = 0; i < 3; i++) {
        if (rc == TC_OK && i == 0 && gx4) gx[0] = tc_tensor_retain(gx4);
        else if (rc == TC_OK && r[i] && !(gx[i] = tc_reshape(r[i], n->next[i].ndim, n->next[i].shape))) rc = TC_ERR;
        tc_tensor_release(r[i]);
    }
    tc_tensor_release(gx4);
    tc_tensor_release(g);
    return rc;
}

/* runs the kernel on x viewed as xs (2-d or 3-d) with nstat statistics, records the node */
static tc_tensor *norm_forward(tc_op op, tc_tensor *x, tc_tensor *xs, int64_t nstat, tc_tensor *w, tc_tensor *b,
                               int groups, double eps) {
    tc_device dev = x->storage->device;
    /* group norm of a channels-last x: y channels-last, the kernels reading and writing it in place */
    tc_memory_format f = op == TC_OP_LAYER_NORM ? TC_CONTIGUOUS_FORMAT : tc_suggest_format(x);
    tc_tensor *y4 = NULL, *y = NULL;
    if (f == TC_CHANNELS_LAST) y4 = empty_channels_last(x->shape, x->dtype, dev, &y);
    else y = tc_empty_like(xs, x->dtype);
    tc_tensor *mean = y ? tc_empty(1, &nstat, stat_dtype(x->dtype), dev) : NULL;
    tc_tensor *rstd = mean ? tc_empty(1, &nstat, stat_dtype(x->dtype), dev) : NULL;
    /* w and b as 1-d vectors over the normalised features (layer norm) or channels */
    tc_tensor *wv = w ? reshaped(w, 1, &xs->shape[1]) : NULL, *bv = b ? reshaped(b, 1, &xs->shape[1]) : NULL;
    int rc = rstd && (wv || !w) && (bv || !b) ? TC_OK : TC_ERR;
    const tc_kernels *k = tc_kern(dev);
    if (rc == TC_OK)
        rc = op == TC_OP_LAYER_NORM ? k->layer_norm(y, mean, rstd, xs, wv, bv, eps)
                                    : k->group_norm(y, mean, rstd, xs, wv, bv, groups, eps, op == TC_OP_GROUP_NORM_SILU);
    tc_tensor *out = rc != TC_OK ? NULL
                     : y4        ? tc_tensor_retain(y4)
                                 : tc_tensor_make(y->storage, y->dtype, x->ndim, x->shape, NULL, 0);
    tc_tensor *ins[3] = {x, w, b};
    tc_node *n = out ? tc_node_new(op, 3, ins, norm_backward) : NULL;
    if (n) {
        tc_node_save(n, xs);
        tc_node_save(n, mean);
        tc_node_save(n, rstd);
        tc_node_save(n, wv);
        tc_node_save(n, op == TC_OP_GROUP_NORM_SILU ? bv : NULL);
        n->i[0] = groups;
        n->i[1] = f;
    }
    tc_tensor *tmp[] = {y, y4, mean, rstd, wv, bv};
    for (int i = 0; i < 6; i++) tc_tensor_release(tmp[i]);
    return out ? tc_attach(out, n) : NULL;
}

static tc_tensor *layer_norm(tc_tensor *x, int nnorm, tc_tensor *w, tc_tensor *b, double eps) {
    if (!tc_dtype_is_float(x->dtype)) {
        tc_error("layer_norm: input must be a floating point tensor (got %s)", tc_dtype_name(x->dtype));
        return NULL;
    }
    if (nnorm < 1 || nnorm > x->ndim) {
        tc_error("layer_norm: cannot normalise over the last %d dims of a %d-d tensor", nnorm, x->ndim);
        return NULL;
    }
    const int64_t *feat = x->shape + x->ndim - nnorm;
    if (check_param("layer_norm", "weight", x, w, nnorm, feat) != TC_OK ||
        check_param("layer_norm", "bias", x, b, nnorm, feat) != TC_OK)
        return NULL;
    int64_t s2[2] = {tc_shape_numel(x->ndim - nnorm, x->shape), tc_shape_numel(nnorm, feat)};
    tc_tensor *xs = reshaped(x, 2, s2);
    tc_tensor *y = xs ? norm_forward(TC_OP_LAYER_NORM, x, xs, s2[0], w, b, 0, eps) : NULL;
    tc_tensor_release(xs);
    return y;
}

static tc_tensor *group_norm(tc_tensor *x, int groups, tc_tensor *w, tc_tensor *b, double eps, bool silu) {
    if (!tc_dtype_is_float(x->dtype)) {
        tc_error("group_norm: input must be a floating point tensor (got %s)", tc_dtype_name(x->dtype));
        return NULL;
    }
    char s[128];
    tc_shape_str(x->ndim, x->shape, s, sizeof s);
    if (x->ndim < 2) {
        tc_error("group_norm: expected an input [N, C, *], got %s", s);
        return NULL;
    }
    int64_t C = x->shape[1];
    if (groups < 1 || C % groups != 0) {
        tc_error("group_norm: %lld channels cannot be split into %d groups (input %s)", (long long)C, groups, s);
        return NULL;
    }
    if (check_param("group_norm", "weight", x, w, 1, &C) != TC_OK ||
        check_param("group_norm", "bias", x, b, 1, &C) != TC_OK)
        return NULL;
    int64_t s3[3] = {x->shape[0], C, tc_shape_numel(x->ndim - 2, x->shape + 2)};
    tc_tensor *xs = reshaped(x, 3, s3);
    tc_op op = silu ? TC_OP_GROUP_NORM_SILU : TC_OP_GROUP_NORM;
    tc_tensor *y = xs ? norm_forward(op, x, xs, s3[0] * groups, w, b, groups, eps) : NULL;
    tc_tensor_release(xs);
    return y;
}

/* ---- under autocast: the input, weight and bias in f32 ------------------------------------- */
tc_tensor *tc_layer_norm(tc_tensor *x, int nnorm, tc_tensor *w, tc_tensor *b, double eps) {
    if (!tc_autocast_enabled()) return layer_norm(x, nnorm, w, b, eps);
    tc_tensor *c[3];
    if (tc_autocast_inputs(TC_CAST_UPPER, 3, (tc_tensor *[]){x, w, b}, c) != TC_OK) return NULL;
    tc_tensor *y = layer_norm(c[0], nnorm, c[1], c[2], eps);
    tc_autocast_release(3, c);
    return y;
}

tc_tensor *tc_group_norm(tc_tensor *x, int groups, tc_tensor *w, tc_tensor *b, double eps, bool silu) {
    if (!tc_autocast_enabled()) return group_norm(x, groups, w, b, eps, silu);
    tc_tensor *c[3];
    if (tc_autocast_inputs(TC_CAST_UPPER, 3, (tc_tensor *[]){x, w, b}, c) != TC_OK) return NULL;
    tc_tensor *y = group_norm(c[0], groups, c[1], c[2], eps, silu);
    tc_autocast_release(3, c);
    return y;
}
