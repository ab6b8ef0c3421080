/* reduce.c: reductions over any set of dims (sum, mean, max, min, prod, logsumexp),
 * the composite var/std/norm, and max/min/argmax along one dim. The kernel reduces the
 * trailing dims of a permuted view; backward broadcasts gy back over the reduced dims. */
#include "../internal.h"

#include <math.h>
#include <stdio.h>

/* normalises dims into a mask; ndims == 0 means all */
static int dim_mask(const char *op, const tc_tensor *x, int ndims, const int *dims, bool *mask) {
    for (int i = 0; i < TC_MAX_DIMS; i++) mask[i] = ndims == 0;
    for (int i = 0; i < ndims; i++) {
        int d = tc_wrap_dim(dims[i], x->ndim, op);
        if (d < 0) return TC_ERR;
        if (x->ndim == 0) continue;
        if (mask[d] && ndims > 0) return tc_error("%s: dimension %d repeated", op, d + 1);
        mask[d] = true;
    }
    return TC_OK;
}

/* x permuted (outside autograd) so the masked dims come last; returns how many */
static tc_tensor *reduced_last(tc_tensor *x, const bool *mask, int *nred, int64_t *kept, int *nkept) {
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    int j = 0;
    for (int i = 0; i < x->ndim; i++)
        if (!mask[i]) { kept[j] = sh[j] = x->shape[i]; st[j++] = x->stride[i]; }
    *nkept = j;
    for (int i = 0; i < x->ndim; i++)
        if (mask[i]) { sh[j] = x->shape[i]; st[j++] = x->stride[i]; }
    *nred = x->ndim - *nkept;
    return tc_tensor_make(x->storage, x->dtype, x->ndim, sh, st, x->offset);
}

/* gy (reduced shape, keepdim or not) viewed with size-1 reduced dims, expanded to x's shape */
static tc_tensor *expand_back(tc_tensor *gy, const tc_edge *e, const int64_t *mask_bits) {
    int64_t sh[TC_MAX_DIMS];
    for (int i = 0; i < e->ndim; i++) sh[i] = (mask_bits[0] >> i) & 1 ? 1 : e->shape[i];
    tc_tensor *v = tc_reshape(gy, e->ndim, sh);
    if (!v) return NULL;
    tc_tensor *r = tc_expand(v, e->ndim, e->shape);
    tc_tensor_release(v);
    return r;
}

/* the reduced dims of a node, from its mask bits */
static int reduced_dims(const tc_node *n, int *d) {
    int nd = 0;
    for (int i = 0; i < n->next[0].ndim; i++)
        if ((n->i[0] >> i) & 1) d[nd++] = i;
    return nd;
}

/* prod: each element's gradient is the product of the others in its slice: y / x where the
 * slice holds no zero; where it holds one zero, that element gets the product of the rest
 * and the others 0; with two or more zeros, all 0 */
static tc_tensor *prod_share(tc_node *n, tc_tensor *x, tc_tensor *y) {
    int d[TC_MAX_DIMS], nd = reduced_dims(n, d);
    tc_tensor *zero = tc_scalar_tensor(0, x->dtype, x->storage->device);
    tc_tensor *one = tc_scalar_tensor(1, x->dtype, x->storage->device);
    tc_tensor *ye = expand_back(y, &n->next[0], &n->i[0]);
    tc_tensor *isz = zero && one && ye ? tc_binary(TC_OP_EQ, x, zero) : NULL;
    tc_tensor *x1 = isz ? tc_where(isz, one, x) : NULL;               /* zeros replaced by 1 */
    tc_tensor *rest = x1 ? tc_reduce(TC_OP_PROD, x1, nd, d, true) : NULL; /* product of the non-zeros */
    tc_tensor *nzeros = rest ? tc_reduce(TC_OP_SUM, isz, nd, d, true) : NULL;
    tc_tensor *lone = nzeros ? tc_binary(TC_OP_EQ, nzeros, one) : NULL;
    tc_tensor *at_zero = lone ? tc_where(lone, rest, zero) : NULL;
    tc_tensor *others = at_zero ? tc_binary(TC_OP_DIV, ye, x1) : NULL;   /* 0 whenever the slice has a zero */
    tc_tensor *share = others ? tc_where(isz, at_zero, others) : NULL;
    tc_tensor *tmp[] = {zero, one, ye, isz, x1, rest, nzeros, lone, at_zero, others};
    for (int i = 0; i < 10; i++) tc_tensor_release(tmp[i]);
    return share;
}

static int reduce_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_edge *e = &n->next[0];
    tc_tensor *g = expand_back(gy, e, &n->i[0]);
    if (!g) return TC_ERR;
    tc_tensor *x = tc_saved(n, 0), *y = tc_saved(n, 1), *r = NULL;
    switch (n->op) {
    case TC_OP_SUM: r = tc_contiguous(g); break;
    case TC_OP_MEAN: r = tc_unary_s(TC_OP_MUL_SCALAR, g, 1.0 / n->d[0], 0); break;
    case TC_OP_MAX:
    case TC_OP_MIN: { /* ties share the gradient evenly, as torch.amax */
        int d[TC_MAX_DIMS], nd = reduced_dims(n, d);
        tc_tensor *ye = expand_back(y, e, &n->i[0]);
        tc_tensor *m = ye ? tc_binary(TC_OP_EQ, x, ye) : NULL;
        tc_tensor *mf = m ? tc_to(m, gy->dtype, gy->storage->device) : NULL;
        tc_tensor *cnt = mf ? tc_reduce(TC_OP_SUM, mf, nd, d, true) : NULL;
        tc_tensor *share = cnt ? tc_binary(TC_OP_DIV, mf, cnt) : NULL;
        r = share ? tc_binary(TC_OP_MUL, g, share) : NULL;
        tc_tensor *tmp[] = {ye, m, mf, cnt, share};
        for (int i = 0; i < 5; i++) tc_tensor_release(tmp[i]);
        break;
    }
    case TC_OP_PROD: {
        tc_tensor *share = prod_share(n, x, y);
        r = share ? tc_binary(TC_OP_MUL, g, share) : NULL;
        tc_tensor_release(share);
        break;
    }
    case TC_OP_LOGSUMEXP: { /* gy * exp(x - y) */
        tc_tensor *ye = expand_back(y, e, &n->i[0]);
        tc_tensor *d = ye ? tc_binary(TC_OP_SUB, x, ye) : NULL;
        tc_tensor *p = d ? tc_unary(TC_OP_EXP, d) : NULL;
        r = p ? tc_binary(TC_OP_MUL, g, p) : NULL;
        tc_tensor *tmp[] = {ye, d, p};
        for (int i = 0; i < 3; i++) tc_tensor_release(tmp[i]);
        break;
    }
    default: tc_error("no derivative for %s", tc_op_name(n->op)); break;
    }
    tc_tensor_release(g);
    gx[0] = r;
    return r ? TC_OK : TC_ERR;
}

static tc_tensor *reduce(tc_op op, tc_tensor *x, int ndims, const int *dims, bool keepdim) {
    const char *name = tc_op_name(op);
    bool mask[TC_MAX_DIMS];
    if (dim_mask(name, x, ndims, dims, mask) != TC_OK) return NULL;
    int nred, nkept;
    int64_t kept[TC_MAX_DIMS];
    tc_dtype dt = x->dtype;
    if (op == TC_OP_SUM || op == TC_OP_PROD) { if (!tc_dtype_is_float(dt)) dt = TC_I64; }
    else if (op == TC_OP_MEAN || op == TC_OP_LOGSUMEXP) { if (!tc_dtype_is_float(dt)) dt = TC_F32; }
    tc_tensor *xc = x->dtype == dt || op == TC_OP_MAX || op == TC_OP_MIN ? tc_tensor_retain(x)
                                                                         : tc_to(x, dt, x->storage->device);
    if (!xc) return NULL;
    tc_tensor *xp = reduced_last(xc, mask, &nred, kept, &nkept);
    int64_t count = 1;
    for (int i = 0; i < x->ndim; i++)
        if (mask[i]) count *= x->shape[i];
    if ((op == TC_OP_MAX || op == TC_OP_MIN) && count == 0 && tc_numel(x) == 0) {
        tc_tensor_release(xp);
        tc_tensor_release(xc);
        tc_error("%s: cannot reduce over an empty dimension (no identity)", name);
        return NULL;
    }
    tc_tensor *out = xp ? tc_empty(nkept, kept, xc->dtype, x->storage->device) : NULL;
    int rc = out ? tc_kern(x->storage->device)->reduce(out, xp, op, nred) : TC_ERR;
    tc_tensor_release(xp);
    if (rc != TC_OK) {
        tc_tensor_release(out);
        tc_tensor_release(xc);
        return NULL;
    }
    if (keepdim) {
        int64_t sh[TC_MAX_DIMS];
        for (int i = 0; i < x->ndim; i++) sh[i] = mask[i] ? 1 : x->shape[i];
        tc_tensor *v = tc_tensor_make(out->storage, out->dtype, x->ndim, sh, NULL, 0);
        tc_tensor_release(out);
        out = v;
        if (!out) { tc_tensor_release(xc); return NULL; }
    }
    tc_node *n = tc_dtype_is_float(dt) ? tc_node_new(op, 1, &x, reduce_backward) : NULL;
    if (n) {
        n->i[0] = 0;
        for (int i = 0; i < x->ndim; i++)
            if (mask[i]) n->i[0] |= 1ll << i;
        n->d[0] = (double)count;
        bool need_x = op == TC_OP_MAX || op == TC_OP_MIN || op == TC_OP_PROD || op == TC_OP_LOGSUMEXP;
        tc_node_save(n, need_x ? xc : NULL);
        tc_node_save(n, need_x ? out : NULL);
    }
    tc_tensor_release(xc);
    return tc_attach(out, n);
}

/* under autocast, sums, means, products and logsumexp of f16 / bf16 inputs in f32 (max and
 * min are exact in any dtype) */
tc_tensor *tc_reduce(tc_op op, tc_tensor *x, int ndims, const int *dims, bool keepdim) {
    if (!tc_autocast_enabled() || op == TC_OP_MAX || op == TC_OP_MIN) return reduce(op, x, ndims, dims, keepdim);
    tc_tensor *c;
    if (tc_autocast_inputs(TC_CAST_UPPER, 1, &x, &c) != TC_OK) return NULL;
    tc_tensor *y = reduce(op, c, ndims, dims, keepdim);
    tc_tensor_release(c);
    return y;
}

/* ---- composites: their gradients come from the ops they are built of ------------------ */
tc_tensor *tc_var(tc_tensor *x, int ndims, const int *dims, double correction, bool keepdim) {
    bool mask[TC_MAX_DIMS];
    if (dim_mask("var", x, ndims, dims, mask) != TC_OK) return NULL;
    int64_t count = 1;
    for (int i = 0; i < x->ndim; i++)
        if (mask[i]) count *= x->shape[i];
    tc_tensor *m = tc_reduce(TC_OP_MEAN, x, ndims, dims, true);
    tc_tensor *d = m ? tc_binary(TC_OP_SUB, x, m) : NULL;
    tc_tensor *d2 = d ? tc_binary(TC_OP_MUL, d, d) : NULL;
    tc_tensor *s = d2 ? tc_reduce(TC_OP_SUM, d2, ndims, dims, keepdim) : NULL;
    double denom = (double)count - correction;
    tc_tensor *v = s ? tc_unary_s(TC_OP_MUL_SCALAR, s, denom > 0 ? 1.0 / denom : NAN, 0) : NULL;
    tc_tensor *tmp[] = {m, d, d2, s};
    for (int i = 0; i < 4; i++) tc_tensor_release(tmp[i]);
    return v;
}

tc_tensor *tc_std(tc_tensor *x, int ndims, const int *dims, double correction, bool keepdim) {
    tc_tensor *v = tc_var(x, ndims, dims, correction, keepdim);
    tc_tensor *s = v ? tc_unary(TC_OP_SQRT, v) : NULL;
    tc_tensor_release(v);
    return s;
}

tc_tensor *tc_norm(tc_tensor *x, double p, int ndims, const int *dims, bool keepdim) {
    tc_tensor *a = tc_unary(TC_OP_ABS, x), *r = NULL;
    if (!a) return NULL;
    if (isinf(p)) r = tc_reduce(p > 0 ? TC_OP_MAX : TC_OP_MIN, a, ndims, dims, keepdim);
    else if (p == 2) {
        tc_tensor *sq = tc_binary(TC_OP_MUL, x, x), *s = sq ? tc_reduce(TC_OP_SUM, sq, ndims, dims, keepdim) : NULL;
        r = s ? tc_unary(TC_OP_SQRT, s) : NULL;
        tc_tensor_release(sq);
        tc_tensor_release(s);
    } else if (p == 1) r = tc_reduce(TC_OP_SUM, a, ndims, dims, keepdim);
    else if (p > 0) {
        tc_tensor *ap = tc_unary_s(TC_OP_POW_SCALAR, a, p, 0);
        tc_tensor *s = ap ? tc_reduce(TC_OP_SUM, ap, ndims, dims, keepdim) : NULL;
        r = s ? tc_unary_s(TC_OP_POW_SCALAR, s, 1.0 / p, 0) : NULL;
        tc_tensor_release(ap);
        tc_tensor_release(s);
    } else tc_error("norm: p must be positive or inf (got %g)", p);
    tc_tensor_release(a);
    return r;
}

/* ---- along one dim: values and indices -------------------------------------------------- */
static int max_dim_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_edge *e = &n->next[0];
    int dim = (int)n->i[0];
    tc_tensor *idx = tc_saved(n, 0); /* keepdim-shaped indices */
    int64_t sh[TC_MAX_DIMS];
    memcpy(sh, e->shape, sizeof sh);
    sh[dim] = 1;
    tc_tensor *g = tc_reshape(gy, e->ndim, sh);
    tc_tensor *z = g ? tc_zeros(e->ndim, e->shape, gy->dtype, gy->storage->device) : NULL;
    gx[0] = z ? tc_scatter_add(z, dim, idx, g) : NULL;
    tc_tensor_release(g);
    tc_tensor_release(z);
    return gx[0] ? TC_OK : TC_ERR;
}

int tc_max_dim(tc_op op, tc_tensor *x, int dim, bool keepdim, tc_tensor **values, tc_tensor **indices) {
    const char *name = tc_op_name(op);
    *values = *indices = NULL;
    int d = tc_wrap_dim(dim, x->ndim, name);
    if (d < 0) return TC_ERR;
    if (x->ndim == 0) { /* a scalar is its own max, at position 1 */
        *values = tc_view(x, 0, NULL);
        *indices = tc_full(0, NULL, 1, TC_I64, x->storage->device);
        if (*values && *indices) return TC_OK;
        tc_tensor_release(*values);
        tc_tensor_release(*indices);
        *values = *indices = NULL;
        return TC_ERR;
    }
    if (x->shape[d] == 0) return tc_error("%s: cannot reduce over an empty dimension", name);
    bool mask[TC_MAX_DIMS] = {0};
    mask[d] = true;
    int nred, nkept;
    int64_t kept[TC_MAX_DIMS];
    tc_tensor *xp = reduced_last(x, mask, &nred, kept, &nkept);
    int64_t sh[TC_MAX_DIMS];
    memcpy(sh, x->shape, sizeof sh);
    sh[d] = 1;
    int ond = keepdim ? x->ndim : nkept;
    const int64_t *osh = keepdim ? sh : kept;
    tc_tensor *v = tc_empty(ond, osh, x->dtype, x->storage->device);
    tc_tensor *ix = tc_empty(ond, osh, TC_I64, x->storage->device);
    int rc = xp && v && ix ? tc_kern(x->storage->device)->arg_reduce(v, ix, xp, op) : TC_ERR;
    tc_tensor_release(xp);
    if (rc != TC_OK) { tc_tensor_release(v); tc_tensor_release(ix); return TC_ERR; }
    tc_node *n = tc_node_new(op, 1, &x, max_dim_backward);
    if (n) {
        n->i[0] = d;
        tc_tensor *ik = tc_tensor_make(ix->storage, TC_I64, x->ndim, sh, NULL, 0);
        tc_node_save(n, ik);
        tc_tensor_release(ik);
    }
    *values = tc_attach(v, n);
    *indices = ix;
    return TC_OK;
}

tc_tensor *tc_argmax(tc_op op, tc_tensor *x, int dim, bool keepdim) {
    tc_op vop = op == TC_OP_ARGMAX ? TC_OP_MAX : TC_OP_MIN;
    if (dim != TC_ALL_DIMS && tc_wrap_dim(dim, x->ndim, tc_op_name(op)) < 0) return NULL;
    if (dim == TC_ALL_DIMS) {
        int64_t n = tc_numel(x);
        tc_tensor *flat = tc_reshape(x, 1, &n);
        if (!flat) return NULL;
        tc_tensor *r = tc_argmax(op, flat, 0, false);
        tc_tensor_release(flat);
        return r;
    }
    bool prev = tc_set_grad_enabled(false);
    tc_tensor *v, *i;
    int rc = tc_max_dim(vop, x, dim, keepdim, &v, &i);
    tc_set_grad_enabled(prev);
    tc_tensor_release(v);
    return rc == TC_OK ? i : NULL;
}
