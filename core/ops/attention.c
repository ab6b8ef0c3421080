/* attention.c: scaled dot-product attention, softmax(q k^T * scale + mask) v, as one
 * autograd node. The kernel works one batch slice at a time (an [L, S] scores buffer, never
 * [batch, L, S]); forward saves q, k, v and each row's logsumexp, and the fused backward
 * recomputes the probabilities slice by slice. A row with nothing to attend (fully masked)
 * gives 0, and so does its gradient. */
#include "../internal.h"

#include <math.h>
#include <stdio.h>

/* x with the given (broadcast) shape: stride 0 where x has size 1 or lacks the dim */
static tc_tensor *broadcast_view(tc_tensor *x, int ndim, const int64_t *shape) {
    int64_t st[TC_MAX_DIMS];
    int lead = ndim - x->ndim;
    for (int i = 0; i < ndim; i++)
        st[i] = i < lead || x->shape[i - lead] != shape[i] ? 0 : x->stride[i - lead];
    return tc_tensor_make(x->storage, x->dtype, ndim, shape, st, x->offset);
}

/* x itself when its inner matrix has a unit stride in one dim (GEMM reads it), else a
 * contiguous copy; outside autograd either way */
static tc_tensor *gemm_ready(tc_tensor *x) {
    int64_t r = x->shape[x->ndim - 2], c = x->shape[x->ndim - 1];
    int64_t rs = x->stride[x->ndim - 2], cs = x->stride[x->ndim - 1];
    tc_tensor *a = tc_alias(x);
    if (!a || (cs == 1 && (r <= 1 || rs >= c)) || (rs == 1 && (c <= 1 || cs >= r))) return a;
    tc_tensor *cp = tc_contiguous(a);
    tc_tensor_release(a);
    return cp;
}

/* saved: q, k, v, mask views with the full batch dims, lse; d[0] = scale, d[1] = dropout p,
 * i[0] = causal, i[1], i[2] = dropout seed and offset. On CUDA for f16 and bf16, ctx holds an
 * alias of the output (cuDNN's backward reads it) and i[3] its storage's version: changed in
 * place since, it is not passed (the kernels then do without it) */
static tc_sdpa_params params_of(const tc_node *n) {
    tc_sdpa_params p = {n->d[0], n->d[1], n->i[0] != 0, (uint64_t)n->i[1], (uint64_t)n->i[2], NULL};
    const tc_tensor *out = (const tc_tensor *)n->ctx;
    if (out && (int64_t)out->storage->version == n->i[3]) p.out = out;
    return p;
}

static void release_out(void *out) { tc_tensor_release((tc_tensor *)out); }

static int sdpa_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *q = tc_saved(n, 0), *k = tc_saved(n, 1), *v = tc_saved(n, 2), *mask = tc_saved(n, 3);
    tc_tensor *lse = tc_saved(n, 4);
    tc_sdpa_params p = params_of(n);
    tc_tensor *gc = gy->dtype == q->dtype ? tc_tensor_retain(gy) : tc_to(gy, q->dtype, gy->storage->device);
    tc_tensor *g = gc ? gemm_ready(gc) : NULL, *r[4] = {NULL, NULL, NULL, NULL};
    tc_tensor_release(gc);
    const tc_tensor *like[4] = {q, k, v, mask};
    int rc = g ? TC_OK : TC_ERR;
    for (int i = 0; i < 4 && rc == TC_OK; i++)
        if (tc_needs_grad(n, i) && !(r[i] = tc_empty_like(like[i], like[i]->dtype))) rc = TC_ERR;
    if (rc == TC_OK) rc = tc_kern(q->storage->device)->sdpa_backward(r[0], r[1], r[2], r[3], g, q, k, v, mask, lse, &p);
    for (int i = 0; i < 4; i++) {
        if (rc == TC_OK) gx[i] = r[i]; /* the engine sums broadcast batch dims down */
        else tc_tensor_release(r[i]);
    }
    tc_tensor_release(g);
    return rc;
}

static int check_inputs(tc_tensor *q, tc_tensor *k, tc_tensor *v, tc_tensor *mask) {
    char a[128], b[128], c[128];
    tc_shape_str(q->ndim, q->shape, a, sizeof a);
    tc_shape_str(k->ndim, k->shape, b, sizeof b);
    tc_shape_str(v->ndim, v->shape, c, sizeof c);
    if (!tc_dtype_is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype)
        return tc_error("scaled_dot_product_attention: q, k and v must be floating point tensors of one dtype "
                        "(got %s, %s, %s)", tc_dtype_name(q->dtype), tc_dtype_name(k->dtype), tc_dtype_name(v->dtype));
    if (q->ndim < 2 || k->ndim < 2 || v->ndim < 2)
        return tc_error("scaled_dot_product_attention: q, k and v need at least 2 dims ([..., L, E]), got %s, %s, %s",
                        a, b, c);
    if (k->shape[k->ndim - 1] != q->shape[q->ndim - 1] || v->shape[v->ndim - 2] != k->shape[k->ndim - 2])
        return tc_error("scaled_dot_product_attention: q %s, k %s, v %s do not fit q [..., L, E], k [..., S, E], "
                        "v [..., S, Ev]", a, b, c);
    if (tc_check_same_device("scaled_dot_product_attention", q, k) != TC_OK ||
        tc_check_same_device("scaled_dot_product_attention", q, v) != TC_OK)
        return TC_ERR;
    if (mask && mask->dtype != TC_BOOL && !tc_dtype_is_float(mask->dtype))
        return tc_error("scaled_dot_product_attention: attn_mask must be bool (true attends) or float (added), got %s",
                        tc_dtype_name(mask->dtype));
    if (mask && tc_check_same_device("scaled_dot_product_attention", q, mask) != TC_OK) return TC_ERR;
    return TC_OK;
}

/* the output's batch dims: q's, k's, v's and the mask's broadcast together */
static int batch_shape(tc_tensor *q, tc_tensor *k, tc_tensor *v, tc_tensor *mask, int *nb, int64_t *batch) {
    const char *op = "scaled_dot_product_attention";
    int n1, n2;
    int64_t b1[TC_MAX_DIMS], b2[TC_MAX_DIMS];
    if (tc_broadcast_shape(q->ndim - 2, q->shape, k->ndim - 2, k->shape, &n1, b1, op) != TC_OK ||
        tc_broadcast_shape(n1, b1, v->ndim - 2, v->shape, &n2, b2, op) != TC_OK)
        return TC_ERR;
    if (!mask) {
        *nb = n2;
        memcpy(batch, b2, sizeof b2);
        return TC_OK;
    }
    int64_t full[TC_MAX_DIMS], L = q->shape[q->ndim - 2], S = k->shape[k->ndim - 2];
    memcpy(full, b2, sizeof b2);
    full[n2] = L;
    full[n2 + 1] = S;
    int nf;
    if (tc_broadcast_shape(n2 + 2, full, mask->ndim, mask->shape, &nf, batch, op) != TC_OK ||
        batch[nf - 2] != L || batch[nf - 1] != S) {
        char m[128];
        tc_shape_str(mask->ndim, mask->shape, m, sizeof m);
        return tc_error("%s: attn_mask %s does not broadcast to the scores [..., %lld, %lld]", op, m, (long long)L,
                        (long long)S);
    }
    *nb = nf - 2;
    return TC_OK;
}

static tc_tensor *sdpa(tc_tensor *q, tc_tensor *k, tc_tensor *v, tc_tensor *mask, bool is_causal, double dropout_p,
                      double scale) {
    if (check_inputs(q, k, v, mask) != TC_OK) return NULL;
    if (is_causal && mask) {
        tc_error("scaled_dot_product_attention: pass either attn_mask or is_causal, not both");
        return NULL;
    }
    if (!(dropout_p >= 0 && dropout_p <= 1)) {
        tc_error("scaled_dot_product_attention: dropout_p must be between 0 and 1 (got %g)", dropout_p);
        return NULL;
    }
    int nb = 0;
    int64_t batch[TC_MAX_DIMS];
    if (batch_shape(q, k, v, mask, &nb, batch) != TC_OK) return NULL;
    if (nb + 2 > TC_MAX_DIMS) {
        tc_error("scaled_dot_product_attention: too many batch dims (%d)", nb);
        return NULL;
    }
    int64_t L = q->shape[q->ndim - 2], S = k->shape[k->ndim - 2], E = q->shape[q->ndim - 1];
    int64_t Ev = v->shape[v->ndim - 1], B = tc_shape_numel(nb, batch);
    tc_sdpa_params p = {scale > 0 ? scale : 1 / sqrt((double)E), dropout_p, is_causal, 0, 0, NULL};
    if (dropout_p > 0) {
        tc_rng_get(&p.seed, &p.offset);
        p.offset = tc_rng_reserve(((uint64_t)(B * L * S) + 3) / 4);
    }
    /* views with the full batch dims; inner matrices GEMM-ready */
    int64_t sh[TC_MAX_DIMS];
    memcpy(sh, batch, sizeof sh);
    tc_tensor *src[4] = {q, k, v, mask}, *view[4] = {NULL, NULL, NULL, NULL};
    int64_t dims[4][2] = {{L, E}, {S, E}, {S, Ev}, {L, S}};
    int rc = TC_OK;
    for (int i = 0; i < 4 && rc == TC_OK; i++) {
        if (!src[i]) continue;
        tc_tensor *ready = i < 3 ? gemm_ready(src[i]) : tc_alias(src[i]);
        sh[nb] = dims[i][0];
        sh[nb + 1] = dims[i][1];
        view[i] = ready ? broadcast_view(ready, nb + 2, sh) : NULL;
        tc_tensor_release(ready);
        if (!view[i]) rc = TC_ERR;
    }
    sh[nb] = L;
    sh[nb + 1] = Ev;
    tc_device dev = q->storage->device;
    tc_tensor *out = rc == TC_OK ? tc_empty(nb + 2, sh, q->dtype, dev) : NULL;
    tc_tensor *lse = out ? tc_empty(nb + 1, sh, q->dtype == TC_F64 ? TC_F64 : TC_F32, dev) : NULL;
    rc = lse ? tc_kern(dev)->sdpa(out, lse, view[0], view[1], view[2], view[3], &p) : TC_ERR;
    tc_tensor *ins[4] = {q, k, v, mask && mask->dtype != TC_BOOL ? mask : NULL};
    tc_node *n = rc == TC_OK ? tc_node_new(TC_OP_SDPA, 4, ins, sdpa_backward) : NULL;
    if (n) {
        for (int i = 0; i < 4; i++) tc_node_save(n, view[i]);
        tc_node_save(n, lse);
        /* an alias: the output holds the node, which must not hold the output */
        if (dev.type == TC_CUDA && (q->dtype == TC_F16 || q->dtype == TC_BF16) && (n->ctx = tc_alias(out))) {
            n->free_ctx = release_out;
            n->i[3] = (int64_t)out->storage->version;
        }
        n->d[0] = p.scale;
        n->d[1] = p.dropout_p;
        n->i[0] = is_causal;
        n->i[1] = (int64_t)p.seed;
        n->i[2] = (int64_t)p.offset;
    }
    for (int i = 0; i < 4; i++) tc_tensor_release(view[i]);
    tc_tensor_release(lse);
    if (rc != TC_OK) { tc_tensor_release(out); return NULL; }
    return tc_attach(out, n);
}

/* under autocast: q, k and v in the scope's dtype (the mask as given) */
tc_tensor *tc_sdpa(tc_tensor *q, tc_tensor *k, tc_tensor *v, tc_tensor *mask, bool is_causal, double dropout_p,
                   double scale) {
    if (!tc_autocast_enabled()) return sdpa(q, k, v, mask, is_causal, dropout_p, scale);
    tc_tensor *c[3];
    if (tc_autocast_inputs(TC_CAST_LOWER, 3, (tc_tensor *[]){q, k, v}, c) != TC_OK) return NULL;
    tc_tensor *y = sdpa(c[0], c[1], c[2], mask, is_causal, dropout_p, scale);
    tc_autocast_release(3, c);
    return y;
}
