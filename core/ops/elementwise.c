/* elementwise.c: unary, scalar and broadcasting binary ops, where, and the copies
 * (contiguous, clone, to, copy_, fill_, in-place arithmetic). Each op's derivative rule
 * sits next to it; unary derivatives are one fused kernel (kernels->unary_backward). */
#include "../internal.h"
#include "../unary.h"

#include <math.h>
#include <stdio.h>

/* a stride-0 view of x with the given (broadcast) shape, outside autograd */
static tc_tensor *broadcast_view(tc_tensor *x, int ndim, const int64_t *shape) {
    if (x->ndim == ndim && memcmp(x->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return tc_tensor_retain(x); /* already that shape: no header to make (the common case) */
    int64_t st[TC_MAX_DIMS];
    int lead = ndim - x->ndim;
    for (int i = 0; i < ndim; i++)
        st[i] = i < lead || x->shape[i - lead] != shape[i] ? 0 : x->stride[i - lead];
    return tc_tensor_make(x->storage, x->dtype, ndim, shape, st, x->offset);
}

int tc_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                       int64_t *out, const char *op) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t a = i < n - na ? 1 : sa[i - (n - na)], b = i < n - nb ? 1 : sb[i - (n - nb)];
        if (a != b && a != 1 && b != 1) {
            char x[128], y[128];
            tc_shape_str(na, sa, x, sizeof x);
            tc_shape_str(nb, sb, y, sizeof y);
            return tc_error("%s: shapes %s and %s cannot be broadcast together (dimension %d: %lld vs %lld)",
                            op, x, y, i + 1, (long long)a, (long long)b);
        }
        out[i] = a == 1 ? b : a;
    }
    *nout = n;
    return TC_OK;
}

/* x converted to dtype dt (a new reference; x itself when it already is) */
static tc_tensor *as_dtype(tc_tensor *x, tc_dtype dt) {
    return x->dtype == dt ? tc_tensor_retain(x) : tc_to(x, dt, x->storage->device);
}

/* ---- copies ---------------------------------------------------------------------- */
static int identity_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    (void)n;
    gx[0] = tc_tensor_retain(gy);
    return TC_OK;
}

static int to_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_device dev = {(tc_device_type)n->i[0], (int)n->i[1]};
    gx[0] = tc_to(gy, n->next[0].dtype, dev);
    return gx[0] ? TC_OK : TC_ERR;
}

static tc_tensor *copy_of(tc_tensor *x, tc_dtype dt, tc_device dev, tc_op op, tc_memory_format f) {
    tc_tensor *out = tc_empty_format(x->ndim, x->shape, dt, dev, f);
    if (!out) return NULL;
    const tc_kernels *k = tc_kern(dev.type == TC_CPU ? x->storage->device : dev);
    if (!k || k->copy(out, x) != TC_OK) { tc_tensor_release(out); return NULL; }
    tc_node *n = tc_dtype_is_float(dt) ? tc_node_new(op, 1, &x, op == TC_OP_TO ? to_backward : identity_backward) : NULL;
    if (n) { n->i[0] = x->storage->device.type; n->i[1] = x->storage->device.index; }
    return tc_attach(out, n);
}

tc_tensor *tc_contiguous(tc_tensor *x) { return tc_contiguous_format(x, TC_CONTIGUOUS_FORMAT); }

tc_tensor *tc_contiguous_format(tc_tensor *x, tc_memory_format f) {
    if (tc_is_contiguous_format(x, f)) return tc_tensor_retain(x);
    if (f == TC_CHANNELS_LAST && x->ndim != 4) {
        char sh[160];
        tc_shape_str(x->ndim, x->shape, sh, sizeof sh);
        tc_error("contiguous: channels_last needs a 4-d tensor [N, C, H, W], got %s", sh);
        return NULL;
    }
    return copy_of(x, x->dtype, x->storage->device, TC_OP_CONTIGUOUS, f);
}

/* copies keep a channels-last layout, as PyTorch's preserve_format */
tc_tensor *tc_clone(tc_tensor *x) {
    return copy_of(x, x->dtype, x->storage->device, TC_OP_CLONE, tc_suggest_format(x));
}

tc_tensor *tc_to(tc_tensor *x, tc_dtype dt, tc_device dev) {
    if (x->dtype == dt && tc_device_eq(x->storage->device, dev)) return tc_tensor_retain(x);
    if (!tc_kern(dev)) return NULL;
    return copy_of(x, dt, dev, TC_OP_TO, tc_suggest_format(x));
}

/* the layout of an elementwise result of shape (n, sh): that of the first operand with the
 * full shape (a broadcast one, such as a bias [1, C, 1, 1], has no say) */
static tc_memory_format result_format(int nops, tc_tensor *const *ops, int n, const int64_t *sh) {
    if (n != 4) return TC_CONTIGUOUS_FORMAT;
    for (int i = 0; i < nops; i++)
        if (ops[i]->ndim == 4 && memcmp(ops[i]->shape, sh, 4 * sizeof *sh) == 0) return tc_suggest_format(ops[i]);
    return TC_CONTIGUOUS_FORMAT;
}

tc_tensor *tc_detach(tc_tensor *x) {
    tc_tensor *t = tc_alias(x);
    if (t) t->is_view = true;
    return t;
}

/* ---- in-place writes ------------------------------------------------------------------
 * An in-place op computes its result out of place, then writes it into x. Under autograd
 * (grad mode on and the result requires grad) x takes the result's history, as PyTorch's
 * rebase does; the op reads a clone of x, so what it saves for backward is x's old value,
 * while whatever saved x itself sees the version bump. A view cannot be rebased (its base
 * would not see the new history), and a leaf that requires grad is refused by
 * tc_check_inplace. */
static bool tracked(const tc_tensor *x, const tc_tensor *other) {
    return tc_grad_enabled() && (x->requires_grad || (other && other->requires_grad));
}

static int start_write(tc_tensor *x, bool track, const char *op) {
    if (track && x->is_view)
        return tc_error("%s: in-place operation on a view of a tensor under autograd is not supported; "
                        "use the out-of-place op", op);
    return tc_check_inplace(x, op);
}

/* x's values now come from r alone: under autograd x takes r's history (none when r has
 * none, since x's old values no longer matter) */
static void take_history(tc_tensor *x, tc_tensor *r) {
    tc_node *n = r ? r->grad_fn : NULL;
    if (n) tc_node_retain(n);
    tc_node_release(x->grad_fn);
    x->grad_fn = n;
    x->requires_grad = n != NULL;
}

/* writes r (broadcast to x's shape, converted to x's dtype) into x; consumes r */
static int write_back(tc_tensor *x, tc_tensor *r, bool track, const char *op) {
    if (!r) return TC_ERR;
    int rc = start_write(x, track, op);
    if (rc == TC_OK) {
        tc_tensor *s = broadcast_view(r, x->ndim, x->shape);
        rc = s ? tc_kern(x->storage->device)->copy(x, s) : TC_ERR;
        tc_tensor_release(s);
    }
    if (rc == TC_OK && track) take_history(x, r);
    tc_tensor_release(r);
    return rc;
}

/* the source of an in-place op on x: x itself, or under autograd a clone holding its old value */
static tc_tensor *inplace_source(tc_tensor *x, bool track) {
    return track ? tc_clone(x) : tc_tensor_retain(x);
}

/* src must broadcast to dst's shape exactly */
static int check_fits(const char *op, tc_tensor *dst, tc_tensor *src) {
    int n;
    int64_t sh[TC_MAX_DIMS];
    if (tc_broadcast_shape(dst->ndim, dst->shape, src->ndim, src->shape, &n, sh, op) != TC_OK) return TC_ERR;
    if (n == dst->ndim && memcmp(sh, dst->shape, (size_t)n * sizeof *sh) == 0) return TC_OK;
    char a[128], b[128];
    tc_shape_str(src->ndim, src->shape, a, sizeof a);
    tc_shape_str(dst->ndim, dst->shape, b, sizeof b);
    return tc_error("%s: an operand of shape %s does not broadcast to the destination's shape %s", op, a, b);
}

/* copy_ is differentiable: under autograd dst takes the history of src (broadcast and
 * converted). A source on another device, or sharing dst's memory, is copied first. */
int tc_copy_(tc_tensor *dst, tc_tensor *src) {
    if (check_fits("copy_", dst, src) != TC_OK) return TC_ERR;
    bool track = tracked(dst, src);
    tc_tensor *r;
    if (track || src->storage == dst->storage || !tc_device_eq(src->storage->device, dst->storage->device)) {
        tc_tensor *e = tc_expand(src, dst->ndim, dst->shape);
        r = e ? copy_of(e, dst->dtype, dst->storage->device, TC_OP_TO, tc_suggest_format(dst)) : NULL;
        tc_tensor_release(e);
    } else r = tc_tensor_retain(src);
    return write_back(dst, r, track, "copy_");
}

static int fill_named(tc_tensor *dst, double value, const char *op) {
    bool track = tracked(dst, NULL);
    if (start_write(dst, track, op) != TC_OK) return TC_ERR;
    int rc = tc_kern(dst->storage->device)->fill(dst, value);
    if (rc == TC_OK && track) take_history(dst, NULL);
    return rc;
}

int tc_fill_(tc_tensor *dst, double value) { return fill_named(dst, value, "fill_"); }
int tc_zero_(tc_tensor *dst) { return fill_named(dst, 0, "zero_"); }

/* ---- unary ops ------------------------------------------------------------------------- */
/* which of x and y each derivative reads (the list in core/unary.h); ops without a
 * derivative are not recorded */
#define NEEDS_(op, fk, f, dk, uses, d)                                                     \
    case TC_OP_##op:                                                                       \
        *nx = false TC_UNARY_IF_X_##uses(|| true);                                         \
        *ny = false TC_UNARY_IF_Y_##uses(|| true);                                         \
        *diff = false TC_UNARY_IF_DIFF_##dk(|| true);                                      \
        return;
static void unary_needs(tc_op op, bool *nx, bool *ny, bool *diff) {
    switch (op) {
    TC_UNARY_OPS(NEEDS_, double, )
    default: *nx = *diff = true; *ny = false; return;
    }
}
#undef NEEDS_

static bool float_op(tc_op op) {
    switch (op) {
    case TC_OP_NEG: case TC_OP_ABS: case TC_OP_RELU: case TC_OP_SIGN: case TC_OP_SQUARE:
    case TC_OP_ADD_SCALAR: case TC_OP_MUL_SCALAR: case TC_OP_RSUB_SCALAR: case TC_OP_CLAMP:
    case TC_OP_LOGICAL_NOT: case TC_OP_ISFINITE: return false;
    default: return true;
    }
}

static int unary_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *x = tc_saved(n, 0), *y = tc_saved(n, 1);
    tc_tensor *g = tc_empty_format(gy->ndim, gy->shape, gy->dtype, gy->storage->device, tc_suggest_format(gy));
    if (!g) return TC_ERR;
    if (tc_kern(gy->storage->device)->unary_backward(g, gy, x, y, n->op, n->d[0], n->d[1]) != TC_OK) {
        tc_tensor_release(g);
        return TC_ERR;
    }
    gx[0] = g;
    return TC_OK;
}

/* the dtype an op computes in: integers stay integers only through ops that map them to
 * integers (with integral scalars); bool becomes i64 except in the logical ops */
static tc_dtype unary_dtype(tc_op op, tc_dtype dt, double a, double b) {
    if (tc_dtype_is_float(dt)) return dt;
    bool scalar = op == TC_OP_ADD_SCALAR || op == TC_OP_MUL_SCALAR || op == TC_OP_RSUB_SCALAR || op == TC_OP_CLAMP;
    if (float_op(op) || (scalar && (a != floor(a) || b != floor(b)))) return TC_F32;
    if (dt == TC_BOOL && op != TC_OP_LOGICAL_NOT && op != TC_OP_ISFINITE) return TC_I64;
    return dt;
}

tc_tensor *tc_unary_s(tc_op op, tc_tensor *x, double a, double b) {
    tc_dtype dt = unary_dtype(op, x->dtype, a, b);
    tc_dtype out_dt = op == TC_OP_LOGICAL_NOT || op == TC_OP_ISFINITE ? TC_BOOL : dt;
    tc_tensor *xc = as_dtype(x, dt);
    if (!xc) return NULL;
    tc_tensor *out = tc_empty_format(x->ndim, x->shape, out_dt, x->storage->device, tc_suggest_format(x));
    if (!out || tc_kern(x->storage->device)->unary(out, xc, op, a, b) != TC_OK) {
        tc_tensor_release(out);
        tc_tensor_release(xc);
        return NULL;
    }
    bool nx, ny, diff;
    unary_needs(op, &nx, &ny, &diff);
    tc_node *n = diff ? tc_node_new(op, 1, &x, unary_backward) : NULL;
    if (n) {
        tc_node_save(n, nx ? xc : NULL);
        tc_node_save(n, ny ? out : NULL);
        n->d[0] = a;
        n->d[1] = b;
    }
    tc_tensor_release(xc);
    return tc_attach(out, n);
}

tc_tensor *tc_unary(tc_op op, tc_tensor *x) { return tc_unary_s(op, x, 0, 0); }

/* ---- binary ops ------------------------------------------------------------------------ */
static bool is_comparison(tc_op op) { return op >= TC_OP_EQ && op <= TC_OP_LOGICAL_OR; }

static tc_tensor *mul3(tc_tensor *a, tc_tensor *b, tc_tensor *c) {
    tc_tensor *t = tc_binary(TC_OP_MUL, a, b);
    if (!t || !c) return t;
    tc_tensor *r = tc_binary(TC_OP_MUL, t, c);
    tc_tensor_release(t);
    return r;
}

/* x op 0, a bool tensor */
static tc_tensor *compare_zero(tc_op op, tc_tensor *x) {
    tc_tensor *z = tc_scalar_tensor(0, x->dtype, x->storage->device);
    tc_tensor *r = z ? tc_binary(op, x, z) : NULL;
    tc_tensor_release(z);
    return r;
}

/* t with zeros where mask holds */
static tc_tensor *zero_where(tc_tensor *mask, tc_tensor *t) {
    tc_tensor *z = tc_scalar_tensor(0, t->dtype, t->storage->device);
    tc_tensor *r = z ? tc_where(mask, z, t) : NULL;
    tc_tensor_release(z);
    return r;
}

static int binary_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *a = tc_saved(n, 0), *b = tc_saved(n, 1), *y = tc_saved(n, 2);
    bool ga = tc_needs_grad(n, 0), gb = tc_needs_grad(n, 1);
    switch (n->op) {
    case TC_OP_ADD:
        if (ga) gx[0] = tc_tensor_retain(gy);
        if (gb) gx[1] = tc_tensor_retain(gy);
        return TC_OK;
    case TC_OP_SUB:
        if (ga) gx[0] = tc_tensor_retain(gy);
        if (gb && !(gx[1] = tc_unary(TC_OP_NEG, gy))) return TC_ERR;
        return TC_OK;
    case TC_OP_MUL:
        if (ga && !(gx[0] = tc_binary(TC_OP_MUL, gy, b))) return TC_ERR;
        if (gb && !(gx[1] = tc_binary(TC_OP_MUL, gy, a))) return TC_ERR;
        return TC_OK;
    case TC_OP_DIV:
        if (ga && !(gx[0] = tc_binary(TC_OP_DIV, gy, b))) return TC_ERR;
        if (gb) { /* -gy * y / b */
            tc_tensor *t = mul3(gy, y, NULL), *u = t ? tc_binary(TC_OP_DIV, t, b) : NULL;
            gx[1] = u ? tc_unary(TC_OP_NEG, u) : NULL;
            tc_tensor_release(t);
            tc_tensor_release(u);
            if (!gx[1]) return TC_ERR;
        }
        return TC_OK;
    case TC_OP_POW: {
        int rc = TC_OK;
        if (ga) { /* gy * b * a^(b-1), taking 0 where b == 0 as PyTorch does */
            tc_tensor *bm1 = tc_unary_s(TC_OP_ADD_SCALAR, b, -1, 0);
            tc_tensor *p = bm1 ? tc_binary(TC_OP_POW, a, bm1) : NULL;
            tc_tensor *t = p ? mul3(gy, b, p) : NULL;
            tc_tensor *bz = t ? compare_zero(TC_OP_EQ, b) : NULL;
            if (!bz || !(gx[0] = zero_where(bz, t))) rc = TC_ERR;
            tc_tensor *tmp[] = {bm1, p, t, bz};
            for (int i = 0; i < 4; i++) tc_tensor_release(tmp[i]);
        }
        if (gb && rc == TC_OK) { /* gy * y * log(a), taking 0 where a == 0 and b >= 0 */
            tc_tensor *la = tc_unary(TC_OP_LOG, a);
            tc_tensor *t = la ? mul3(gy, y, la) : NULL;
            tc_tensor *az = t ? compare_zero(TC_OP_EQ, a) : NULL, *bp = az ? compare_zero(TC_OP_GE, b) : NULL;
            tc_tensor *m = bp ? tc_binary(TC_OP_LOGICAL_AND, az, bp) : NULL;
            if (!m || !(gx[1] = zero_where(m, t))) rc = TC_ERR;
            tc_tensor *tmp[] = {la, t, az, bp, m};
            for (int i = 0; i < 5; i++) tc_tensor_release(tmp[i]);
        }
        return rc;
    }
    case TC_OP_MAXIMUM:
    case TC_OP_MINIMUM: { /* the larger (smaller) input takes gy; ties split it in half */
        tc_tensor *half = tc_unary_s(TC_OP_MUL_SCALAR, gy, 0.5, 0);
        tc_tensor *zero = tc_scalar_tensor(0, gy->dtype, gy->storage->device);
        tc_tensor *eq = tc_binary(TC_OP_EQ, a, b);
        tc_tensor *win = tc_binary(n->op == TC_OP_MAXIMUM ? TC_OP_GT : TC_OP_LT, a, b);
        tc_tensor *lose = tc_binary(n->op == TC_OP_MAXIMUM ? TC_OP_LT : TC_OP_GT, a, b);
        int rc = half && zero && eq && win && lose ? TC_OK : TC_ERR;
        for (int side = 0; side < 2 && rc == TC_OK; side++) {
            if (!tc_needs_grad(n, side)) continue;
            tc_tensor *mine = side ? lose : win, *t = tc_where(mine, gy, zero);
            gx[side] = t ? tc_where(eq, half, t) : NULL;
            tc_tensor_release(t);
            if (!gx[side]) rc = TC_ERR;
        }
        tc_tensor *all[] = {half, zero, eq, win, lose};
        for (int i = 0; i < 5; i++) tc_tensor_release(all[i]);
        return rc;
    }
    default:
        return tc_error("no derivative for %s", tc_op_name(n->op));
    }
}

tc_tensor *tc_binary(tc_op op, tc_tensor *a, tc_tensor *b) {
    const char *name = tc_op_name(op);
    if (tc_check_same_device(name, a, b) != TC_OK) return NULL;
    int n;
    int64_t sh[TC_MAX_DIMS];
    if (tc_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &n, sh, name) != TC_OK) return NULL;
    tc_dtype dt = tc_promote(a->dtype, b->dtype);
    if (op == TC_OP_DIV && !tc_dtype_is_float(dt)) dt = TC_F32; /* true division, as PyTorch */
    if (dt == TC_BOOL && !is_comparison(op) && op != TC_OP_MUL) dt = TC_I64;
    tc_tensor *ac = as_dtype(a, dt), *bc = as_dtype(b, dt);
    tc_tensor *ea = ac ? broadcast_view(ac, n, sh) : NULL, *eb = bc ? broadcast_view(bc, n, sh) : NULL;
    tc_tensor *out = ea && eb ? tc_empty_format(n, sh, is_comparison(op) ? TC_BOOL : dt, a->storage->device,
                                                result_format(2, (tc_tensor *[]){a, b}, n, sh))
                              : NULL;
    int rc = out ? tc_kern(a->storage->device)->binary(out, ea, eb, op) : TC_ERR;
    tc_tensor_release(ea);
    tc_tensor_release(eb);
    tc_node *node = NULL;
    if (rc == TC_OK && !is_comparison(op)) {
        tc_tensor *ins[2] = {a, b};
        node = tc_node_new(op, 2, ins, binary_backward);
    }
    if (node) { /* saved: a, b, out; each only where a derivative reads it */
        bool ga = tc_needs_grad(node, 0), gb = tc_needs_grad(node, 1);
        bool minmax = op == TC_OP_MAXIMUM || op == TC_OP_MINIMUM;
        tc_node_save(node, (op == TC_OP_MUL && gb) || op == TC_OP_POW || minmax ? ac : NULL);
        tc_node_save(node, (op == TC_OP_MUL && ga) || op == TC_OP_DIV || op == TC_OP_POW || minmax ? bc : NULL);
        tc_node_save(node, (op == TC_OP_DIV || op == TC_OP_POW) && gb ? out : NULL);
    }
    tc_tensor_release(ac);
    tc_tensor_release(bc);
    if (rc != TC_OK) { tc_tensor_release(out); return NULL; }
    return tc_attach(out, node);
}

/* ---- where -------------------------------------------------------------------------------- */
static int where_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *c = tc_saved(n, 0);
    tc_tensor *zero = tc_scalar_tensor(0, gy->dtype, gy->storage->device);
    if (!zero) return TC_ERR;
    int rc = TC_OK;
    if (tc_needs_grad(n, 1) && !(gx[1] = tc_where(c, gy, zero))) rc = TC_ERR;
    if (rc == TC_OK && tc_needs_grad(n, 2) && !(gx[2] = tc_where(c, zero, gy))) rc = TC_ERR;
    tc_tensor_release(zero);
    return rc;
}

tc_tensor *tc_where(tc_tensor *cond, tc_tensor *a, tc_tensor *b) {
    if (tc_check_same_device("where", cond, a) != TC_OK || tc_check_same_device("where", a, b) != TC_OK)
        return NULL;
    int n1, n;
    int64_t s1[TC_MAX_DIMS], sh[TC_MAX_DIMS];
    if (tc_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &n1, s1, "where") != TC_OK ||
        tc_broadcast_shape(cond->ndim, cond->shape, n1, s1, &n, sh, "where") != TC_OK)
        return NULL;
    tc_dtype dt = tc_promote(a->dtype, b->dtype);
    tc_tensor *cc = as_dtype(cond, TC_BOOL), *ac = as_dtype(a, dt), *bc = as_dtype(b, dt);
    tc_tensor *ec = cc ? broadcast_view(cc, n, sh) : NULL, *ea = ac ? broadcast_view(ac, n, sh) : NULL,
              *eb = bc ? broadcast_view(bc, n, sh) : NULL;
    tc_tensor *out = ec && ea && eb ? tc_empty_format(n, sh, dt, a->storage->device,
                                                      result_format(3, (tc_tensor *[]){a, b, cond}, n, sh))
                                    : NULL;
    int rc = out ? tc_kern(a->storage->device)->where(out, ec, ea, eb) : TC_ERR;
    tc_tensor *ins[3] = {NULL, a, b};
    tc_node *node = rc == TC_OK ? tc_node_new(TC_OP_WHERE, 3, ins, where_backward) : NULL;
    if (node) tc_node_save(node, cc);
    tc_tensor *tmp[] = {cc, ac, bc, ec, ea, eb};
    for (int i = 0; i < 6; i++) tc_tensor_release(tmp[i]);
    if (rc != TC_OK) { tc_tensor_release(out); return NULL; }
    return tc_attach(out, node);
}

/* ---- in-place arithmetic ------------------------------------------------------------------ */
int tc_binary_(tc_op op, tc_tensor *a, tc_tensor *b) {
    char name[32];
    snprintf(name, sizeof name, "%s_", tc_op_name(op));
    if (tc_check_same_device(name, a, b) != TC_OK || check_fits(name, a, b) != TC_OK) return TC_ERR;
    bool track = tracked(a, b);
    /* fast path: nothing to record, a contiguous and of the compute dtype, and b not
     * overlapping a (unless it is a itself: each element is read before it is written) */
    if (!track && tc_is_contiguous(a) && tc_promote(a->dtype, b->dtype) == a->dtype && !is_comparison(op) &&
        (op != TC_OP_DIV || tc_dtype_is_float(a->dtype)) && (b->storage != a->storage || b == a)) {
        if (tc_check_inplace(a, name) != TC_OK) return TC_ERR;
        tc_tensor *eb = broadcast_view(b, a->ndim, a->shape);
        if (!eb) return TC_ERR;
        int rc = tc_kern(a->storage->device)->binary(a, a, eb, op);
        tc_tensor_release(eb);
        return rc;
    }
    tc_tensor *src = inplace_source(a, track);
    tc_tensor *r = src ? tc_binary(op, src, b) : NULL;
    tc_tensor_release(src);
    return write_back(a, r, track, name);
}

int tc_unary_(tc_op op, tc_tensor *x, double a, double b) {
    bool track = tracked(x, NULL);
    tc_tensor *src = inplace_source(x, track);
    tc_tensor *r = src ? tc_unary_s(op, src, a, b) : NULL;
    tc_tensor_release(src);
    char name[32];
    snprintf(name, sizeof name, "%s_", tc_op_name(op));
    return write_back(x, r, track, name);
}
