/* pool.c (cpu): average and max pooling, nearest and bilinear resampling, and padding
 * (constant, reflect, replicate), each with its backward. The kernels take contiguous tensors
 * and see [N, C, H, W] as N * C independent planes; channels-last ones (and f16 / bf16) go
 * through contiguous copies (correct, not tuned: channels-last is the GPU's layout). */
#include "cpu.h"
#include "pad.h"

#include <math.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- element access: f32 and f64 share one body, specialised by inlining ---------------- */
ALWAYS_INLINE double ld(const void *p, int64_t i, bool f32) {
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
ALWAYS_INLINE void st(void *p, int64_t i, double v, bool f32) {
    if (f32) ((float *)p)[i] = (float)v;
    else ((double *)p)[i] = v;
}
ALWAYS_INLINE void add_to(void *p, int64_t i, double v, bool f32) {
    if (f32) ((float *)p)[i] += (float)v;
    else ((double *)p)[i] += v;
}

/* planes worth spreading over threads: below this many elements one thread is faster */
#define PAR_MIN tc_cpu_par_min(TC_PAR_MEMORY) /* elements read + written below which one thread runs (cpu.h) */

/* ---- f16 / bf16 and channels-last: through contiguous (f32) copies ------------------------- */
static bool is_half(const tc_tensor *t) { return t->dtype != TC_F32 && t->dtype != TC_F64; }
/* a tensor the plane kernels cannot take as it is */
static bool staged(const tc_tensor *t) { return t && (is_half(t) || !tc_is_contiguous(t)); }
static tc_dtype staged_dtype(const tc_tensor *t) { return is_half(t) ? TC_F32 : t->dtype; }

/* runs fn on contiguous copies of out and in, f32 for f16 and bf16 (and copies out back); aux
 * (pads, resampling mode) passes through */
typedef int (*plane_fn)(tc_tensor *out, const tc_tensor *in, const void *aux);
static int via_copies(tc_tensor *out, const tc_tensor *in, const void *aux, plane_fn fn) {
    tc_dtype dt = staged_dtype(in);
    tc_tensor *o = tc_empty_like(out, dt), *i = tc_empty_like(in, dt);
    int rc = o && i ? TC_OK : TC_ERR;
    if (rc == TC_OK) {
        tc_cpu_copy(i, in);
        rc = fn(o, i, aux);
        if (rc == TC_OK) tc_cpu_copy(out, o);
    }
    tc_tensor_release(o);
    tc_tensor_release(i);
    return rc;
}

/* ---- average pooling (PyTorch's window and divisor rules) -------------------------------- */
typedef struct {
    int64_t H, W, OH, OW;
    const tc_pool_params *p;
} plane_geom;

static plane_geom geom_of(const tc_tensor *in, const tc_tensor *out, const tc_pool_params *p) {
    return (plane_geom){in->shape[2], in->shape[3], out->shape[2], out->shape[3], p};
}

/* window [h0, h1) x [w0, w1) clipped to the plane, and its divisor */
typedef struct { int64_t h0, h1, w0, w1; double div; } window;

static window avg_window(const plane_geom *g, int64_t oh, int64_t ow) {
    const tc_pool_params *p = g->p;
    int64_t h0 = oh * p->stride[0] - p->padding[0], w0 = ow * p->stride[1] - p->padding[1];
    int64_t h1 = h0 + p->kernel[0], w1 = w0 + p->kernel[1];
    if (h1 > g->H + p->padding[0]) h1 = g->H + p->padding[0];
    if (w1 > g->W + p->padding[1]) w1 = g->W + p->padding[1];
    int64_t full = (h1 - h0) * (w1 - w0);
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    if (h1 > g->H) h1 = g->H;
    if (w1 > g->W) w1 = g->W;
    window r = {h0, h1, w0, w1, (double)(p->count_include_pad ? full : (h1 - h0) * (w1 - w0))};
    return r;
}

ALWAYS_INLINE void avg_plane(char *y, const char *x, const plane_geom *g, bool f32) {
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            window r = avg_window(g, oh, ow);
            double s = 0;
            for (int64_t h = r.h0; h < r.h1; h++)
                for (int64_t w = r.w0; w < r.w1; w++) s += ld(x, h * g->W + w, f32);
            st(y, oh * g->OW + ow, r.h0 < r.h1 && r.w0 < r.w1 ? s / r.div : 0, f32);
        }
}

ALWAYS_INLINE void avg_plane_backward(char *gx, const char *gy, const plane_geom *g, bool f32) {
    memset(gx, 0, (size_t)(g->H * g->W) * (f32 ? sizeof(float) : sizeof(double)));
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            window r = avg_window(g, oh, ow);
            double v = ld(gy, oh * g->OW + ow, f32) / r.div;
            for (int64_t h = r.h0; h < r.h1; h++)
                for (int64_t w = r.w0; w < r.w1; w++) add_to(gx, h * g->W + w, v, f32);
        }
}

/* over the planes of in [N, C, H, W] and out [N, C, OH, OW]; backward swaps the roles */
static int avg_pool_run(tc_tensor *out, const tc_tensor *in, const void *aux, bool backward) {
    const tc_pool_params *p = aux;
    plane_geom g = backward ? geom_of(out, in, p) : geom_of(in, out, p);
    int64_t planes = in->shape[0] * in->shape[1], isz = in->shape[2] * in->shape[3];
    int64_t osz = out->shape[2] * out->shape[3];
    size_t es = tc_dtype_size(in->dtype);
    bool f32 = in->dtype == TC_F32;
    const char *id = tc_data(in);
    char *od = tc_data(out);
#pragma omp parallel for if (planes * (isz + osz) > PAR_MIN)
    for (int64_t k = 0; k < planes; k++) {
        char *o = od + k * osz * (int64_t)es;
        const char *i = id + k * isz * (int64_t)es;
        if (backward) {
            if (f32) avg_plane_backward(o, i, &g, true);
            else avg_plane_backward(o, i, &g, false);
        } else if (f32) avg_plane(o, i, &g, true);
        else avg_plane(o, i, &g, false);
    }
    return TC_OK;
}

static int avg_forward(tc_tensor *y, const tc_tensor *x, const void *p) { return avg_pool_run(y, x, p, false); }
static int avg_backward(tc_tensor *gx, const tc_tensor *gy, const void *p) { return avg_pool_run(gx, gy, p, true); }

int tc_cpu_avg_pool2d(tc_tensor *y, const tc_tensor *x, const tc_pool_params *p) {
    return staged(x) || staged(y) ? via_copies(y, x, p, avg_forward) : avg_forward(y, x, p);
}

int tc_cpu_avg_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_pool_params *p) {
    return staged(gy) || staged(gx) ? via_copies(gx, gy, p, avg_backward) : avg_backward(gx, gy, p);
}

/* ---- max pooling: argmax holds 1-based offsets h * W + w + 1 within each plane (0: an
 * empty window, which takes no gradient) -------------------------------------------------- */
ALWAYS_INLINE void max_plane(char *y, int64_t *arg, const char *x, const plane_geom *g, bool f32) {
    const tc_pool_params *p = g->p;
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            int64_t h0 = oh * p->stride[0] - p->padding[0], w0 = ow * p->stride[1] - p->padding[1];
            int64_t h1 = h0 + (p->kernel[0] - 1) * p->dilation[0] + 1, w1 = w0 + (p->kernel[1] - 1) * p->dilation[1] + 1;
            if (h1 > g->H) h1 = g->H;
            if (w1 > g->W) w1 = g->W;
            while (h0 < 0) h0 += p->dilation[0];
            while (w0 < 0) w0 += p->dilation[1];
            double best = -INFINITY;
            int64_t at = 0;
            for (int64_t h = h0; h < h1; h += p->dilation[0])
                for (int64_t w = w0; w < w1; w += p->dilation[1]) {
                    double v = ld(x, h * g->W + w, f32);
                    if (v > best || isnan(v) || at == 0) { best = v; at = h * g->W + w + 1; }
                }
            st(y, oh * g->OW + ow, best, f32);
            arg[oh * g->OW + ow] = at;
        }
}

typedef struct { const tc_pool_params *p; tc_tensor *argmax; } max_aux;

static int max_forward(tc_tensor *y, const tc_tensor *x, const void *aux) {
    const max_aux *a = aux;
    plane_geom g = geom_of(x, y, a->p);
    int64_t planes = x->shape[0] * x->shape[1], isz = g.H * g.W, osz = g.OH * g.OW;
    size_t es = tc_dtype_size(x->dtype);
    bool f32 = x->dtype == TC_F32;
    const char *xd = tc_data(x);
    char *yd = tc_data(y);
    int64_t *ad = tc_data(a->argmax);
#pragma omp parallel for if (planes * (isz + osz) > PAR_MIN)
    for (int64_t k = 0; k < planes; k++) {
        char *yk = yd + k * osz * (int64_t)es;
        const char *xk = xd + k * isz * (int64_t)es;
        if (f32) max_plane(yk, ad + k * osz, xk, &g, true);
        else max_plane(yk, ad + k * osz, xk, &g, false);
    }
    return TC_OK;
}

static int max_backward(tc_tensor *gx, const tc_tensor *gy, const void *argmax) {
    const tc_tensor *arg = argmax;
    int64_t planes = gx->shape[0] * gx->shape[1], isz = gx->shape[2] * gx->shape[3];
    int64_t osz = gy->shape[2] * gy->shape[3];
    size_t es = tc_dtype_size(gx->dtype);
    bool f32 = gx->dtype == TC_F32;
    const char *gyd = tc_data(gy);
    char *gxd = tc_data(gx);
    const int64_t *ad = tc_data(arg);
    memset(gxd, 0, (size_t)(planes * isz) * es);
#pragma omp parallel for if (planes * (isz + osz) > PAR_MIN)
    for (int64_t k = 0; k < planes; k++) {
        char *gk = gxd + k * isz * (int64_t)es;
        const char *yk = gyd + k * osz * (int64_t)es;
        const int64_t *a = ad + k * osz;
        for (int64_t i = 0; i < osz; i++)
            if (a[i] > 0) {
                if (f32) ((float *)gk)[a[i] - 1] += ((const float *)yk)[i];
                else ((double *)gk)[a[i] - 1] += ((const double *)yk)[i];
            }
    }
    return TC_OK;
}

/* a channels-last argmax (laid out as y) goes through a contiguous copy too */
int tc_cpu_max_pool2d(tc_tensor *y, tc_tensor *argmax, const tc_tensor *x, const tc_pool_params *p) {
    if (tc_is_contiguous(argmax)) {
        max_aux a = {p, argmax};
        return staged(x) || staged(y) ? via_copies(y, x, &a, max_forward) : max_forward(y, x, &a);
    }
    tc_tensor *ac = tc_empty_like(argmax, TC_I64);
    int rc = ac ? tc_cpu_max_pool2d(y, ac, x, p) : TC_ERR;
    if (rc == TC_OK) rc = tc_cpu_copy(argmax, ac);
    tc_tensor_release(ac);
    return rc;
}

int tc_cpu_max_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *argmax) {
    if (tc_is_contiguous(argmax))
        return staged(gy) || staged(gx) ? via_copies(gx, gy, argmax, max_backward) : max_backward(gx, gy, argmax);
    tc_tensor *ac = tc_empty_like(argmax, TC_I64);
    int rc = ac ? tc_cpu_copy(ac, argmax) : TC_ERR;
    if (rc == TC_OK) rc = tc_cpu_max_pool2d_backward(gx, gy, ac);
    tc_tensor_release(ac);
    return rc;
}

/* ---- resampling: per output row and column, the source rows/columns and their weights,
 * computed in the tensor's precision with PyTorch's formulas ---------------------------- */
typedef struct { int64_t i0, i1; double l0, l1; } taps;

/* legacy 'nearest': src = floor(dst * in / out), in float as PyTorch computes it */
static int64_t nearest_src(int64_t dst, int64_t in, int64_t out) {
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    float scale = (float)in / (float)out;
    int64_t s = (int64_t)floorf((float)dst * scale);
    return s < in - 1 ? s : in - 1;
}

/* PyTorch's area_pixel_compute_source_index, then the two neighbours and their weights */
static taps linear_src(int64_t dst, int64_t in, int64_t out, bool align_corners, bool f32) {
    double src;
    if (f32) {
        float scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.f) : (float)in / (float)out;
        float s = align_corners ? scale * (float)dst : scale * ((float)dst + 0.5f) - 0.5f;
        src = s < 0 ? 0 : s;
    } else {
        double scale = align_corners ? (out > 1 ? (double)(in - 1) / (double)(out - 1) : 0) : (double)in / (double)out;
        src = align_corners ? scale * (double)dst : scale * ((double)dst + 0.5) - 0.5;
        if (src < 0) src = 0;
    }
    taps t;
    t.i0 = (int64_t)floor(src);
    if (t.i0 > in - 1) t.i0 = in - 1;
    double l = src - (double)t.i0; /* exact: a float's fractional part is a float */
    t.l1 = l < 0 ? 0 : l > 1 ? 1 : l;
    t.l0 = 1 - t.l1;
    t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
    return t;
}

static taps *make_taps(int64_t in, int64_t out, tc_interp_mode mode, bool align_corners, bool f32) {
    taps *t = malloc((size_t)out * sizeof *t);
    if (!t) return NULL;
    for (int64_t d = 0; d < out; d++) {
        if (mode == TC_INTERP_NEAREST) t[d] = (taps){nearest_src(d, in, out), 0, 1, 0};
        else t[d] = linear_src(d, in, out, align_corners, f32);
    }
    return t;
}

ALWAYS_INLINE void interp_plane(char *y, const char *x, const taps *th, const taps *tw, int64_t OH, int64_t OW,
                                int64_t W, bool nearest, bool f32) {
    for (int64_t oh = 0; oh < OH; oh++) {
        if (nearest && oh > 0 && th[oh].i0 == th[oh - 1].i0) { /* the row above again (upsampling) */
            memcpy(y + oh * OW * (f32 ? 4 : 8), y + (oh - 1) * OW * (f32 ? 4 : 8), (size_t)OW * (f32 ? 4 : 8));
            continue;
        }
        const char *r0 = x + th[oh].i0 * W * (f32 ? 4 : 8), *r1 = x + th[oh].i1 * W * (f32 ? 4 : 8);
        for (int64_t ow = 0; ow < OW; ow++) {
            const taps *c = &tw[ow];
            if (nearest) {
                st(y, oh * OW + ow, ld(r0, c->i0, f32), f32);
                continue;
            }
            double top = c->l0 * ld(r0, c->i0, f32) + c->l1 * ld(r0, c->i1, f32);
            double bot = c->l0 * ld(r1, c->i0, f32) + c->l1 * ld(r1, c->i1, f32);
            st(y, oh * OW + ow, th[oh].l0 * top + th[oh].l1 * bot, f32);
        }
    }
}

ALWAYS_INLINE void interp_plane_backward(char *gx, const char *gy, const taps *th, const taps *tw, int64_t OH,
                                         int64_t OW, int64_t H, int64_t W, bool nearest, bool f32) {
    memset(gx, 0, (size_t)(H * W) * (f32 ? 4 : 8));
    for (int64_t oh = 0; oh < OH; oh++) {
        char *r0 = gx + th[oh].i0 * W * (f32 ? 4 : 8), *r1 = gx + th[oh].i1 * W * (f32 ? 4 : 8);
        for (int64_t ow = 0; ow < OW; ow++) {
            const taps *c = &tw[ow];
            double g = ld(gy, oh * OW + ow, f32);
            if (nearest) {
                add_to(r0, c->i0, g, f32);
                continue;
            }
            double g0 = th[oh].l0 * g, g1 = th[oh].l1 * g;
            add_to(r0, c->i0, c->l0 * g0, f32);
            add_to(r0, c->i1, c->l1 * g0, f32);
            add_to(r1, c->i0, c->l0 * g1, f32);
            add_to(r1, c->i1, c->l1 * g1, f32);
        }
    }
}

typedef struct { tc_interp_mode mode; bool align_corners; } interp_aux;

/* forward: out = y [N, C, OH, OW], in = x [N, C, H, W]; backward: out = gx, in = gy */
static int interp_run(tc_tensor *out, const tc_tensor *in, const void *aux, bool backward) {
    const interp_aux *a = aux;
    const tc_tensor *x = backward ? out : in, *y = backward ? in : out;
    int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    int64_t planes = x->shape[0] * x->shape[1];
    bool f32 = in->dtype == TC_F32, nearest = a->mode == TC_INTERP_NEAREST;
    taps *th = make_taps(H, OH, a->mode, a->align_corners, f32), *tw = make_taps(W, OW, a->mode, a->align_corners, f32);
    if (!th || !tw) {
        free(th);
        free(tw);
        return tc_error("interpolate: out of memory");
    }
    size_t es = tc_dtype_size(in->dtype);
    const char *id = tc_data(in);
    char *od = tc_data(out);
    int64_t isz = in->shape[2] * in->shape[3], osz = out->shape[2] * out->shape[3];
#pragma omp parallel for if (planes * (isz + osz) > PAR_MIN)
    for (int64_t k = 0; k < planes; k++) {
        char *o = od + k * osz * (int64_t)es;
        const char *i = id + k * isz * (int64_t)es;
        if (backward) {
            if (f32) interp_plane_backward(o, i, th, tw, OH, OW, H, W, nearest, true);
            else interp_plane_backward(o, i, th, tw, OH, OW, H, W, nearest, false);
        } else if (f32) interp_plane(o, i, th, tw, OH, OW, W, nearest, true);
        else interp_plane(o, i, th, tw, OH, OW, W, nearest, false);
    }
    free(th);
    free(tw);
    return TC_OK;
}

static int interp_forward(tc_tensor *y, const tc_tensor *x, const void *a) { return interp_run(y, x, a, false); }
static int interp_backward(tc_tensor *gx, const tc_tensor *gy, const void *a) { return interp_run(gx, gy, a, true); }

int tc_cpu_interpolate(tc_tensor *y, const tc_tensor *x, tc_interp_mode mode, bool align_corners) {
    interp_aux a = {mode, align_corners};
    return staged(x) || staged(y) ? via_copies(y, x, &a, interp_forward) : interp_forward(y, x, &a);
}

int tc_cpu_interpolate_backward(tc_tensor *gx, const tc_tensor *gy, tc_interp_mode mode, bool align_corners) {
    interp_aux a = {mode, align_corners};
    return staged(gy) || staged(gx) ? via_copies(gx, gy, &a, interp_backward) : interp_backward(gx, gy, &a);
}

/* ---- padding: pads holds (before, after) for every dim, from the last dim back ----------- */
/* constant: fill out with value, then copy the overlap of in (cropped where pads are
 * negative) into place. The backward is the same with the pads negated and value 0. */
static int pad_constant(tc_tensor *out, const tc_tensor *in, const int64_t *pads, int sign, double value) {
    int nd = in->ndim;
    int64_t shape[TC_MAX_DIMS], ioff = in->offset, ooff = out->offset;
    bool empty = false;
    for (int d = 0; d < nd; d++) {
        int64_t before = sign * pads[2 * (nd - 1 - d)], after = sign * pads[2 * (nd - 1 - d) + 1];
        int64_t from = before < 0 ? -before : 0, to = before > 0 ? before : 0;
        shape[d] = in->shape[d] - from - (after < 0 ? -after : 0);
        if (shape[d] <= 0) empty = true;
        ioff += from * in->stride[d];
        ooff += to * out->stride[d];
    }
    if (tc_cpu_fill(out, value) != TC_OK) return TC_ERR;
    if (empty) return TC_OK;
    tc_tensor *src = tc_tensor_make(in->storage, in->dtype, nd, shape, in->stride, ioff);
    tc_tensor *dst = tc_tensor_make(out->storage, out->dtype, nd, shape, out->stride, ooff);
    int rc = src && dst ? tc_cpu_copy(dst, src) : TC_ERR;
    tc_tensor_release(src);
    tc_tensor_release(dst);
    return rc;
}

ALWAYS_INLINE void pad_plane(char *y, const char *x, const tc_pad_geom *g, bool backward, bool f32) {
    size_t es = f32 ? 4 : 8;
    if (backward) memset(y, 0, (size_t)(g->H * g->W) * es); /* here y is gx [H, W], x is gy */
    for (int64_t oh = 0; oh < g->OH; oh++) {
        int64_t ih = tc_pad_src(oh, g->top, g->H, g->mode);
        for (int64_t ow = 0; ow < g->OW; ow++) {
            int64_t iw = tc_pad_src(ow, g->left, g->W, g->mode);
            if (backward) add_to(y, ih * g->W + iw, ld(x, oh * g->OW + ow, f32), f32);
            else st(y, oh * g->OW + ow, ld(x, ih * g->W + iw, f32), f32);
        }
    }
}

typedef struct { const int64_t *pads; tc_pad_mode mode; double value; } pad_aux;

static int pad_run(tc_tensor *out, const tc_tensor *in, const void *aux, bool backward) {
    const pad_aux *a = aux;
    if (a->mode == TC_PAD_CONSTANT) return pad_constant(out, in, a->pads, backward ? -1 : 1, backward ? 0 : a->value);
    tc_pad_geom g = backward ? tc_pad_geom_of(out, in, a->pads, a->mode) : tc_pad_geom_of(in, out, a->pads, a->mode);
    size_t es = tc_dtype_size(in->dtype);
    bool f32 = in->dtype == TC_F32;
    const char *id = tc_data(in);
    char *od = tc_data(out);
    int64_t isz = backward ? g.OH * g.OW : g.H * g.W, osz = backward ? g.H * g.W : g.OH * g.OW;
#pragma omp parallel for if (g.B * (isz + osz) > PAR_MIN)
    for (int64_t k = 0; k < g.B; k++) {
        char *o = od + k * osz * (int64_t)es;
        const char *i = id + k * isz * (int64_t)es;
        if (f32) pad_plane(o, i, &g, backward, true);
        else pad_plane(o, i, &g, backward, false);
    }
    return TC_OK;
}

static int pad_forward(tc_tensor *y, const tc_tensor *x, const void *a) { return pad_run(y, x, a, false); }
static int pad_backward(tc_tensor *gx, const tc_tensor *gy, const void *a) { return pad_run(gx, gy, a, true); }

int tc_cpu_pad(tc_tensor *y, const tc_tensor *x, const int64_t *pads, tc_pad_mode mode, double value) {
    pad_aux a = {pads, mode, value};
    /* a constant pad is a fill and a strided copy, which handle every dtype */
    return is_half(x) && mode != TC_PAD_CONSTANT ? via_copies(y, x, &a, pad_forward) : pad_forward(y, x, &a);
}

int tc_cpu_pad_backward(tc_tensor *gx, const tc_tensor *gy, const int64_t *pads, tc_pad_mode mode) {
    pad_aux a = {pads, mode, 0};
    return is_half(gy) && mode != TC_PAD_CONSTANT ? via_copies(gx, gy, &a, pad_backward) : pad_backward(gx, gy, &a);
}
