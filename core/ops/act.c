/* act.c: bias + activation and GEGLU as single ops: act(x + b) over x's last dim, and
 * (x1 + b1) act(x2 + b2) on the two halves of it. Each reads its input once and writes its
 * output once; the node saves x and b (not the activation's input, which the backward
 * recomputes) and the backward kernel gives gx and gb in one pass. */
#include "../internal.h"
#include "../unary.h"

/* the activations bias_act and geglu take: core/unary.h's TC_FUSED_ACTS */
#define KNOWN_(OP) case TC_OP_##OP:
static bool act_known(tc_op act) {
    switch (act) {
    TC_FUSED_ACTS(KNOWN_) return true;
    default: return false;
    }
}
#undef KNOWN_

/* x as a contiguous [M, K] alias (no autograd) */
static tc_tensor *rows_of(tc_tensor *x) {
    int64_t K = x->shape[x->ndim - 1], s[2] = {K ? tc_numel(x) / K : 0, K};
    tc_tensor *a = tc_alias(x), *r = a ? tc_reshape(a, 2, s) : NULL, *c = r ? tc_contiguous(r) : NULL;
    tc_tensor_release(a);
    tc_tensor_release(r);
    return c;
}

/* saved: x [M, K] and b (or NULL); i[0] = act, i[1] = glu. gx comes back in x's shape */
static int bias_act_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *x = tc_saved(n, 0), *b = tc_saved(n, 1);
    tc_op act = (tc_op)n->i[0];
    bool glu = n->i[1] != 0;
    int64_t gs[2] = {x->shape[0], glu ? x->shape[1] / 2 : x->shape[1]};
    tc_tensor *ga = tc_alias(gy), *g2 = ga ? tc_reshape(ga, 2, gs) : NULL, *g = g2 ? tc_contiguous(g2) : NULL;
    tc_tensor *g_in = g && g->dtype != x->dtype ? tc_to(g, x->dtype, x->storage->device) : (g ? tc_tensor_retain(g) : NULL);
    tc_tensor *rx = g_in ? tc_empty_like(x, x->dtype) : NULL;
    tc_tensor *rb = rx && b && tc_needs_grad(n, 1) ? tc_empty_like(b, b->dtype) : NULL;
    int rc = rx && (rb || !b || !tc_needs_grad(n, 1)) ? TC_OK : TC_ERR;
    if (rc == TC_OK) rc = tc_kern(x->storage->device)->bias_act_backward(rx, rb, g_in, x, b, act, glu);
    if (rc == TC_OK && tc_needs_grad(n, 0) && !(gx[0] = tc_reshape(rx, n->next[0].ndim, n->next[0].shape))) rc = TC_ERR;
    if (rc == TC_OK && rb) gx[1] = tc_tensor_retain(rb);
    tc_tensor *tmp[] = {ga, g2, g, g_in, rx, rb};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) tc_tensor_release(tmp[i]);
    return rc;
}

tc_tensor *tc_bias_act(tc_tensor *x, tc_tensor *b, tc_op act, bool glu) {
    const char *what = glu ? "geglu" : "bias_act";
    if (!act_known(act))
        return tc_error("%s: %s is not an activation it fuses (relu, silu, gelu, gelu_tanh, quick_gelu, sigmoid, "
                        "tanh)", what, tc_op_name(act)), NULL;
    if (!tc_dtype_is_float(x->dtype))
        return tc_error("%s: input must be a floating point tensor (got %s)", what, tc_dtype_name(x->dtype)), NULL;
    if (x->ndim == 0) return tc_error("%s: input must have at least 1 dimension", what), NULL;
    int64_t K = x->shape[x->ndim - 1];
    char sx[128];
    tc_shape_str(x->ndim, x->shape, sx, sizeof sx);
    if (glu && K % 2 != 0)
        return tc_error("geglu: the last dim must split in two halves, got %s", sx), NULL;
    if (b) {
        if (tc_check_same_device(what, x, b) != TC_OK) return NULL;
        if (b->ndim != 1 || b->shape[0] != K) {
            char sb[128];
            tc_shape_str(b->ndim, b->shape, sb, sizeof sb);
            return tc_error("%s: bias of shape %s does not match the input's last dim (input %s)", what, sb, sx), NULL;
        }
        if (b->dtype != x->dtype && !tc_autocast_enabled())
            return tc_error("%s: bias dtype %s differs from the input's %s", what, tc_dtype_name(b->dtype),
                            tc_dtype_name(x->dtype)), NULL;
    }
    /* under autocast the bias follows x, as linear's bias follows its output */
    tc_tensor *bc = b && b->dtype != x->dtype ? tc_to(b, x->dtype, x->storage->device) : (b ? tc_tensor_retain(b) : NULL);
    tc_tensor *xr = (bc || !b) ? rows_of(x) : NULL, *bk = bc ? tc_alias(bc) : NULL, *bv = bk ? tc_contiguous(bk) : NULL;
    tc_tensor *y = NULL, *out = NULL;
    if (xr && (bv || !b)) {
        int64_t ys[2] = {xr->shape[0], glu ? K / 2 : K};
        y = tc_empty(2, ys, x->dtype, x->storage->device);
    }
    if (y && tc_kern(x->storage->device)->bias_act(y, xr, bv, act, glu) == TC_OK) {
        int64_t osh[TC_MAX_DIMS];
        memcpy(osh, x->shape, sizeof(int64_t) * (size_t)x->ndim);
        osh[x->ndim - 1] = glu ? K / 2 : K;
        out = tc_reshape(y, x->ndim, osh);
    }
    tc_tensor *ins[2] = {x, bc};
    tc_node *n = out ? tc_node_new(glu ? TC_OP_GEGLU : TC_OP_BIAS_ACT, 2, ins, bias_act_backward) : NULL;
    if (n) {
        tc_node_save(n, xr);
        tc_node_save(n, bv);
        n->i[0] = act;
        n->i[1] = glu;
    }
    tc_tensor *tmp[] = {bc, xr, bk, bv, y};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) tc_tensor_release(tmp[i]);
    return out ? tc_attach(out, n) : NULL;
}
