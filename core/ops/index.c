/* index.c: the indexing ops (index_select, gather, scatter_add, masked_fill, cat, stack,
 * embedding), each next to its derivative, and the in-place masked_fill_ and scatter_add_.
 * Index values are 1-based; the kernels check them and these ops put their name in front. */
#include "../internal.h"

#include <math.h>
#include <stdio.h>

/* ---- shared checks ------------------------------------------------------------------------ */
static int check_index(const char *op, tc_tensor *x, tc_tensor *idx) {
    if (idx->dtype != TC_I64 && idx->dtype != TC_I32)
        return tc_error("%s: index must be an i64 or i32 tensor (got %s)", op, tc_dtype_name(idx->dtype));
    return tc_check_same_device(op, x, idx);
}

/* a kernel's failure (an index out of range) with the op's name in front */
static int kernel_error(const char *op) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tc_last_error());
    return tc_error("%s: %s", op, msg);
}

static const tc_kernels *kern_of(const tc_tensor *t) { return tc_kern(t->storage->device); }

/* a header over t's storage (no copy, no autograd) */
static tc_tensor *header(const tc_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset) {
    return tc_tensor_make(t->storage, t->dtype, ndim, shape, stride, offset);
}

/* An in-place op under autograd takes the out-of-place result's history, as tc_binary_
 * does; r is that result (consumed). Its node saves no alias of x, so bumping x's version
 * invalidates nothing the new history needs. */
static int adopt(tc_tensor *x, tc_tensor *r, const char *op) {
    if (!r) return TC_ERR;
    int rc = TC_OK;
    if (x->is_view && r->requires_grad)
        rc = tc_error("%s: in-place operation on a view of a tensor under autograd is not supported; "
                      "use the out-of-place op", op);
    if (rc == TC_OK) rc = tc_check_inplace(x, op);
    if (rc == TC_OK) rc = kern_of(x)->copy(x, r);
    if (rc == TC_OK && r->requires_grad) {
        tc_node_retain(r->grad_fn);
        tc_attach(x, r->grad_fn);
    }
    tc_tensor_release(r);
    return rc;
}

/* ---- index_select: x with dim narrowed to index's entries; backward: index_add ---------- */
static int index_select_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_edge *e = &n->next[0];
    tc_tensor *g = tc_zeros(e->ndim, e->shape, gy->dtype, gy->storage->device);
    if (!g || kern_of(gy)->index_add(g, (int)n->i[0], tc_saved(n, 0), gy) != TC_OK) {
        tc_tensor_release(g);
        return TC_ERR;
    }
    gx[0] = g;
    return TC_OK;
}

tc_tensor *tc_index_select(tc_tensor *x, int dim, tc_tensor *index) {
    if (check_index("index_select", x, index) != TC_OK) return NULL;
    if (index->ndim > 1) {
        char s[128];
        tc_shape_str(index->ndim, index->shape, s, sizeof s);
        tc_error("index_select: index must be 1-d (got shape %s)", s);
        return NULL;
    }
    if (x->ndim == 0) { tc_error("index_select: x must have at least one dimension"); return NULL; }
    int d = tc_wrap_dim(dim, x->ndim, "index_select");
    if (d < 0) return NULL;
    int64_t sh[TC_MAX_DIMS];
    memcpy(sh, x->shape, sizeof sh);
    sh[d] = tc_numel(index);
    tc_tensor *out = tc_empty(x->ndim, sh, x->dtype, x->storage->device);
    if (!out) return NULL;
    if (kern_of(x)->index_select(out, x, d, index) != TC_OK) {
        tc_tensor_release(out);
        kernel_error("index_select");
        return NULL;
    }
    tc_node *n = tc_node_new(TC_OP_INDEX_SELECT, 1, &x, index_select_backward);
    if (n) {
        n->i[0] = d;
        tc_node_save(n, index);
    }
    return tc_attach(out, n);
}

/* ---- gather: out[p] = x[p with index[p] at dim]; backward: scatter_add into zeros -------- */
static int gather_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_edge *e = &n->next[0];
    tc_tensor *g = tc_zeros(e->ndim, e->shape, gy->dtype, gy->storage->device);
    if (!g || kern_of(gy)->scatter_add(g, (int)n->i[0], tc_saved(n, 0), gy) != TC_OK) {
        tc_tensor_release(g);
        return TC_ERR;
    }
    gx[0] = g;
    return TC_OK;
}

/* index has x's rank and fits in `big` in every dim (but dim, unless all_dims) */
static int check_fits(const char *op, const char *what, tc_tensor *index, tc_tensor *big, int dim, bool all_dims) {
    char a[128], b[128];
    tc_shape_str(index->ndim, index->shape, a, sizeof a);
    tc_shape_str(big->ndim, big->shape, b, sizeof b);
    if (index->ndim != big->ndim)
        return tc_error("%s: index of shape %s must have as many dimensions as %s of shape %s", op, a, what, b);
    for (int i = 0; i < index->ndim; i++)
        if ((all_dims || i != dim) && index->shape[i] > big->shape[i])
            return tc_error("%s: index of shape %s is larger than %s of shape %s in dimension %d", op, a, what, b, i + 1);
    return TC_OK;
}

tc_tensor *tc_gather(tc_tensor *x, int dim, tc_tensor *index) {
    if (check_index("gather", x, index) != TC_OK) return NULL;
    if (x->ndim == 0) { tc_error("gather: x must have at least one dimension"); return NULL; }
    int d = tc_wrap_dim(dim, x->ndim, "gather");
    if (d < 0 || check_fits("gather", "x", index, x, d, false) != TC_OK) return NULL;
    tc_tensor *out = tc_empty(index->ndim, index->shape, x->dtype, x->storage->device);
    if (!out) return NULL;
    if (kern_of(x)->gather(out, x, d, index) != TC_OK) {
        tc_tensor_release(out);
        kernel_error("gather");
        return NULL;
    }
    tc_node *n = tc_node_new(TC_OP_GATHER, 1, &x, gather_backward);
    if (n) {
        n->i[0] = d;
        tc_node_save(n, index);
    }
    return tc_attach(out, n);
}

/* ---- scatter_add: x + src added at index's positions; backward: gy, gather(gy) ---------- */
static int scatter_add_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    if (tc_needs_grad(n, 0)) gx[0] = tc_tensor_retain(gy);
    if (!tc_needs_grad(n, 1)) return TC_OK;
    tc_tensor *idx = tc_saved(n, 0);
    tc_edge *e = &n->next[1];
    int dim = (int)n->i[0];
    tc_tensor *g = tc_empty(idx->ndim, idx->shape, gy->dtype, gy->storage->device);
    if (!g || kern_of(gy)->gather(g, gy, dim, idx) != TC_OK) {
        tc_tensor_release(g);
        return TC_ERR;
    }
    if (tc_shape_numel(e->ndim, e->shape) == tc_numel(g)) { gx[1] = g; return TC_OK; }
    /* src was larger than index: the part index did not cover gets no gradient */
    tc_tensor *z = tc_zeros(e->ndim, e->shape, gy->dtype, gy->storage->device);
    tc_tensor *corner = z ? header(z, idx->ndim, idx->shape, z->stride, 0) : NULL;
    int rc = corner ? kern_of(gy)->copy(corner, g) : TC_ERR;
    tc_tensor_release(corner);
    tc_tensor_release(g);
    if (rc != TC_OK) { tc_tensor_release(z); return TC_ERR; }
    gx[1] = z;
    return TC_OK;
}

static int check_scatter(const char *op, tc_tensor *x, int dim, tc_tensor *index, tc_tensor *src) {
    if (check_index(op, x, index) != TC_OK || tc_check_same_device(op, x, src) != TC_OK) return TC_ERR;
    if (x->ndim == 0) return tc_error("%s: x must have at least one dimension", op);
    if (src->dtype != x->dtype)
        return tc_error("%s: src of dtype %s does not match x of dtype %s", op, tc_dtype_name(src->dtype),
                        tc_dtype_name(x->dtype));
    int d = tc_wrap_dim(dim, x->ndim, op);
    if (d < 0 || check_fits(op, "x", index, x, d, false) != TC_OK || check_fits(op, "src", index, src, d, true) != TC_OK)
        return TC_ERR;
    return d;
}

tc_tensor *tc_scatter_add(tc_tensor *x, int dim, tc_tensor *index, tc_tensor *src) {
    int d = check_scatter("scatter_add", x, dim, index, src);
    if (d < 0) return NULL;
    tc_tensor *out = tc_empty_like(x, x->dtype);
    if (!out) return NULL;
    if (kern_of(x)->copy(out, x) != TC_OK || kern_of(x)->scatter_add(out, d, index, src) != TC_OK) {
        tc_tensor_release(out);
        kernel_error("scatter_add");
        return NULL;
    }
    tc_tensor *ins[2] = {x, src};
    tc_node *n = tc_node_new(TC_OP_SCATTER_ADD, 2, ins, scatter_add_backward);
    if (n) {
        n->i[0] = d;
        tc_node_save(n, index);
    }
    return tc_attach(out, n);
}

int tc_scatter_add_(tc_tensor *x, int dim, tc_tensor *index, tc_tensor *src) {
    int d = check_scatter("scatter_add_", x, dim, index, src);
    if (d < 0) return TC_ERR;
    bool grad = tc_grad_enabled();
    if (grad && x->requires_grad && !x->grad_fn) return tc_check_inplace(x, "scatter_add_");
    /* recorded, or a layout the kernel does not write into: through the out-of-place op */
    if ((grad && (x->requires_grad || src->requires_grad)) || !tc_is_contiguous(x))
        return adopt(x, tc_scatter_add(x, d, index, src), "scatter_add_");
    if (tc_check_inplace(x, "scatter_add_") != TC_OK) return TC_ERR;
    return kern_of(x)->scatter_add(x, d, index, src) == TC_OK ? TC_OK : kernel_error("scatter_add_");
}

/* ---- masked_fill: value where mask is true; backward: gy with those positions zeroed ---- */
static int masked_fill_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *zero = tc_scalar_tensor(0, gy->dtype, gy->storage->device);
    gx[0] = zero ? tc_where(tc_saved(n, 0), zero, gy) : NULL;
    tc_tensor_release(zero);
    return gx[0] ? TC_OK : TC_ERR;
}

/* a stride-0 view of t with the (broadcast) shape */
static tc_tensor *broadcast_view(const tc_tensor *t, int ndim, const int64_t *shape) {
    int64_t st[TC_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++)
        st[i] = i < lead || t->shape[i - lead] != shape[i] ? 0 : t->stride[i - lead];
    return header(t, ndim, shape, st, t->offset);
}

static int check_mask(const char *op, tc_tensor *x, tc_tensor *mask, double value) {
    if (mask->dtype != TC_BOOL) return tc_error("%s: mask must be a bool tensor (got %s)", op, tc_dtype_name(mask->dtype));
    if (!tc_dtype_is_float(x->dtype) && !isfinite(value))
        return tc_error("%s: value %g cannot be stored in a %s tensor", op, value, tc_dtype_name(x->dtype));
    return tc_check_same_device(op, x, mask);
}

/* out (of the broadcast shape) = where(mask, value, x) */
static int fill_where(tc_tensor *out, tc_tensor *x, tc_tensor *mask, double value) {
    tc_tensor *v = tc_scalar_tensor(value, x->dtype, x->storage->device);
    tc_tensor *ev = v ? broadcast_view(v, out->ndim, out->shape) : NULL;
    tc_tensor *em = broadcast_view(mask, out->ndim, out->shape), *ex = broadcast_view(x, out->ndim, out->shape);
    int rc = ev && em && ex ? kern_of(x)->where(out, em, ev, ex) : TC_ERR;
    tc_tensor_release(v);
    tc_tensor_release(ev);
    tc_tensor_release(em);
    tc_tensor_release(ex);
    return rc;
}

tc_tensor *tc_masked_fill(tc_tensor *x, tc_tensor *mask, double value) {
    int nd;
    int64_t sh[TC_MAX_DIMS];
    if (check_mask("masked_fill", x, mask, value) != TC_OK ||
        tc_broadcast_shape(x->ndim, x->shape, mask->ndim, mask->shape, &nd, sh, "masked_fill") != TC_OK)
        return NULL;
    tc_tensor *out = tc_empty(nd, sh, x->dtype, x->storage->device);
    if (!out || fill_where(out, x, mask, value) != TC_OK) { tc_tensor_release(out); return NULL; }
    tc_node *n = tc_node_new(TC_OP_MASKED_FILL, 1, &x, masked_fill_backward);
    if (n) tc_node_save(n, mask);
    return tc_attach(out, n);
}

int tc_masked_fill_(tc_tensor *x, tc_tensor *mask, double value) {
    int nd;
    int64_t sh[TC_MAX_DIMS];
    if (check_mask("masked_fill_", x, mask, value) != TC_OK ||
        tc_broadcast_shape(x->ndim, x->shape, mask->ndim, mask->shape, &nd, sh, "masked_fill_") != TC_OK)
        return TC_ERR;
    if (nd != x->ndim || memcmp(sh, x->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        char a[128], b[128];
        tc_shape_str(mask->ndim, mask->shape, a, sizeof a);
        tc_shape_str(x->ndim, x->shape, b, sizeof b);
        return tc_error("masked_fill_: mask of shape %s does not broadcast to x of shape %s", a, b);
    }
    bool grad = tc_grad_enabled();
    if (grad && x->requires_grad && !x->grad_fn) return tc_check_inplace(x, "masked_fill_");
    if ((grad && x->requires_grad) || !tc_is_contiguous(x))
        return adopt(x, tc_masked_fill(x, mask, value), "masked_fill_");
    if (tc_check_inplace(x, "masked_fill_") != TC_OK) return TC_ERR;
    return fill_where(x, x, mask, value); /* elementwise: reading and writing x in one pass is safe */
}

/* ---- cat and stack: backward hands each input its slice of gy ---------------------------- */
/* ctx: each input's length along dim, -1 for a skipped empty 1-d tensor */
static int cat_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    const int64_t *len = n->ctx;
    int dim = (int)n->i[0];
    int64_t start = 0;
    for (int k = 0; k < n->nin; k++) {
        tc_edge *e = &n->next[k];
        if (len[k] < 0) {
            if (tc_needs_grad(n, k) && !(gx[k] = tc_zeros(e->ndim, e->shape, gy->dtype, gy->storage->device)))
                return TC_ERR;
            continue;
        }
        if (tc_needs_grad(n, k) && !(gx[k] = tc_narrow(gy, dim, start, len[k]))) return TC_ERR;
        start += len[k];
    }
    return TC_OK;
}

/* PyTorch skips 1-d tensors of size 0 in cat, whatever the other shapes are */
static bool skipped(const tc_tensor *t) { return t->ndim == 1 && t->shape[0] == 0; }

tc_tensor *tc_cat(int n, tc_tensor **xs, int dim) {
    if (n < 1) { tc_error("cat: expects a non-empty list of tensors"); return NULL; }
    int ref = 0;
    tc_dtype dt = xs[0]->dtype;
    for (int k = n - 1; k >= 0; k--) {
        if (tc_check_same_device("cat", xs[0], xs[k]) != TC_OK) return NULL;
        dt = tc_promote(dt, xs[k]->dtype);
        if (!skipped(xs[k])) ref = k;
    }
    for (int k = 0; k < n; k++)
        if (xs[k]->ndim == 0) {
            tc_error("cat: zero-dimensional tensor (entry %d) cannot be concatenated", k + 1);
            return NULL;
        }
    tc_tensor *r = xs[ref];
    int d = tc_wrap_dim(dim, r->ndim, "cat");
    if (d < 0) return NULL;
    int64_t sh[TC_MAX_DIMS];
    memcpy(sh, r->shape, sizeof sh);
    sh[d] = 0;
    for (int k = 0; k < n; k++) {
        tc_tensor *t = xs[k];
        if (k != ref && skipped(t)) continue;
        bool same_rank = t->ndim == r->ndim, fits = same_rank;
        for (int i = 0; i < t->ndim && fits; i++) fits = i == d || t->shape[i] == r->shape[i];
        if (!fits) { /* formatted only here: snprintf on every call was 3% of a small cat */
            char a[128], b[128];
            tc_shape_str(r->ndim, r->shape, a, sizeof a);
            tc_shape_str(t->ndim, t->shape, b, sizeof b);
            if (!same_rank)
                tc_error("cat: tensors must have the same number of dimensions: entry %d has shape %s but entry %d has shape %s",
                         ref + 1, a, k + 1, b);
            else
                tc_error("cat: sizes must match except in dimension %d: entry %d has shape %s but entry %d has shape %s",
                         d + 1, ref + 1, a, k + 1, b);
            return NULL;
        }
        sh[d] += t->shape[d];
    }
    tc_tensor *out = tc_empty(r->ndim, sh, dt, r->storage->device);
    int64_t *len = out ? malloc((size_t)n * sizeof *len) : NULL;
    if (!len) {
        tc_tensor_release(out);
        if (out) tc_error("cat: out of memory");
        return NULL;
    }
    int64_t start = 0;
    for (int k = 0; k < n; k++) {
        tc_tensor *t = xs[k];
        len[k] = k != ref && skipped(t) ? -1 : t->shape[d];
        if (len[k] <= 0) continue;
        tc_tensor *part = header(out, t->ndim, t->shape, out->stride, start * out->stride[d]);
        int rc = part ? kern_of(out)->copy(part, t) : TC_ERR;
        tc_tensor_release(part);
        if (rc != TC_OK) { tc_tensor_release(out); free(len); return NULL; }
        start += len[k];
    }
    tc_node *node = tc_node_new(TC_OP_CAT, n, xs, cat_backward);
    if (!node) { free(len); return out; }
    node->i[0] = d;
    node->ctx = len;
    node->free_ctx = free;
    return tc_attach(out, node);
}

tc_tensor *tc_stack(int n, tc_tensor **xs, int dim) {
    if (n < 1) { tc_error("stack: expects a non-empty list of tensors"); return NULL; }
    for (int k = 1; k < n; k++)
        if (!tc_same_shape(xs[k], xs[0])) {
            char a[128], b[128];
            tc_shape_str(xs[0]->ndim, xs[0]->shape, a, sizeof a);
            tc_shape_str(xs[k]->ndim, xs[k]->shape, b, sizeof b);
            tc_error("stack: expects tensors of equal shape, but entry 1 has shape %s and entry %d has shape %s",
                     a, k + 1, b);
            return NULL;
        }
    int d = tc_wrap_dim(dim, xs[0]->ndim + 1, "stack");
    if (d < 0) return NULL;
    tc_tensor **u = calloc((size_t)n, sizeof *u);
    if (!u) { tc_error("stack: out of memory"); return NULL; }
    tc_tensor *out = NULL;
    int k = 0;
    while (k < n && (u[k] = tc_unsqueeze(xs[k], d))) k++;
    if (k == n) out = tc_cat(n, u, d);
    for (int i = 0; i < k; i++) tc_tensor_release(u[i]);
    free(u);
    return out;
}

/* ---- embedding: rows of weight picked by ids; backward: index_add into zeros -------------- */
static int embedding_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_edge *e = &n->next[0];
    tc_tensor *ids = tc_saved(n, 0); /* flat */
    int64_t dim = e->shape[1], pad = n->i[0];
    int64_t sh[2] = {tc_numel(ids), dim};
    tc_tensor *g2 = tc_reshape(gy, 2, sh);
    tc_tensor *g = g2 ? tc_zeros(2, e->shape, gy->dtype, gy->storage->device) : NULL;
    int rc = g ? kern_of(gy)->index_add(g, 0, ids, g2) : TC_ERR;
    if (rc == TC_OK && pad > 0) { /* the padding row learns nothing */
        tc_tensor *row = header(g, 1, &dim, NULL, (pad - 1) * dim);
        rc = row ? kern_of(gy)->fill(row, 0) : TC_ERR;
        tc_tensor_release(row);
    }
    tc_tensor_release(g2);
    if (rc != TC_OK) { tc_tensor_release(g); return TC_ERR; }
    gx[0] = g;
    return TC_OK;
}

tc_tensor *tc_embedding(tc_tensor *index, tc_tensor *weight, int64_t padding_idx) {
    if (check_index("embedding", weight, index) != TC_OK) return NULL;
    if (weight->ndim != 2) {
        char s[128];
        tc_shape_str(weight->ndim, weight->shape, s, sizeof s);
        tc_error("embedding: weight must be 2-d [num_embeddings x dim] (got shape %s)", s);
        return NULL;
    }
    if (index->ndim >= TC_MAX_DIMS) { tc_error("embedding: index has too many dimensions (%d)", index->ndim); return NULL; }
    int64_t rows = weight->shape[0];
    int64_t pad = padding_idx < 0 ? padding_idx + rows + 1 : padding_idx; /* -1: the last row */
    if (pad < 0 || pad > rows) {
        tc_error("embedding: padding_idx %lld out of range for %lld embeddings", (long long)padding_idx, (long long)rows);
        return NULL;
    }
    int64_t count = tc_numel(index), sh[TC_MAX_DIMS];
    tc_tensor *ids = tc_reshape(index, 1, &count);
    if (!ids) return NULL;
    memcpy(sh, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    sh[index->ndim] = weight->shape[1];
    tc_tensor *out = tc_empty(index->ndim + 1, sh, weight->dtype, weight->storage->device);
    /* out viewed as [count x dim] */
    tc_tensor *out2 = out ? header(out, 2, (int64_t[2]){count, weight->shape[1]}, NULL, 0) : NULL;
    int rc = out2 ? kern_of(weight)->index_select(out2, weight, 0, ids) : TC_ERR;
    tc_tensor_release(out2);
    if (rc != TC_OK) {
        if (out2) kernel_error("embedding");
        tc_tensor_release(out);
        tc_tensor_release(ids);
        return NULL;
    }
    tc_node *n = tc_node_new(TC_OP_EMBEDDING, 1, &weight, embedding_backward);
    if (n) {
        n->i[0] = pad;
        tc_node_save(n, ids);
    }
    tc_tensor_release(ids);
    return tc_attach(out, n);
}
