/* matmul.c: bmm is the primitive (3-D, one GEMM per batch through the kernel table);
 * matmul, linear and outer reshape and broadcast around it with views, so their
 * gradients come from bmm's rule: ga = gy @ b^T, gb = a^T @ gy. */
#include "../internal.h"

#include <stdio.h>

/* Can BLAS read each inner matrix of x [B, R, C] in place? It needs one unit stride (a size-1
 * dim's stride is free) and the other at least as large as the unit-stride dim's size, which
 * rules out the stride-0 rows of an expanded matrix. */
static bool blas_readable(const tc_tensor *x) {
    int64_t r = x->shape[1], c = x->shape[2], rs = x->stride[1], cs = x->stride[2];
    bool row_major = (cs == 1 || c == 1) && (r == 1 || rs >= c);
    bool col_major = (rs == 1 || r == 1) && (c == 1 || cs >= r);
    return row_major || col_major;
}

/* x itself when BLAS can read it, else a contiguous copy */
static tc_tensor *gemm_ready(tc_tensor *x) {
    return blas_readable(x) ? tc_tensor_retain(x) : tc_contiguous(x);
}

static int bmm_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *a = tc_saved(n, 0), *b = tc_saved(n, 1);
    if (tc_needs_grad(n, 0)) {
        tc_tensor *bt = tc_transpose(b, 1, 2);
        gx[0] = bt ? tc_bmm(gy, bt) : NULL;
        tc_tensor_release(bt);
        if (!gx[0]) return TC_ERR;
    }
    if (tc_needs_grad(n, 1)) {
        tc_tensor *at = tc_transpose(a, 1, 2);
        gx[1] = at ? tc_bmm(at, gy) : NULL;
        tc_tensor_release(at);
        if (!gx[1]) return TC_ERR;
    }
    return TC_OK;
}

static tc_tensor *size_mismatch(const char *op, tc_tensor *a, tc_tensor *b) {
    char x[128], y[128];
    tc_shape_str(a->ndim, a->shape, x, sizeof x);
    tc_shape_str(b->ndim, b->shape, y, sizeof y);
    tc_error("%s: size mismatch %s @ %s", op, x, y);
    return NULL;
}

/* operands of one float dtype, on one device */
static int check_operands(const char *op, tc_tensor *a, tc_tensor *b) {
    if (a->dtype != b->dtype || !tc_dtype_is_float(a->dtype))
        return tc_error("%s: expected floating point tensors of one dtype, got %s and %s", op,
                        tc_dtype_name(a->dtype), tc_dtype_name(b->dtype));
    return tc_check_same_device(op, a, b);
}

static tc_tensor *bmm(tc_tensor *a, tc_tensor *b) {
    if (a->ndim != 3 || b->ndim != 3) {
        tc_error("bmm: expected 3-d tensors, got %d-d and %d-d", a->ndim, b->ndim);
        return NULL;
    }
    if (a->shape[0] != b->shape[0] || a->shape[2] != b->shape[1]) return size_mismatch("bmm", a, b);
    if (check_operands("bmm", a, b) != TC_OK) return NULL;
    int64_t sh[3] = {a->shape[0], a->shape[1], b->shape[2]};
    tc_tensor *ar = gemm_ready(a), *br = gemm_ready(b);
    tc_tensor *out = ar && br ? tc_empty(3, sh, a->dtype, a->storage->device) : NULL;
    int rc = out ? tc_kern(a->storage->device)->gemm(out, ar, br, 1.0, 0.0) : TC_ERR;
    tc_tensor *ins[2] = {a, b};
    tc_node *n = rc == TC_OK ? tc_node_new(TC_OP_MATMUL, 2, ins, bmm_backward) : NULL;
    if (n) {
        tc_node_save(n, tc_needs_grad(n, 1) ? ar : NULL);
        tc_node_save(n, tc_needs_grad(n, 0) ? br : NULL);
    }
    tc_tensor_release(ar);
    tc_tensor_release(br);
    if (rc != TC_OK) { tc_tensor_release(out); return NULL; }
    return tc_attach(out, n);
}

/* under autocast, op(a, b) on a and b cast to the scope's dtype */
static tc_tensor *lowered2(tc_tensor *(*op)(tc_tensor *, tc_tensor *), tc_tensor *a, tc_tensor *b) {
    if (!tc_autocast_enabled()) return op(a, b);
    tc_tensor *in[2] = {a, b}, *c[2];
    if (tc_autocast_inputs(TC_CAST_LOWER, 2, in, c) != TC_OK) return NULL;
    tc_tensor *y = op(c[0], c[1]);
    tc_autocast_release(2, c);
    return y;
}

tc_tensor *tc_bmm(tc_tensor *a, tc_tensor *b) { return lowered2(bmm, a, b); }

/* the general case: promote 1-d operands, broadcast batch dims, fold into one bmm */
static tc_tensor *matmul(tc_tensor *a, tc_tensor *b) {
    if (a->ndim == 0 || b->ndim == 0) {
        tc_error("matmul: both arguments need at least 1 dimension (got %d-d and %d-d)", a->ndim, b->ndim);
        return NULL;
    }
    int64_t ka = a->shape[a->ndim - 1], kb = b->shape[b->ndim >= 2 ? b->ndim - 2 : 0];
    if (ka != kb) return size_mismatch("matmul", a, b);
    if (check_operands("matmul", a, b) != TC_OK) return NULL;
    tc_tensor *a2 = a->ndim == 1 ? tc_unsqueeze(a, 0) : tc_tensor_retain(a);
    tc_tensor *b2 = b->ndim == 1 ? tc_unsqueeze(b, 1) : tc_tensor_retain(b);
    tc_tensor *out = NULL, *a3 = NULL, *b3 = NULL, *y = NULL;
    if (!a2 || !b2) goto done;
    int64_t m = a2->shape[a2->ndim - 2], k = ka, n = b2->shape[b2->ndim - 1];
    int nbatch;
    int64_t batch[TC_MAX_DIMS];
    if (tc_broadcast_shape(a2->ndim - 2, a2->shape, b2->ndim - 2, b2->shape, &nbatch, batch, "matmul") != TC_OK)
        goto done;
    int64_t nb = tc_shape_numel(nbatch, batch);
    if (b2->ndim == 2) { /* fold a's batch into rows: one large GEMM (the linear-layer case) */
        int64_t s3[3] = {1, nb * m, k};
        a3 = tc_reshape(a2, 3, s3);
        b3 = tc_unsqueeze(b2, 0);
    } else {
        int64_t ea[TC_MAX_DIMS], eb[TC_MAX_DIMS];
        memcpy(ea, batch, sizeof batch);
        memcpy(eb, batch, sizeof batch);
        ea[nbatch] = m; ea[nbatch + 1] = k;
        eb[nbatch] = k; eb[nbatch + 1] = n;
        tc_tensor *xa = tc_expand(a2, nbatch + 2, ea), *xb = tc_expand(b2, nbatch + 2, eb);
        int64_t sa[3] = {nb, m, k}, sb[3] = {nb, k, n};
        a3 = xa ? tc_reshape(xa, 3, sa) : NULL;
        b3 = xb ? tc_reshape(xb, 3, sb) : NULL;
        tc_tensor_release(xa);
        tc_tensor_release(xb);
    }
    if (!a3 || !b3 || !(y = tc_bmm(a3, b3))) goto done;
    int64_t osh[TC_MAX_DIMS];
    int ond = 0;
    for (int i = 0; i < nbatch; i++) osh[ond++] = batch[i];
    if (a->ndim > 1) osh[ond++] = m;
    if (b->ndim > 1) osh[ond++] = n;
    out = tc_reshape(y, ond, osh);
done:
    tc_tensor_release(a2);
    tc_tensor_release(b2);
    tc_tensor_release(a3);
    tc_tensor_release(b3);
    tc_tensor_release(y);
    return out;
}

tc_tensor *tc_matmul(tc_tensor *a, tc_tensor *b) { return lowered2(matmul, a, b); }

/* ---- linear with a bias on the CPU: one GEMM onto rows that start as the bias (no separate
 * pass adding it, no zeroing of the output). y [R, O] = x [R, K] @ w^T + b over the R rows of
 * x's leading dims; gx = gy @ w, gw = gy^T @ x, gb = the column sums of gy. */
static int linear_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *x3 = tc_saved(n, 0), *w = tc_saved(n, 1);
    int64_t O = gy->shape[gy->ndim - 1], R = tc_numel(gy) / (O > 0 ? O : 1), s2[2] = {R, O};
    tc_tensor *g2 = tc_reshape(gy, 2, s2);
    if (!g2) return TC_ERR;
    int rc = TC_OK;
    if (tc_needs_grad(n, 0)) {
        tc_tensor *g = tc_matmul(g2, w); /* [R, K], then x's shape */
        int64_t sh[TC_MAX_DIMS];
        int nd = n->next[0].ndim;
        memcpy(sh, n->next[0].shape, sizeof(int64_t) * (size_t)nd);
        gx[0] = g ? tc_reshape(g, nd, sh) : NULL;
        tc_tensor_release(g);
        if (!gx[0]) rc = TC_ERR;
    }
    if (rc == TC_OK && tc_needs_grad(n, 1)) {
        int64_t xs[2] = {R, x3->shape[2]};
        tc_tensor *gt = tc_transpose(g2, 0, 1), *x2 = tc_reshape(x3, 2, xs);
        gx[1] = gt && x2 ? tc_matmul(gt, x2) : NULL;
        tc_tensor_release(gt);
        tc_tensor_release(x2);
        if (!gx[1]) rc = TC_ERR;
    }
    if (rc == TC_OK && tc_needs_grad(n, 2)) {
        int dims[1] = {0};
        if (!(gx[2] = tc_reduce(TC_OP_SUM, g2, 1, dims, false))) rc = TC_ERR;
    }
    tc_tensor_release(g2);
    return rc;
}

/* y [1, R, O] = x3 [1, R, K] @ w3 [1, K, O] + b, computed into y (contiguous) */
static int linear_gemm(tc_tensor *y, tc_tensor *x3, tc_tensor *w3, tc_tensor *b) {
    int64_t bst[3] = {0, 0, b->stride[0]};
    const tc_kernels *k = tc_kern(y->storage->device);
    /* the rows of y start as b (a stride-0 view of it); the GEMM adds x @ w^T onto them */
    tc_tensor *brow = tc_tensor_make(b->storage, b->dtype, 3, y->shape, bst, b->offset);
    int rc = brow ? k->copy(y, brow) : TC_ERR;
    if (rc == TC_OK) rc = k->gemm(y, x3, w3, 1.0, 1.0);
    tc_tensor_release(brow);
    return rc;
}

static tc_tensor *linear_bias(tc_tensor *x, tc_tensor *w, tc_tensor *b) {
    int64_t K = w->shape[1], O = w->shape[0], R = 1;
    for (int i = 0; i < x->ndim - 1; i++) R *= x->shape[i];
    int64_t s2[2] = {R, K}, ys[3] = {1, R, O}, osh[TC_MAX_DIMS];
    tc_tensor *x2 = tc_reshape(x, 2, s2), *wt = tc_transpose(w, 0, 1);
    tc_tensor *x3 = x2 ? tc_unsqueeze(x2, 0) : NULL, *w3 = wt ? tc_unsqueeze(wt, 0) : NULL;
    tc_tensor *xr = x3 ? gemm_ready(x3) : NULL, *wr = w3 ? gemm_ready(w3) : NULL;
    memcpy(osh, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    osh[x->ndim - 1] = O;
    tc_tensor *out = xr && wr ? tc_empty(x->ndim, osh, x->dtype, x->storage->device) : NULL;
    tc_tensor *y = out ? tc_view(out, 3, ys) : NULL;
    if (y && linear_gemm(y, xr, wr, b) == TC_OK) {
        tc_tensor *ins[3] = {x, w, b};
        tc_node *n = tc_node_new(TC_OP_LINEAR, 3, ins, linear_backward);
        if (n) { /* x as read ([1, R, K]), w as given */
            tc_node_save(n, tc_needs_grad(n, 1) ? xr : NULL);
            tc_node_save(n, tc_needs_grad(n, 0) ? w : NULL);
        }
        tc_attach(out, n);
    } else {
        tc_tensor_release(out);
        out = NULL;
    }
    tc_tensor *tmp[7] = {x2, wt, x3, w3, xr, wr, y};
    for (int i = 0; i < 7; i++) tc_tensor_release(tmp[i]);
    return out;
}

static tc_tensor *linear(tc_tensor *x, tc_tensor *w, tc_tensor *b) {
    if (w->ndim != 2) { tc_error("linear: weight must be 2-d [out, in], got %d-d", w->ndim); return NULL; }
    if (x->ndim == 0 || x->shape[x->ndim - 1] != w->shape[1]) return size_mismatch("linear", x, w);
    if (b && (b->ndim > 1 || (b->ndim == 1 && b->shape[0] != w->shape[0]))) {
        char sb[128], sw[128];
        tc_shape_str(b->ndim, b->shape, sb, sizeof sb);
        tc_shape_str(w->ndim, w->shape, sw, sizeof sw);
        tc_error("linear: bias of shape %s does not match weight of shape %s", sb, sw);
        return NULL;
    }
    if (b && b->ndim == 1 && x->storage->device.type == TC_CPU && check_operands("linear", x, w) == TC_OK &&
        check_operands("linear", x, b) == TC_OK && !tc_autocast_enabled())
        return linear_bias(x, w, b);
    tc_tensor *wt = tc_transpose(w, 0, 1);
    tc_tensor *y = wt ? tc_matmul(x, wt) : NULL;
    tc_tensor_release(wt);
    if (!y || !b) return y;
    tc_tensor *r = tc_binary(TC_OP_ADD, y, b);
    tc_tensor_release(y);
    return r;
}

/* under autocast the bias is cast too, so the output stays in the scope's dtype */
tc_tensor *tc_linear(tc_tensor *x, tc_tensor *w, tc_tensor *b) {
    if (!tc_autocast_enabled()) return linear(x, w, b);
    tc_tensor *in[3] = {x, w, b}, *c[3];
    if (tc_autocast_inputs(TC_CAST_LOWER, 3, in, c) != TC_OK) return NULL;
    tc_tensor *y = linear(c[0], c[1], c[2]);
    tc_autocast_release(3, c);
    return y;
}

tc_tensor *tc_outer(tc_tensor *a, tc_tensor *b) {
    if (a->ndim != 1 || b->ndim != 1) {
        tc_error("outer: expected 1-d tensors, got %d-d and %d-d", a->ndim, b->ndim);
        return NULL;
    }
    tc_tensor *ac = tc_unsqueeze(a, 1), *bc = tc_unsqueeze(b, 0);
    tc_tensor *r = ac && bc ? tc_binary(TC_OP_MUL, ac, bc) : NULL;
    tc_tensor_release(ac);
    tc_tensor_release(bc);
    return r;
}
