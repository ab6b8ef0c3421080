/* view.c: ops that return a new header over the same storage (view, reshape, transpose,
 * permute, narrow, select, expand, squeeze, unsqueeze, flatten), with their backward:
 * reshape back, permute back, or write into a zero tensor of the input's shape. */
#include "../internal.h"

#include <stdio.h>

/* ---- backward rules --------------------------------------------------------------- */
static int reshape_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    gx[0] = tc_reshape(gy, n->next[0].ndim, n->next[0].shape);
    return gx[0] ? TC_OK : TC_ERR;
}

/* expand: the engine sums the broadcast gradient down to the input's shape */
static int expand_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    (void)n;
    gx[0] = tc_tensor_retain(gy);
    return TC_OK;
}

static int permute_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    int inv[TC_MAX_DIMS];
    for (int i = 0; i < gy->ndim; i++) inv[n->i[i]] = i;
    gx[0] = tc_permute(gy, inv);
    return gx[0] ? TC_OK : TC_ERR;
}

/* narrow (i[0] = dim, i[1] = start) and select (i[2] = 1) scatter gy into zeros */
static int narrow_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_edge *e = &n->next[0];
    tc_tensor *z = tc_zeros(e->ndim, e->shape, gy->dtype, gy->storage->device);
    if (!z) return TC_ERR;
    int dim = (int)n->i[0];
    tc_tensor *part = n->i[2] ? tc_select(z, dim, n->i[1]) : tc_narrow(z, dim, n->i[1], gy->shape[dim]);
    int rc = part ? tc_copy_(part, gy) : TC_ERR;
    tc_tensor_release(part);
    if (rc != TC_OK) { tc_tensor_release(z); return TC_ERR; }
    gx[0] = z;
    return TC_OK;
}

/* ---- the one place a view is made ----------------------------------------------------- */
static tc_tensor *make_view(tc_tensor *x, int ndim, const int64_t *shape, const int64_t *stride,
                            int64_t offset, tc_op op, tc_backward_fn fn, const int64_t *params, int np) {
    tc_tensor *t = tc_tensor_make(x->storage, x->dtype, ndim, shape, stride, offset);
    if (!t) return NULL;
    t->is_view = true;
    tc_node *n = tc_node_new(op, 1, &x, fn);
    if (n)
        for (int i = 0; i < np; i++) n->i[i] = params[i];
    return tc_attach(t, n);
}

/* resolves one -1 and checks the element count */
static int infer_shape(const char *op, const tc_tensor *x, int ndim, const int64_t *in, int64_t *out) {
    int infer = -1;
    if (ndim > TC_MAX_DIMS) return tc_error("%s: at most %d dimensions", op, TC_MAX_DIMS);
    for (int i = 0; i < ndim; i++) {
        out[i] = in[i] == -1 ? 1 : in[i];
        if (in[i] == -1) {
            if (infer >= 0) return tc_error("%s: only one dimension can be -1", op);
            infer = i;
        } else if (in[i] < 0) return tc_error("%s: invalid size %lld", op, (long long)in[i]);
    }
    int64_t n = tc_numel(x), known = tc_checked_numel(ndim, out); /* the -1 counted as 1 */
    if (infer >= 0) {
        if (known <= 0 || n % known != 0) goto bad;
        out[infer] = n / known;
    } else if (known != n) goto bad;
    if (tc_checked_numel(ndim, out) < 0) goto bad;
    return TC_OK;
bad:;
    char a[128], b[128];
    tc_shape_str(x->ndim, x->shape, a, sizeof a);
    tc_shape_str(ndim, in, b, sizeof b);
    return tc_error("%s: shape %s is invalid for a tensor of shape %s (%lld elements)", op, b, a, (long long)n);
}

/* strides for viewing x as shape without a copy, or false (PyTorch's computeStride idea:
 * walk chunks of x's dims that are contiguous with each other) */
static bool view_strides(const tc_tensor *x, int ndim, const int64_t *shape, int64_t *stride) {
    if (tc_numel(x) == 0 || x->ndim == 0) {
        int64_t st = 1;
        for (int i = ndim - 1; i >= 0; i--) { stride[i] = st; st *= shape[i] ? shape[i] : 1; }
        return true;
    }
    int vd = ndim - 1;
    int64_t base = x->stride[x->ndim - 1], have = 1, want = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        have *= x->shape[d];
        bool chunk_ends = d == 0 || (x->shape[d - 1] != 1 && x->stride[d - 1] != have * base);
        if (!chunk_ends) continue;
        while (vd >= 0 && (want < have || shape[vd] == 1)) {
            stride[vd] = want * base;
            want *= shape[vd];
            vd--;
        }
        if (want != have) return false;
        if (d > 0) { base = x->stride[d - 1]; have = 1; want = 1; }
    }
    return vd == -1;
}

tc_tensor *tc_view(tc_tensor *x, int ndim, const int64_t *shape) {
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    if (infer_shape("view", x, ndim, shape, sh) != TC_OK) return NULL;
    if (!view_strides(x, ndim, sh, st)) {
        tc_error("view: the tensor's strides are incompatible with the new shape; use reshape()");
        return NULL;
    }
    return make_view(x, ndim, sh, st, x->offset, TC_OP_VIEW, reshape_backward, NULL, 0);
}

tc_tensor *tc_reshape(tc_tensor *x, int ndim, const int64_t *shape) {
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    if (infer_shape("reshape", x, ndim, shape, sh) != TC_OK) return NULL;
    if (view_strides(x, ndim, sh, st))
        return make_view(x, ndim, sh, st, x->offset, TC_OP_VIEW, reshape_backward, NULL, 0);
    tc_tensor *c = tc_contiguous(x);
    if (!c) return NULL;
    tc_tensor *v = tc_view(c, ndim, sh);
    tc_tensor_release(c);
    return v;
}

tc_tensor *tc_permute(tc_tensor *x, const int *perm) {
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS], p[TC_MAX_DIMS];
    bool seen[TC_MAX_DIMS] = {0};
    for (int i = 0; i < x->ndim; i++) {
        int d = tc_wrap_dim(perm[i], x->ndim, "permute");
        if (d < 0) return NULL;
        if (seen[d]) { tc_error("permute: dimension %d repeated", d + 1); return NULL; }
        seen[d] = true;
        sh[i] = x->shape[d];
        st[i] = x->stride[d];
        p[i] = d;
    }
    return make_view(x, x->ndim, sh, st, x->offset, TC_OP_PERMUTE, permute_backward, p, x->ndim);
}

tc_tensor *tc_transpose(tc_tensor *x, int d0, int d1) {
    int a = tc_wrap_dim(d0, x->ndim, "transpose"), b = a < 0 ? a : tc_wrap_dim(d1, x->ndim, "transpose");
    if (a < 0 || b < 0) return NULL;
    int perm[TC_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return tc_permute(x, perm);
}

tc_tensor *tc_narrow(tc_tensor *x, int dim, int64_t start, int64_t length) {
    int d = tc_wrap_dim(dim, x->ndim, "narrow");
    if (d < 0) return NULL;
    if (x->ndim == 0) { tc_error("narrow: cannot narrow a 0-d tensor"); return NULL; }
    if (start < 0 || length < 0 || start + length > x->shape[d]) {
        tc_error("narrow: range [%lld, %lld] out of bounds for dimension %d of size %lld",
                 (long long)start + 1, (long long)(start + length), d + 1, (long long)x->shape[d]);
        return NULL;
    }
    int64_t sh[TC_MAX_DIMS];
    memcpy(sh, x->shape, sizeof sh);
    sh[d] = length;
    int64_t p[3] = {d, start, 0};
    return make_view(x, x->ndim, sh, x->stride, x->offset + start * x->stride[d], TC_OP_NARROW,
                     narrow_backward, p, 3);
}

tc_tensor *tc_select(tc_tensor *x, int dim, int64_t index) {
    if (x->ndim == 0) { tc_error("select: cannot index a 0-d tensor"); return NULL; }
    int d = tc_wrap_dim(dim, x->ndim, "select");
    if (d < 0) return NULL;
    if (index < 0 || index >= x->shape[d]) {
        tc_error("select: index %lld out of range for dimension %d of size %lld", (long long)index + 1, d + 1,
                 (long long)x->shape[d]);
        return NULL;
    }
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    for (int i = 0, j = 0; i < x->ndim; i++)
        if (i != d) { sh[j] = x->shape[i]; st[j++] = x->stride[i]; }
    int64_t p[3] = {d, index, 1};
    return make_view(x, x->ndim - 1, sh, st, x->offset + index * x->stride[d], TC_OP_SELECT,
                     narrow_backward, p, 3);
}

tc_tensor *tc_expand(tc_tensor *x, int ndim, const int64_t *shape) {
    if (ndim < x->ndim || ndim > TC_MAX_DIMS) {
        tc_error("expand: cannot expand a %d-d tensor to %d dimensions", x->ndim, ndim);
        return NULL;
    }
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    int lead = ndim - x->ndim;
    for (int i = 0; i < ndim; i++) {
        int64_t have = i < lead ? 1 : x->shape[i - lead], want = shape[i];
        if (want == -1) {
            if (i < lead) { tc_error("expand: -1 is not allowed for a new leading dimension"); return NULL; }
            want = have;
        }
        if (want < 0) { tc_error("expand: invalid size %lld", (long long)want); return NULL; }
        if (have != want && have != 1) {
            char a[128], b[128];
            tc_shape_str(x->ndim, x->shape, a, sizeof a);
            tc_shape_str(ndim, shape, b, sizeof b);
            tc_error("expand: cannot expand %s to %s (dimension %d)", a, b, i + 1);
            return NULL;
        }
        sh[i] = want;
        st[i] = i < lead || have != want ? 0 : x->stride[i - lead];
    }
    if (tc_checked_numel(ndim, sh) < 0) {
        char b[160];
        tc_shape_str(ndim, sh, b, sizeof b);
        tc_error("expand: a tensor of shape %s is too large", b);
        return NULL;
    }
    return make_view(x, ndim, sh, st, x->offset, TC_OP_EXPAND, expand_backward, NULL, 0);
}

tc_tensor *tc_squeeze(tc_tensor *x, int dim) {
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    int d = dim == TC_ALL_DIMS ? -1 : tc_wrap_dim(dim, x->ndim, "squeeze");
    if (dim != TC_ALL_DIMS && d < 0) return NULL;
    int n = 0;
    for (int i = 0; i < x->ndim; i++)
        if (!(x->shape[i] == 1 && (d < 0 || d == i))) { sh[n] = x->shape[i]; st[n++] = x->stride[i]; }
    return make_view(x, n, sh, st, x->offset, TC_OP_VIEW, reshape_backward, NULL, 0);
}

tc_tensor *tc_unsqueeze(tc_tensor *x, int dim) {
    if (x->ndim >= TC_MAX_DIMS) { tc_error("unsqueeze: at most %d dimensions", TC_MAX_DIMS); return NULL; }
    int d = tc_wrap_dim(dim, x->ndim + 1, "unsqueeze");
    if (d < 0) return NULL;
    int64_t sh[TC_MAX_DIMS], st[TC_MAX_DIMS];
    for (int i = 0, j = 0; i <= x->ndim; i++) {
        if (i == d) {
            sh[i] = 1;
            st[i] = i < x->ndim ? x->shape[j] * x->stride[j] : 1;
        } else { sh[i] = x->shape[j]; st[i] = x->stride[j]; j++; }
    }
    return make_view(x, x->ndim + 1, sh, st, x->offset, TC_OP_VIEW, reshape_backward, NULL, 0);
}

tc_tensor *tc_flatten(tc_tensor *x, int start, int end) {
    if (x->ndim == 0) { int64_t one = 1; return tc_reshape(x, 1, &one); }
    int s = tc_wrap_dim(start, x->ndim, "flatten"), e = s < 0 ? s : tc_wrap_dim(end, x->ndim, "flatten");
    if (s < 0 || e < 0) return NULL;
    if (s > e) { tc_error("flatten: start dimension after end dimension"); return NULL; }
    int64_t sh[TC_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i <= s || i > e) sh[n++] = x->shape[i];
        else sh[n - 1] *= x->shape[i];
    }
    return tc_reshape(x, n, sh);
}
