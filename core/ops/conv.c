/* conv.c: conv2d and conv_transpose2d (NCHW, or channels-last when the input or the weight is),
 * each one autograd node with a fused backward.
 * Both reach the same two kernels: conv2d's forward is conv_transpose2d's input gradient,
 * and conv2d's input gradient is conv_transpose2d's forward. */
#include "../internal.h"

#include <stdio.h>

/* ---- shared checks and helpers ------------------------------------------------------------ */
/* "[2 x 3 x 8 x 8]" for t, into a buffer of the caller's */
static const char *shape_of(const tc_tensor *t, char *buf, size_t n) {
    tc_shape_str(t->ndim, t->shape, buf, n);
    return buf;
}

/* x [N, C, H, W], w 4-d, b NULL or 1-d: floating point, one dtype, one device, sane params */
static int check_args(const char *op, tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p) {
    char s1[128];
    if (x->ndim != 4) return tc_error("%s: expected a 4-d input [N, C, H, W], got %s", op, shape_of(x, s1, sizeof s1));
    if (w->ndim != 4) return tc_error("%s: expected a 4-d weight, got %s", op, shape_of(w, s1, sizeof s1));
    if (tc_check_same_device(op, x, w) != TC_OK || (b && tc_check_same_device(op, x, b) != TC_OK)) return TC_ERR;
    if (!tc_dtype_is_float(x->dtype) || w->dtype != x->dtype || (b && b->dtype != x->dtype))
        return tc_error("%s: expected floating point input, weight and bias of one dtype, got %s, %s and %s", op,
                        tc_dtype_name(x->dtype), tc_dtype_name(w->dtype), b ? tc_dtype_name(b->dtype) : "none");
    for (int i = 0; i < 2; i++)
        if (p->stride[i] < 1 || p->dilation[i] < 1 || p->padding[i] < 0 || p->output_padding[i] < 0)
            return tc_error("%s: stride and dilation must be positive and padding non-negative "
                            "(stride %d x %d, padding %d x %d, dilation %d x %d)", op, p->stride[0], p->stride[1],
                            p->padding[0], p->padding[1], p->dilation[0], p->dilation[1]);
    if (p->groups < 1) return tc_error("%s: groups must be positive, got %d", op, p->groups);
    if (x->shape[1] % p->groups != 0)
        return tc_error("%s: input %s has %lld channels, not divisible by groups = %d", op,
                        shape_of(x, s1, sizeof s1), (long long)x->shape[1], p->groups);
    return TC_OK;
}

static int check_bias(const char *op, tc_tensor *b, int64_t channels) {
    char s[128];
    if (b && (b->ndim != 1 || b->shape[0] != channels))
        return tc_error("%s: bias %s does not match the %lld output channels", op, shape_of(b, s, sizeof s),
                        (long long)channels);
    return TC_OK;
}

static int check_output(const char *op, tc_tensor *x, tc_tensor *w, const int64_t *out) {
    if (out[2] > 0 && out[3] > 0) return TC_OK;
    char s1[128], s2[128], s3[128];
    tc_shape_str(4, out, s3, sizeof s3);
    return tc_error("%s: output size %s is not positive (input %s, weight %s)", op, s3, shape_of(x, s1, sizeof s1),
                    shape_of(w, s2, sizeof s2));
}

/* a copy dense in format f (or x itself) made outside autograd: the op records its own node */
static tc_tensor *plain_contiguous(tc_tensor *x, tc_memory_format f) {
    if (!x) return NULL;
    bool prev = tc_set_grad_enabled(false);
    tc_tensor *c = tc_contiguous_format(x, x->ndim == 4 ? f : TC_CONTIGUOUS_FORMAT);
    tc_set_grad_enabled(prev);
    return c;
}

/* the layout a convolution computes in, as PyTorch's: channels-last when the input or the
 * weight is; the output and the gradients of x and w come in it. On the CPU, whose kernels
 * compute in NCHW, only a channels-last weight (a model turned so) makes it channels-last: an
 * input that is channels-last by accident (an attention's [N, HW, C] output viewed back as
 * [N, C, H, W]) would otherwise make every convolution after it copy its input and output
 * (SD's VAE decode took 1.6x as long) */
static tc_memory_format conv_format(const tc_tensor *x, const tc_tensor *w) {
    bool x_cl = tc_suggest_format(x) == TC_CHANNELS_LAST, w_cl = tc_suggest_format(w) == TC_CHANNELS_LAST;
    if (x->storage->device.type == TC_CPU) x_cl = false;
    return x_cl || w_cl ? TC_CHANNELS_LAST : TC_CONTIGUOUS_FORMAT;
}

static void save_params(tc_node *n, const tc_conv_params *p) {
    for (int i = 0; i < 2; i++) {
        n->i[i] = p->stride[i];
        n->i[2 + i] = p->padding[i];
        n->i[4 + i] = p->dilation[i];
        n->i[6 + i] = p->output_padding[i];
    }
    n->i[8] = p->groups;
}

static tc_memory_format load_format(const tc_node *n) { return (tc_memory_format)n->i[9]; }

static tc_conv_params load_params(const tc_node *n) {
    tc_conv_params p;
    for (int i = 0; i < 2; i++) {
        p.stride[i] = (int)n->i[i];
        p.padding[i] = (int)n->i[2 + i];
        p.dilation[i] = (int)n->i[4 + i];
        p.output_padding[i] = (int)n->i[6 + i];
    }
    p.groups = (int)n->i[8];
    return p;
}

/* an empty tensor shaped like input i of n, in gy's dtype and device and the node's format */
static tc_tensor *grad_for(tc_node *n, int i, tc_tensor *gy) {
    if (!tc_needs_grad(n, i)) return NULL;
    tc_memory_format f = n->next[i].ndim == 4 ? load_format(n) : TC_CONTIGUOUS_FORMAT;
    return tc_empty_format(n->next[i].ndim, n->next[i].shape, gy->dtype, gy->storage->device, f);
}

static void release_all(tc_tensor **ts, int n) {
    for (int i = 0; i < n; i++) tc_tensor_release(ts[i]);
}

static int fail(tc_tensor **ts, int n) {
    release_all(ts, n);
    return TC_ERR;
}

/* ---- conv2d --------------------------------------------------------------------------------
 * x [N, C, H, W], w [O, C / groups, kh, kw], b [O] or NULL -> y [N, O, OH, OW] with
 * OH = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1 */
static int conv2d_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_conv_params p = load_params(n);
    tc_tensor *g = tc_contiguous_format(gy, load_format(n));
    tc_tensor *t[4] = {g, grad_for(n, 0, gy), grad_for(n, 1, gy), grad_for(n, 2, gy)};
    if (!g) return fail(t, 4);
    for (int i = 0; i < 3; i++)
        if (tc_needs_grad(n, i) && !t[i + 1]) return fail(t, 4);
    if (tc_kern(gy->storage->device)->conv2d_backward(t[1], t[2], t[3], g, tc_saved(n, 0), tc_saved(n, 1), &p) != TC_OK)
        return fail(t, 4);
    tc_tensor_release(g);
    for (int i = 0; i < 3; i++) gx[i] = t[i + 1];
    return TC_OK;
}

static tc_tensor *conv2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p) {
    const char *op = "conv2d";
    if (check_args(op, x, w, b, p) != TC_OK || check_bias(op, b, w->shape[0]) != TC_OK) return NULL;
    char s1[128], s2[128];
    if (w->shape[1] * p->groups != x->shape[1]) {
        if (p->groups == 1)
            tc_error("conv2d: input %s has %lld channels but weight %s expects %lld", shape_of(x, s1, sizeof s1),
                     (long long)x->shape[1], shape_of(w, s2, sizeof s2), (long long)w->shape[1]);
        else
            tc_error("conv2d: input %s has %lld channels but weight %s expects %lld (%lld per group x %d groups)",
                     shape_of(x, s1, sizeof s1), (long long)x->shape[1], shape_of(w, s2, sizeof s2),
                     (long long)(w->shape[1] * p->groups), (long long)w->shape[1], p->groups);
        return NULL;
    }
    if (w->shape[0] % p->groups != 0) {
        tc_error("conv2d: weight %s has %lld output channels, not divisible by groups = %d",
                 shape_of(w, s1, sizeof s1), (long long)w->shape[0], p->groups);
        return NULL;
    }
    int64_t out[4] = {x->shape[0], w->shape[0], 0, 0};
    for (int i = 0; i < 2; i++)
        out[2 + i] = (x->shape[2 + i] + 2 * p->padding[i] - p->dilation[i] * (w->shape[2 + i] - 1) - 1) / p->stride[i] + 1;
    for (int i = 0; i < 2; i++) /* C division truncates toward 0: catch a negative numerator */
        if (x->shape[2 + i] + 2 * p->padding[i] < p->dilation[i] * (w->shape[2 + i] - 1) + 1) out[2 + i] = 0;
    if (check_output(op, x, w, out) != TC_OK) return NULL;

    tc_memory_format f = conv_format(x, w);
    tc_tensor *xc = plain_contiguous(x, f), *wc = plain_contiguous(w, f), *bc = plain_contiguous(b, f);
    tc_tensor *y = xc && wc && (!b || bc) ? tc_empty_format(4, out, x->dtype, x->storage->device, f) : NULL;
    int rc = y && out[0] > 0 ? tc_kern(x->storage->device)->conv2d(y, xc, wc, bc, p) : y ? TC_OK : TC_ERR;
    tc_tensor *ins[3] = {x, w, b};
    tc_node *n = rc == TC_OK ? tc_node_new(TC_OP_CONV2D, 3, ins, conv2d_backward) : NULL;
    if (n) {
        tc_node_save(n, tc_needs_grad(n, 1) ? xc : NULL);
        tc_node_save(n, tc_needs_grad(n, 0) ? wc : NULL);
        save_params(n, p);
        n->i[9] = f;
    }
    tc_tensor *tmp[3] = {xc, wc, bc};
    release_all(tmp, 3);
    if (rc != TC_OK) { tc_tensor_release(y); return NULL; }
    return tc_attach(y, n);
}

/* ---- conv_transpose2d -----------------------------------------------------------------------
 * x [N, Cin, H, W], w [Cin, Cout / groups, kh, kw] (PyTorch's layout), b [Cout] or NULL ->
 * y [N, Cout, OH, OW] with OH = (H - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1. It is the
 * adjoint of conv2d(y-shaped input, w): its forward is that conv's input gradient. */

/* y[:, c] += b[c], through the elementwise kernel with b broadcast by a stride-0 view */
static int add_bias(tc_tensor *y, tc_tensor *b) {
    int64_t st[4] = {0, b->stride[0], 0, 0};
    tc_tensor *be = tc_tensor_make(b->storage, b->dtype, 4, y->shape, st, b->offset);
    int rc = be ? tc_kern(y->storage->device)->binary(y, y, be, TC_OP_ADD) : TC_ERR;
    tc_tensor_release(be);
    return rc;
}

static int conv_transpose2d_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_conv_params p = load_params(n);
    const tc_kernels *k = tc_kern(gy->storage->device);
    tc_tensor *g = tc_contiguous_format(gy, load_format(n));
    tc_tensor *t[3] = {g, grad_for(n, 0, gy), grad_for(n, 1, gy)};
    if (!g || (tc_needs_grad(n, 0) && !t[1]) || (tc_needs_grad(n, 1) && !t[2])) return fail(t, 3);
    /* the input's gradient is the forward conv of gy; the weight's is conv2d's weight
     * gradient with the roles swapped (gy plays conv2d's input, x its output gradient) */
    if (t[1] && k->conv2d(t[1], g, tc_saved(n, 1), NULL, &p) != TC_OK) return fail(t, 3);
    if (t[2] && k->conv2d_backward(NULL, t[2], NULL, tc_saved(n, 0), g, NULL, &p) != TC_OK) return fail(t, 3);
    if (tc_needs_grad(n, 2)) {
        int dims[3] = {0, 2, 3};
        if (!(gx[2] = tc_reduce(TC_OP_SUM, g, 3, dims, false))) return fail(t, 3);
    }
    tc_tensor_release(g);
    gx[0] = t[1];
    gx[1] = t[2];
    return TC_OK;
}

static tc_tensor *conv_transpose2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p) {
    const char *op = "conv_transpose2d";
    if (check_args(op, x, w, b, p) != TC_OK) return NULL;
    char s1[128], s2[128];
    if (w->shape[0] != x->shape[1]) {
        tc_error("conv_transpose2d: input %s has %lld channels but weight %s expects %lld (weight is [in, out / groups, kh, kw])",
                 shape_of(x, s1, sizeof s1), (long long)x->shape[1], shape_of(w, s2, sizeof s2), (long long)w->shape[0]);
        return NULL;
    }
    int64_t cout = w->shape[1] * p->groups;
    if (check_bias(op, b, cout) != TC_OK) return NULL;
    for (int i = 0; i < 2; i++)
        if (p->output_padding[i] >= p->stride[i] && p->output_padding[i] >= p->dilation[i]) {
            tc_error("conv_transpose2d: output_padding (%d x %d) must be smaller than stride (%d x %d) or dilation (%d x %d)",
                     p->output_padding[0], p->output_padding[1], p->stride[0], p->stride[1], p->dilation[0],
                     p->dilation[1]);
            return NULL;
        }
    int64_t out[4] = {x->shape[0], cout, 0, 0};
    for (int i = 0; i < 2; i++)
        out[2 + i] = (x->shape[2 + i] - 1) * p->stride[i] - 2 * p->padding[i] + p->dilation[i] * (w->shape[2 + i] - 1) +
                     p->output_padding[i] + 1;
    if (x->shape[2] < 1 || x->shape[3] < 1) out[2] = 0;
    if (check_output(op, x, w, out) != TC_OK) return NULL;

    const tc_kernels *k = tc_kern(x->storage->device);
    tc_memory_format f = conv_format(x, w);
    tc_tensor *xc = plain_contiguous(x, f), *wc = plain_contiguous(w, f);
    tc_tensor *y = xc && wc ? tc_empty_format(4, out, x->dtype, x->storage->device, f) : NULL;
    int rc = y ? TC_OK : TC_ERR;
    if (rc == TC_OK && out[0] > 0) rc = k->conv2d_backward(y, NULL, NULL, xc, NULL, wc, p);
    if (rc == TC_OK && b && out[0] > 0) rc = add_bias(y, b);
    tc_tensor *ins[3] = {x, w, b};
    tc_node *n = rc == TC_OK ? tc_node_new(TC_OP_CONV_TRANSPOSE2D, 3, ins, conv_transpose2d_backward) : NULL;
    if (n) {
        tc_node_save(n, tc_needs_grad(n, 1) ? xc : NULL);
        tc_node_save(n, tc_needs_grad(n, 0) ? wc : NULL);
        save_params(n, p);
        n->i[9] = f;
    }
    tc_tensor *tmp[2] = {xc, wc};
    release_all(tmp, 2);
    if (rc != TC_OK) { tc_tensor_release(y); return NULL; }
    return tc_attach(y, n);
}

/* ---- under autocast: x, w and b in the scope's dtype --------------------------------------- */
static tc_tensor *lowered(tc_tensor *(*op)(tc_tensor *, tc_tensor *, tc_tensor *, const tc_conv_params *), tc_tensor *x,
                          tc_tensor *w, tc_tensor *b, const tc_conv_params *p) {
    if (!tc_autocast_enabled()) return op(x, w, b, p);
    tc_tensor *c[3];
    if (tc_autocast_inputs(TC_CAST_LOWER, 3, (tc_tensor *[]){x, w, b}, c) != TC_OK) return NULL;
    tc_tensor *y = op(c[0], c[1], c[2], p);
    tc_autocast_release(3, c);
    return y;
}

tc_tensor *tc_conv2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p) { return lowered(conv2d, x, w, b, p); }
tc_tensor *tc_conv_transpose2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p) {
    return lowered(conv_transpose2d, x, w, b, p);
}
