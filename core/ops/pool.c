/* pool.c: avg_pool2d, max_pool2d, interpolate (nearest, bilinear) and pad (constant,
 * reflect, replicate), with PyTorch's output sizes and index rules. Each op is one autograd
 * node whose backward is a single kernel call. */
#include "../internal.h"

#include <stdio.h>

/* ---- shared helpers ------------------------------------------------------------------------ */
static const char *shape_of(const tc_tensor *t, char *buf, size_t n) {
    tc_shape_str(t->ndim, t->shape, buf, n);
    return buf;
}

/* x must be a floating point [N, C, H, W] */
static int check_nchw(const char *op, tc_tensor *x) {
    char s[128];
    if (x->ndim != 4) return tc_error("%s: expected a 4-d input [N, C, H, W], got %s", op, shape_of(x, s, sizeof s));
    if (!tc_dtype_is_float(x->dtype))
        return tc_error("%s: expected a floating point input, got %s", op, tc_dtype_name(x->dtype));
    return TC_OK;
}

/* a copy dense in format f (or x itself) made outside autograd: the op records its own node */
static tc_tensor *plain_contiguous(tc_tensor *x, tc_memory_format f) {
    bool prev = tc_set_grad_enabled(false);
    tc_tensor *c = tc_contiguous_format(x, f);
    tc_set_grad_enabled(prev);
    return c;
}

/* Pooling and interpolate keep a channels-last input's layout: x, y and both gradients in it
 * (the node's d[5]; 0, row-major, for pad) */
#define FORMAT_SLOT 5
static tc_memory_format node_format(const tc_node *n) { return (tc_memory_format)n->d[FORMAT_SLOT]; }

/* a fresh tensor shaped like input i of n, for its gradient */
static tc_tensor *grad_like_input(tc_node *n, int i, tc_tensor *gy) {
    return tc_empty_format(n->next[i].ndim, n->next[i].shape, gy->dtype, gy->storage->device, node_format(n));
}

/* gx[0] = kernel(gx shaped like the input, dense gy, ...): the common backward shape */
typedef int (*grad_kernel)(tc_node *n, const tc_kernels *k, tc_tensor *gx, tc_tensor *gy);
static int run_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx, grad_kernel fn) {
    tc_tensor *g = tc_contiguous_format(gy, node_format(n)), *r = g ? grad_like_input(n, 0, gy) : NULL;
    int rc = r ? fn(n, tc_kern(gy->storage->device), r, g) : TC_ERR;
    tc_tensor_release(g);
    if (rc != TC_OK) { tc_tensor_release(r); return TC_ERR; }
    gx[0] = r;
    return TC_OK;
}

/* ---- pooling ---------------------------------------------------------------------------------
 * PyTorch's pooling_output_shape: floor (or ceil) of the window count, where in ceil mode
 * the last window must start inside the input or its left padding */
static int64_t pooled_size(int64_t in, int k, int s, int pad, int dil, bool ceil_mode) {
    int64_t num = in + 2 * pad - (int64_t)dil * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
    if (ceil_mode && (out - 1) * s >= in + pad) out--;
    return out;
}

static int check_pool(const char *op, tc_tensor *x, const tc_pool_params *p, bool dilated, int64_t *out) {
    if (check_nchw(op, x) != TC_OK) return TC_ERR;
    for (int i = 0; i < 2; i++) {
        int dil = dilated ? p->dilation[i] : 1;
        if (p->kernel[i] < 1 || p->stride[i] < 1 || p->padding[i] < 0 || dil < 1)
            return tc_error("%s: kernel, stride and dilation must be positive and padding non-negative "
                            "(kernel %d x %d, stride %d x %d, padding %d x %d)", op, p->kernel[0], p->kernel[1],
                            p->stride[0], p->stride[1], p->padding[0], p->padding[1]);
        if (p->padding[i] > ((p->kernel[i] - 1) * dil + 1) / 2)
            return tc_error("%s: padding %d x %d is more than half the kernel %d x %d", op, p->padding[0],
                            p->padding[1], p->kernel[0], p->kernel[1]);
    }
    out[0] = x->shape[0];
    out[1] = x->shape[1];
    for (int i = 0; i < 2; i++)
        out[2 + i] = pooled_size(x->shape[2 + i], p->kernel[i], p->stride[i], p->padding[i],
                                 dilated ? p->dilation[i] : 1, p->ceil_mode);
    if (out[2] < 1 || out[3] < 1) {
        char s1[128], s2[128];
        tc_shape_str(4, out, s1, sizeof s1);
        return tc_error("%s: output size %s is not positive (input %s, kernel %d x %d, stride %d x %d, padding %d x %d)",
                        op, s1, shape_of(x, s2, sizeof s2), p->kernel[0], p->kernel[1], p->stride[0], p->stride[1],
                        p->padding[0], p->padding[1]);
    }
    return TC_OK;
}

static void save_pool(tc_node *n, const tc_pool_params *p) {
    for (int i = 0; i < 2; i++) {
        n->i[i] = p->kernel[i];
        n->i[2 + i] = p->stride[i];
        n->i[4 + i] = p->padding[i];
        n->i[6 + i] = p->dilation[i];
    }
    n->i[8] = p->ceil_mode;
    n->i[9] = p->count_include_pad;
}

static tc_pool_params load_pool(const tc_node *n) {
    tc_pool_params p;
    for (int i = 0; i < 2; i++) {
        p.kernel[i] = (int)n->i[i];
        p.stride[i] = (int)n->i[2 + i];
        p.padding[i] = (int)n->i[4 + i];
        p.dilation[i] = (int)n->i[6 + i];
    }
    p.ceil_mode = n->i[8];
    p.count_include_pad = n->i[9];
    return p;
}

static int avg_pool_grad(tc_node *n, const tc_kernels *k, tc_tensor *gx, tc_tensor *gy) {
    tc_pool_params p = load_pool(n);
    return k->avg_pool2d_backward(gx, gy, &p);
}

static int avg_pool2d_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    return run_backward(n, gy, gx, avg_pool_grad);
}

tc_tensor *tc_avg_pool2d(tc_tensor *x, const tc_pool_params *p) {
    int64_t out[4];
    if (check_pool("avg_pool2d", x, p, false, out) != TC_OK) return NULL;
    tc_memory_format f = tc_suggest_format(x);
    tc_tensor *xc = plain_contiguous(x, f);
    tc_tensor *y = xc ? tc_empty_format(4, out, x->dtype, x->storage->device, f) : NULL;
    int rc = y ? tc_kern(x->storage->device)->avg_pool2d(y, xc, p) : TC_ERR;
    tc_tensor_release(xc);
    if (rc != TC_OK) { tc_tensor_release(y); return NULL; }
    tc_node *n = tc_node_new(TC_OP_AVG_POOL2D, 1, &x, avg_pool2d_backward);
    if (n) {
        save_pool(n, p);
        n->d[FORMAT_SLOT] = f;
    }
    return tc_attach(y, n);
}

static int max_pool_grad(tc_node *n, const tc_kernels *k, tc_tensor *gx, tc_tensor *gy) {
    return k->max_pool2d_backward(gx, gy, tc_saved(n, 0));
}

static int max_pool2d_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    return run_backward(n, gy, gx, max_pool_grad);
}

tc_tensor *tc_max_pool2d(tc_tensor *x, const tc_pool_params *p) {
    int64_t out[4];
    if (check_pool("max_pool2d", x, p, true, out) != TC_OK) return NULL;
    tc_memory_format f = tc_suggest_format(x);
    tc_tensor *xc = plain_contiguous(x, f);
    tc_tensor *y = xc ? tc_empty_format(4, out, x->dtype, x->storage->device, f) : NULL;
    tc_tensor *arg = y ? tc_empty_format(4, out, TC_I64, x->storage->device, f) : NULL;
    int rc = arg ? tc_kern(x->storage->device)->max_pool2d(y, arg, xc, p) : TC_ERR;
    tc_tensor_release(xc);
    tc_node *n = rc == TC_OK ? tc_node_new(TC_OP_MAX_POOL2D, 1, &x, max_pool2d_backward) : NULL;
    if (n) {
        tc_node_save(n, arg);
        save_pool(n, p);
        n->d[FORMAT_SLOT] = f;
    }
    tc_tensor_release(arg);
    if (rc != TC_OK) { tc_tensor_release(y); return NULL; }
    return tc_attach(y, n);
}

/* ---- interpolate ------------------------------------------------------------------------------
 * nearest: PyTorch's legacy 'nearest' (src = floor(dst * in / out)); bilinear: its
 * half-pixel (align_corners false) or corner-aligned source coordinates, no antialias */
static int interpolate_grad(tc_node *n, const tc_kernels *k, tc_tensor *gx, tc_tensor *gy) {
    return k->interpolate_backward(gx, gy, (tc_interp_mode)n->i[0], n->i[1]);
}

static int interpolate_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    return run_backward(n, gy, gx, interpolate_grad);
}

tc_tensor *tc_interpolate(tc_tensor *x, int64_t out_h, int64_t out_w, tc_interp_mode mode, bool align_corners) {
    if (check_nchw("interpolate", x) != TC_OK) return NULL;
    char s[128];
    if (mode != TC_INTERP_NEAREST && mode != TC_INTERP_BILINEAR) {
        tc_error("interpolate: unknown mode %d", (int)mode);
        return NULL;
    }
    if (mode == TC_INTERP_NEAREST && align_corners) {
        tc_error("interpolate: align_corners can only be set with mode \"bilinear\"");
        return NULL;
    }
    if (out_h < 1 || out_w < 1 || x->shape[2] < 1 || x->shape[3] < 1) {
        tc_error("interpolate: input %s and output size %lld x %lld must be positive", shape_of(x, s, sizeof s),
                 (long long)out_h, (long long)out_w);
        return NULL;
    }
    int64_t out[4] = {x->shape[0], x->shape[1], out_h, out_w};
    tc_memory_format f = tc_suggest_format(x);
    tc_tensor *xc = plain_contiguous(x, f);
    tc_tensor *y = xc ? tc_empty_format(4, out, x->dtype, x->storage->device, f) : NULL;
    int rc = y ? tc_kern(x->storage->device)->interpolate(y, xc, mode, align_corners) : TC_ERR;
    tc_tensor_release(xc);
    if (rc != TC_OK) { tc_tensor_release(y); return NULL; }
    tc_node *n = tc_node_new(TC_OP_INTERPOLATE, 1, &x, interpolate_backward);
    if (n) {
        n->i[0] = mode;
        n->i[1] = align_corners;
        n->d[FORMAT_SLOT] = f;
    }
    return tc_attach(y, n);
}

/* ---- pad ----------------------------------------------------------------------------------------
 * pads: npairs (before, after) pairs from the last dim back, as torch.nn.functional.pad.
 * constant: any number of dims, negative pads crop; reflect and replicate: the last 1 or 2
 * dims. The kernels get a pair for every dim (zeros past npairs). */
static const char *pad_mode_name(tc_pad_mode m) {
    return m == TC_PAD_CONSTANT ? "constant" : m == TC_PAD_REFLECT ? "reflect" : "replicate";
}

static int pad_grad(tc_node *n, const tc_kernels *k, tc_tensor *gx, tc_tensor *gy) {
    return k->pad_backward(gx, gy, n->i, (tc_pad_mode)n->d[0]);
}

static int pad_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) { return run_backward(n, gy, gx, pad_grad); }

static int check_pad(tc_tensor *x, int npairs, const int64_t *pads, tc_pad_mode mode, int64_t *out) {
    char s[128];
    if (mode != TC_PAD_CONSTANT && mode != TC_PAD_REFLECT && mode != TC_PAD_REPLICATE)
        return tc_error("pad: unknown mode %d", (int)mode);
    if (npairs < 0 || npairs > x->ndim)
        return tc_error("pad: %d (before, after) pairs for the %d-d input %s", npairs, x->ndim, shape_of(x, s, sizeof s));
    if (mode != TC_PAD_CONSTANT) {
        if (npairs < 1 || npairs > 2)
            return tc_error("pad: %s mode pads the last 1 or 2 dims, got %d pairs", pad_mode_name(mode), npairs);
        if (!tc_dtype_is_float(x->dtype))
            return tc_error("pad: %s mode needs a floating point input, got %s", pad_mode_name(mode),
                            tc_dtype_name(x->dtype));
    }
    for (int d = 0; d < x->ndim; d++) {
        int j = x->ndim - 1 - d; /* pair index of dim d */
        int64_t before = j < npairs ? pads[2 * j] : 0, after = j < npairs ? pads[2 * j + 1] : 0;
        out[d] = x->shape[d] + before + after;
        if (out[d] < 0)
            return tc_error("pad: padding (%lld, %lld) of dim %d of %s gives a negative size", (long long)before,
                            (long long)after, d + 1, shape_of(x, s, sizeof s));
        if (mode == TC_PAD_CONSTANT || j >= npairs) continue;
        if (before < 0 || after < 0)
            return tc_error("pad: %s padding must be non-negative, got (%lld, %lld)", pad_mode_name(mode),
                            (long long)before, (long long)after);
        if (mode == TC_PAD_REFLECT && (before >= x->shape[d] || after >= x->shape[d]))
            return tc_error("pad: reflect padding (%lld, %lld) must be smaller than the dim's size %lld (input %s)",
                            (long long)before, (long long)after, (long long)x->shape[d], shape_of(x, s, sizeof s));
        if (x->shape[d] < 1 && (before > 0 || after > 0))
            return tc_error("pad: cannot %s-pad the empty dim %d of %s", pad_mode_name(mode), d + 1,
                            shape_of(x, s, sizeof s));
    }
    return TC_OK;
}

tc_tensor *tc_pad(tc_tensor *x, int npairs, const int64_t *pads, tc_pad_mode mode, double value) {
    int64_t out[TC_MAX_DIMS], all[2 * TC_MAX_DIMS] = {0};
    if (check_pad(x, npairs, pads, mode, out) != TC_OK) return NULL;
    memcpy(all, pads, (size_t)(2 * npairs) * sizeof *pads);
    /* the kernel reads any strides for a constant pad; the others walk contiguous planes */
    tc_tensor *xc = mode == TC_PAD_CONSTANT ? tc_tensor_retain(x) : plain_contiguous(x, TC_CONTIGUOUS_FORMAT);
    tc_tensor *y = xc ? tc_empty(x->ndim, out, x->dtype, x->storage->device) : NULL;
    int rc = y ? tc_kern(x->storage->device)->pad(y, xc, all, mode, value) : TC_ERR;
    tc_tensor_release(xc);
    if (rc != TC_OK) { tc_tensor_release(y); return NULL; }
    tc_node *n = tc_dtype_is_float(x->dtype) ? tc_node_new(TC_OP_PAD, 1, &x, pad_backward) : NULL;
    if (n) {
        memcpy(n->i, all, sizeof all);
        n->d[0] = mode;
    }
    return tc_attach(y, n);
}
