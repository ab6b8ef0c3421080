/* transform.c: image transforms on u8 [H, W, C] pixels (resize as PIL does it, crops, flips,
 * u8 <-> float) and the pipeline that chains them for the data loader. Pixels are read
 * through a view with a signed pixel stride, so crops and flips cost nothing and a resize
 * followed by a crop computes only the pixels the crop keeps. */
#include "tocha.h"
#include "tocha_io.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- views ---------------------------------------------------------------------------------
 * p points at pixel (0, 0); channels are contiguous; sx is negative in a flipped view */
typedef struct {
    const uint8_t *p;
    int64_t h, w, c;
    int64_t sy, sx;
} view;

static int shape_error(const char *op, const tc_tensor *t) {
    char s[64];
    tc_shape_str(t->ndim, t->shape, s, sizeof s);
    return tc_error("%s: expected a u8 [H, W, C] image, got %s %s", op, tc_dtype_name(t->dtype), s);
}

/* a view of img; *hold receives a contiguous copy when the channels are not contiguous */
static int view_of(tc_tensor *img, view *v, tc_tensor **hold, const char *op) {
    *hold = NULL;
    if (img->dtype != TC_U8 || (img->ndim != 3 && img->ndim != 2)) return shape_error(op, img);
    if (img->storage->device.type != TC_CPU) return tc_error("%s: images are processed on the CPU (use :to(\"cpu\"))", op);
    int64_t c = img->ndim == 3 ? img->shape[2] : 1;
    if (c < 1 || c > 4) return shape_error(op, img);
    if (img->ndim == 3 && c > 1 && img->stride[2] != 1) {
        if (!(*hold = tc_contiguous(img))) return TC_ERR;
        img = *hold;
    }
    v->p = tc_data(img);
    v->h = img->shape[0];
    v->w = img->shape[1];
    v->c = c;
    v->sy = img->stride[0];
    v->sx = img->stride[1];
    return TC_OK;
}

static view view_image(tc_tensor *img) {
    view v = {tc_data(img), img->shape[0], img->shape[1], img->shape[2], img->shape[1] * img->shape[2], img->shape[2]};
    return v;
}

static tc_tensor *new_image(int64_t h, int64_t w, int64_t c) {
    int64_t shape[3] = {h, w, c};
    return tc_empty(3, shape, TC_U8, TC_DEV_CPU);
}

static view crop_view(view v, int64_t top, int64_t left, int64_t h, int64_t w) {
    v.p += top * v.sy + left * v.sx;
    v.h = h;
    v.w = w;
    return v;
}

static view flip_view(view v) {
    v.p += (v.w - 1) * v.sx;
    v.sx = -v.sx;
    return v;
}

/* copies v into a contiguous [h, w, c] buffer */
static void copy_view(view v, uint8_t *out) {
    for (int64_t y = 0; y < v.h; y++) {
        const uint8_t *row = v.p + y * v.sy;
        if (v.sx == v.c) { memcpy(out, row, (size_t)(v.w * v.c)); out += v.w * v.c; continue; }
        for (int64_t x = 0; x < v.w; x++, out += v.c) memcpy(out, row + x * v.sx, (size_t)v.c);
    }
}

/* ---- resampling: PIL's Resample.c (precompute_coeffs, 8-bit fixed point) -------------------- */
typedef struct {
    double (*f)(double x);
    double support;
} filter;

static double box_f(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }
static double triangle_f(double x) { x = fabs(x); return x < 1.0 ? 1.0 - x : 0.0; }
static double bicubic_f(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}
static double sinc(double x) { return x == 0.0 ? 1.0 : sin(M_PI * x) / (M_PI * x); }
static double lanczos_f(double x) { return x >= -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0; }

static const filter filters[] = {
    [TC_RESIZE_BILINEAR] = {triangle_f, 1.0}, [TC_RESIZE_BICUBIC] = {bicubic_f, 2.0},
    [TC_RESIZE_AREA] = {box_f, 0.5},          [TC_RESIZE_LANCZOS] = {lanczos_f, 3.0},
};

#define PRECISION_BITS (32 - 8 - 2)

/* taps for outputs [o0, o0 + n) of a resize of `in` samples to `out`: output j reads inputs
 * bounds[2j] .. bounds[2j] + bounds[2j+1] - 1 with fixed-point weights kk[j * ksize ..] */
typedef struct {
    int ksize;
    int *bounds;
    int32_t *kk;
    double *kd;   /* the same weights before rounding, when asked for (float images) */
} taps;

static int make_taps(taps *t, int64_t in, int64_t out, int64_t o0, int64_t n, const filter *fl, bool antialias,
                     bool keep_double) {
    double scale = (double)in / (double)out, fscale = scale < 1.0 || !antialias ? 1.0 : scale;
    double support = fl->support * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    t->ksize = ksize;
    t->bounds = malloc(sizeof(int) * 2 * (size_t)n);
    t->kk = malloc(sizeof(int32_t) * (size_t)(n * ksize));
    t->kd = keep_double ? malloc(sizeof(double) * (size_t)(n * ksize)) : NULL;
    double *k = malloc(sizeof(double) * (size_t)ksize);
    if (!t->bounds || !t->kk || !k || (keep_double && !t->kd)) {
        free(t->bounds); free(t->kk); free(t->kd); free(k);
        t->bounds = NULL; t->kk = NULL; t->kd = NULL;
        return tc_error("resize: out of memory");
    }
    for (int64_t j = 0; j < n; j++) {
        double center = ((double)(o0 + j) + 0.5) * scale, ww = 0.0, ss = 1.0 / fscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = (int)in;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            k[x] = fl->f((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        int32_t *kj = t->kk + j * ksize;
        for (int x = 0; x < ksize; x++) {
            double w = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
            kj[x] = (int32_t)(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
            if (t->kd) t->kd[j * ksize + x] = w;
        }
        t->bounds[2 * j] = xmin;
        t->bounds[2 * j + 1] = xmax;
    }
    free(k);
    return TC_OK;
}

static void free_taps(taps *t) { free(t->bounds); free(t->kk); free(t->kd); }

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* out[y][j] = sum_x in[y][bounds + x] * k[x]: rows of v, columns through the taps.
 * C is the channel count when known at compile time (3, with unit pixel stride), else 0 */
static inline void resample_h_rows(view v, const taps *t, int64_t nout, uint8_t *restrict out, const int C) {
    const int64_t c = C ? C : v.c, sx = C ? C : v.sx;
    const int32_t half = 1 << (PRECISION_BITS - 1);
    for (int64_t y = 0; y < v.h; y++) {
        const uint8_t *restrict row = v.p + y * v.sy;
        uint8_t *restrict o = out + y * nout * c;
        for (int64_t j = 0; j < nout; j++, o += c) {
            const int32_t *restrict k = t->kk + j * t->ksize;
            const uint8_t *restrict px = row + (int64_t)t->bounds[2 * j] * sx;
            const int n = t->bounds[2 * j + 1];
            if (C == 3) {
                int32_t s0 = half, s1 = half, s2 = half;
                for (int x = 0; x < n; x++) {
                    s0 += px[3 * x] * k[x];
                    s1 += px[3 * x + 1] * k[x];
                    s2 += px[3 * x + 2] * k[x];
                }
                o[0] = clip8(s0); o[1] = clip8(s1); o[2] = clip8(s2);
            } else {
                int32_t s[4] = {half, half, half, half};
                for (int x = 0; x < n; x++, px += sx)
                    for (int ch = 0; ch < c; ch++) s[ch] += px[ch] * k[x];
                for (int ch = 0; ch < c; ch++) o[ch] = clip8(s[ch]);
            }
        }
    }
}

static void resample_h(view v, const taps *t, int64_t nout, uint8_t *out) {
    if (v.c == 3 && v.sx == 3) resample_h_rows(v, t, nout, out, 3);
    else resample_h_rows(v, t, nout, out, 0);
}

/* out[i] = sum_y in[bounds + y] * k[y], rows of v combined through the taps */
static void resample_v(view v, const taps *t, int64_t nout, uint8_t *out) {
    const int64_t c = v.c, rowlen = v.w * c;
    const int32_t half = 1 << (PRECISION_BITS - 1);
    int32_t *restrict acc = malloc(sizeof(int32_t) * (size_t)rowlen);
    for (int64_t i = 0; i < nout; i++) {
        const int32_t *k = t->kk + i * t->ksize;
        int n = t->bounds[2 * i + 1];
        const uint8_t *r0 = v.p + (int64_t)t->bounds[2 * i] * v.sy;
        uint8_t *restrict o = out + i * rowlen;
        if (!acc || v.sx != c) { /* strided rows: per pixel */
            for (int64_t x = 0; x < v.w; x++)
                for (int ch = 0; ch < c; ch++) {
                    int32_t s = half;
                    for (int y = 0; y < n; y++) s += r0[y * v.sy + x * v.sx + ch] * k[y];
                    o[x * c + ch] = clip8(s);
                }
            continue;
        }
        /* contiguous rows: accumulate whole rows, vectorised */
#pragma omp simd
        for (int64_t x = 0; x < rowlen; x++) acc[x] = half;
        for (int y = 0; y < n; y++) {
            const uint8_t *restrict r = r0 + y * v.sy;
            const int32_t ky = k[y];
#pragma omp simd
            for (int64_t x = 0; x < rowlen; x++) acc[x] += r[x] * ky;
        }
#pragma omp simd
        for (int64_t x = 0; x < rowlen; x++) o[x] = clip8(acc[x]);
    }
    free(acc);
}

/* nearest: source = floor((out + 0.5) * in / out), as PIL's NEAREST */
static void resample_nearest(view v, int64_t H, int64_t W, int64_t y0, int64_t x0, int64_t h, int64_t w, uint8_t *out) {
    for (int64_t i = 0; i < h; i++) {
        int64_t sy = (int64_t)(((double)(y0 + i) + 0.5) * (double)v.h / (double)H);
        for (int64_t j = 0; j < w; j++) {
            int64_t sx = (int64_t)(((double)(x0 + j) + 0.5) * (double)v.w / (double)W);
            memcpy(out + (i * w + j) * v.c, v.p + sy * v.sy + sx * v.sx, (size_t)v.c);
        }
    }
}

/* the window [y0, y0 + h) x [x0, x0 + w) of v resized to H x W: PIL's order, horizontal pass
 * first into an 8-bit intermediate of only the rows the vertical pass reads */
static tc_tensor *resize_window(view v, int64_t H, int64_t W, int64_t y0, int64_t x0, int64_t h, int64_t w,
                                tc_resize_mode mode, bool antialias) {
    tc_tensor *out = new_image(h, w, v.c);
    if (!out) return NULL;
    uint8_t *o = tc_data(out);
    if (mode == TC_RESIZE_NEAREST) { resample_nearest(v, H, W, y0, x0, h, w, o); return out; }
    const filter *fl = &filters[mode];
    bool need_h = W != v.w, need_v = H != v.h;
    taps th = {0}, tv = {0};
    if (need_v && make_taps(&tv, v.h, H, y0, h, fl, antialias, false) != TC_OK) goto fail;
    if (need_h && make_taps(&th, v.w, W, x0, w, fl, antialias, false) != TC_OK) goto fail;
    view src = need_v ? v : crop_view(v, y0, 0, h, v.w);
    if (need_v) { /* only the input rows the vertical taps read */
        int first = tv.bounds[0], last = 0;
        for (int64_t i = 0; i < h; i++) {
            int e = tv.bounds[2 * i] + tv.bounds[2 * i + 1];
            if (e > last) last = e;
            if (tv.bounds[2 * i] < first) first = tv.bounds[2 * i];
        }
        if (last < first) last = first;
        src = crop_view(v, first, 0, last - first, v.w);
        for (int64_t i = 0; i < h; i++) tv.bounds[2 * i] -= first;
    }
    if (need_h && need_v) {
        uint8_t *tmp = malloc((size_t)(src.h * w * v.c) + 1);
        if (!tmp) { tc_error("resize: out of memory"); goto fail; }
        resample_h(src, &th, w, tmp);
        view mid = {tmp, src.h, w, v.c, w * v.c, v.c};
        resample_v(mid, &tv, h, o);
        free(tmp);
    } else if (need_h) resample_h(src, &th, w, o);
    else if (need_v) resample_v(crop_view(src, 0, x0, src.h, w), &tv, h, o);
    else copy_view(crop_view(src, 0, x0, h, w), o);
    free_taps(&th);
    free_taps(&tv);
    return out;
fail:
    free_taps(&th);
    free_taps(&tv);
    tc_tensor_release(out);
    return NULL;
}

/* ---- single transforms ------------------------------------------------------------------------ */
static bool valid_mode(tc_resize_mode m) { return m >= TC_RESIZE_NEAREST && m <= TC_RESIZE_LANCZOS; }

tc_tensor *tc_image_resize(tc_tensor *img, int64_t h, int64_t w, tc_resize_mode mode, bool antialias) {
    view v;
    tc_tensor *hold;
    if (view_of(img, &v, &hold, "resize") != TC_OK) return NULL;
    tc_tensor *out = NULL;
    if (h < 1 || w < 1 || h > 65535 || w > 65535) tc_error("resize: size %lld x %lld out of range (1 to 65535)", (long long)h, (long long)w);
    else if (!valid_mode(mode)) tc_error("resize: unknown mode %d", (int)mode);
    else if (v.h < 1 || v.w < 1) tc_error("resize: the image is empty (%lld x %lld)", (long long)v.h, (long long)v.w);
    else out = resize_window(v, h, w, 0, 0, h, w, mode, antialias);
    tc_tensor_release(hold);
    if (out && img->ndim == 2) { /* keep the caller's layout */
        tc_tensor *o2 = tc_view(out, 2, out->shape);
        tc_tensor_release(out);
        out = o2;
    }
    return out;
}

/* ---- resizing in floating point: PIL's mode "F" ---------------------------------------------
 * clean-fid resizes each channel as a float image: the filters and taps of the 8-bit path, but
 * weights kept in double, sums in double and each pass stored as float. Channels are planar. */

/* rows [first, first + nrows) of channel ch, resampled across to W columns (or copied) */
static void resample_h_float(view v, int64_t ch, int64_t first, int64_t nrows, const taps *t, int64_t W, float *out) {
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = v.p + (first + r) * v.sy + ch;
        float *o = out + r * W;
        if (!t) {
            for (int64_t x = 0; x < W; x++) o[x] = row[x * v.sx];
            continue;
        }
        for (int64_t j = 0; j < W; j++) {
            const double *k = t->kd + j * t->ksize;
            const uint8_t *px = row + (int64_t)t->bounds[2 * j] * v.sx;
            double ss = 0.0;
            for (int x = 0; x < t->bounds[2 * j + 1]; x++) ss += (double)(float)px[x * v.sx] * k[x];
            o[j] = (float)ss;
        }
    }
}

/* out[i] = sum_y in[bounds_i + y] * k[y] over rows of W floats, accumulated a row at a time */
static void resample_v_float(const float *in, const taps *t, int64_t H, int64_t W, double *acc, float *out) {
    for (int64_t i = 0; i < H; i++) {
        const double *k = t->kd + i * t->ksize;
        const float *r0 = in + (int64_t)t->bounds[2 * i] * W;
        for (int64_t x = 0; x < W; x++) acc[x] = 0.0;
        for (int y = 0; y < t->bounds[2 * i + 1]; y++) {
            const float *restrict r = r0 + y * W;
            const double ky = k[y];
#pragma omp simd
            for (int64_t x = 0; x < W; x++) acc[x] += (double)r[x] * ky;
        }
        for (int64_t x = 0; x < W; x++) out[i * W + x] = (float)acc[x];
    }
}

tc_tensor *tc_image_resize_float(tc_tensor *img, int64_t h, int64_t w, tc_resize_mode mode, bool antialias) {
    view v;
    tc_tensor *hold;
    if (view_of(img, &v, &hold, "resize_float") != TC_OK) return NULL;
    if (h < 1 || w < 1 || h > 65535 || w > 65535 || !valid_mode(mode) || v.h < 1 || v.w < 1) {
        tc_tensor_release(hold);
        if (!valid_mode(mode)) tc_error("resize_float: unknown mode %d", (int)mode);
        else tc_error("resize_float: cannot resize a %lld x %lld image to %lld x %lld", (long long)v.h, (long long)v.w,
                      (long long)h, (long long)w);
        return NULL;
    }
    int64_t shape[3] = {v.c, h, w};
    tc_tensor *out = tc_empty(3, shape, TC_F32, TC_DEV_CPU);
    float *o = out ? tc_data(out) : NULL;
    if (out && mode == TC_RESIZE_NEAREST) { /* PIL's source pixel: floor((out + 0.5) * in / out) */
        for (int64_t ch = 0; ch < v.c; ch++)
            for (int64_t i = 0; i < h; i++) {
                int64_t sy = (int64_t)(((double)i + 0.5) * (double)v.h / (double)h);
                for (int64_t j = 0; j < w; j++) {
                    int64_t sx = (int64_t)(((double)j + 0.5) * (double)v.w / (double)w);
                    o[(ch * h + i) * w + j] = v.p[sy * v.sy + sx * v.sx + ch];
                }
            }
        tc_tensor_release(hold);
        return out;
    }
    const filter *fl = &filters[mode];
    bool need_h = w != v.w, need_v = h != v.h;
    taps th = {0}, tv = {0};
    int rc = out ? TC_OK : TC_ERR;
    if (rc == TC_OK && need_v) rc = make_taps(&tv, v.h, h, 0, h, fl, antialias, true);
    if (rc == TC_OK && need_h) rc = make_taps(&th, v.w, w, 0, w, fl, antialias, true);
    /* the vertical pass reads input rows [first, last) only, as PIL's */
    int64_t first = 0, last = v.h;
    if (rc == TC_OK && need_v) {
        first = tv.bounds[0];
        last = 0;
        for (int64_t i = 0; i < h; i++) {
            if (tv.bounds[2 * i] < first) first = tv.bounds[2 * i];
            if (tv.bounds[2 * i] + tv.bounds[2 * i + 1] > last) last = tv.bounds[2 * i] + tv.bounds[2 * i + 1];
        }
        if (last < first) last = first;
        for (int64_t i = 0; i < h; i++) tv.bounds[2 * i] -= (int)first;
    }
    float *mid = rc == TC_OK && need_v ? malloc(sizeof(float) * (size_t)((last - first) * w + 1)) : NULL;
    double *acc = rc == TC_OK && need_v ? malloc(sizeof(double) * (size_t)w) : NULL;
    if (rc == TC_OK && need_v && (!mid || !acc)) rc = tc_error("resize_float: out of memory");
    for (int64_t ch = 0; rc == TC_OK && ch < v.c; ch++) {
        float *plane = o + ch * h * w;
        if (!need_v) { resample_h_float(v, ch, 0, h, need_h ? &th : NULL, w, plane); continue; }
        resample_h_float(v, ch, first, last - first, need_h ? &th : NULL, w, mid);
        resample_v_float(mid, &tv, h, w, acc, plane);
    }
    free(mid);
    free(acc);
    free_taps(&th);
    free_taps(&tv);
    tc_tensor_release(hold);
    if (rc != TC_OK) {
        tc_tensor_release(out);
        return NULL;
    }
    return out;
}

static int check_window(const char *op, int64_t H, int64_t W, int64_t top, int64_t left, int64_t h, int64_t w) {
    if (h < 1 || w < 1 || top < 0 || left < 0 || top + h > H || left + w > W)
        return tc_error("%s: window %lld x %lld at (%lld, %lld) does not fit in the %lld x %lld image", op,
                        (long long)h, (long long)w, (long long)top + 1, (long long)left + 1, (long long)H, (long long)W);
    return TC_OK;
}

static tc_tensor *materialize(view v, int ndim) {
    tc_tensor *out = new_image(v.h, v.w, v.c);
    if (!out) return NULL;
    copy_view(v, tc_data(out));
    if (ndim == 2) {
        tc_tensor *o2 = tc_view(out, 2, out->shape);
        tc_tensor_release(out);
        out = o2;
    }
    return out;
}

tc_tensor *tc_image_crop(tc_tensor *img, int64_t top, int64_t left, int64_t h, int64_t w) {
    view v;
    tc_tensor *hold, *out = NULL;
    if (view_of(img, &v, &hold, "crop") != TC_OK) return NULL;
    if (check_window("crop", v.h, v.w, top, left, h, w) == TC_OK) out = materialize(crop_view(v, top, left, h, w), img->ndim);
    tc_tensor_release(hold);
    return out;
}

tc_tensor *tc_image_hflip(tc_tensor *img) {
    view v;
    tc_tensor *hold;
    if (view_of(img, &v, &hold, "hflip") != TC_OK) return NULL;
    tc_tensor *out = materialize(flip_view(v), img->ndim);
    tc_tensor_release(hold);
    return out;
}

/* v / 127.5 - 1, exact in float for every level, so to_u8 gives the levels back */
static float level_to_float(int v) { return (float)(v / 127.5 - 1.0); }

/* writes v as f32 [C, H, W] */
static void emit_float(view v, float *out) {
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = level_to_float(i);
    int64_t plane = v.h * v.w;
    for (int64_t y = 0; y < v.h; y++) {
        const uint8_t *row = v.p + y * v.sy;
        float *o = out + y * v.w;
        if (v.c == 3) {
            for (int64_t x = 0; x < v.w; x++) {
                const uint8_t *px = row + x * v.sx;
                o[x] = lut[px[0]]; o[plane + x] = lut[px[1]]; o[2 * plane + x] = lut[px[2]];
            }
        } else {
            for (int64_t x = 0; x < v.w; x++)
                for (int64_t ch = 0; ch < v.c; ch++) o[ch * plane + x] = lut[row[x * v.sx + ch]];
        }
    }
}

tc_tensor *tc_image_to_float(tc_tensor *img) {
    char s[64];
    tc_shape_str(img->ndim, img->shape, s, sizeof s);
    if (img->dtype != TC_U8 || img->ndim < 2)
        { tc_error("to_float: expected a u8 [..., H, W, C] image, got %s %s", tc_dtype_name(img->dtype), s); return NULL; }
    tc_tensor *x = img->ndim == 2 ? tc_unsqueeze(img, 2) : tc_tensor_retain(img);
    tc_tensor *d = x ? tc_to(x, TC_U8, TC_DEV_CPU) : NULL, *c = d ? tc_contiguous(d) : NULL;
    tc_tensor_release(x);
    tc_tensor_release(d);
    if (!c) return NULL;
    int nd = c->ndim;
    int64_t shape[TC_MAX_DIMS];
    memcpy(shape, c->shape, sizeof(int64_t) * (size_t)nd);
    int64_t H = shape[nd - 3], W = shape[nd - 2], C = shape[nd - 1];
    shape[nd - 3] = C; shape[nd - 2] = H; shape[nd - 1] = W;
    tc_tensor *out = tc_empty(nd, shape, TC_F32, TC_DEV_CPU);
    if (out) {
        int64_t n = tc_numel(c) / (H * W * C > 0 ? H * W * C : 1);
        for (int64_t b = 0; b < n; b++) {
            view v = {(const uint8_t *)tc_data(c) + b * H * W * C, H, W, C, W * C, C};
            emit_float(v, (float *)tc_data(out) + b * H * W * C);
        }
    }
    tc_tensor_release(c);
    return out;
}

tc_tensor *tc_image_to_u8(tc_tensor *x, double lo, double hi) {
    char s[64];
    tc_shape_str(x->ndim, x->shape, s, sizeof s);
    if (!tc_dtype_is_float(x->dtype) || x->ndim < 3)
        { tc_error("to_u8: expected a float [..., C, H, W] tensor, got %s %s", tc_dtype_name(x->dtype), s); return NULL; }
    if (!(hi > lo)) { tc_error("to_u8: the range's high (%g) must be above its low (%g)", hi, lo); return NULL; }
    tc_tensor *d = tc_to(x, TC_F64, TC_DEV_CPU), *c = d ? tc_contiguous(d) : NULL;
    tc_tensor_release(d);
    if (!c) return NULL;
    int nd = c->ndim;
    int64_t shape[TC_MAX_DIMS];
    memcpy(shape, c->shape, sizeof(int64_t) * (size_t)nd);
    int64_t C = shape[nd - 3], H = shape[nd - 2], W = shape[nd - 1];
    shape[nd - 3] = H; shape[nd - 2] = W; shape[nd - 1] = C;
    tc_tensor *out = tc_empty(nd, shape, TC_U8, TC_DEV_CPU);
    if (out) {
        const double *in = tc_data(c), scale = 255.0 / (hi - lo);
        uint8_t *o = tc_data(out);
        int64_t n = tc_numel(c) / (C * H * W > 0 ? C * H * W : 1), plane = H * W;
        for (int64_t b = 0; b < n; b++, in += C * plane, o += C * plane)
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t i = 0; i < plane; i++) {
                    double v = floor((in[ch * plane + i] - lo) * scale + 0.5);
                    o[i * C + ch] = (uint8_t)(v != v ? 0 : v < 0 ? 0 : v > 255 ? 255 : v);
                }
    }
    tc_tensor_release(c);
    return out;
}

/* ---- pipelines ------------------------------------------------------------------------------- */
static const char *tf_names[] = {"resize", "center_crop", "random_crop", "hflip", "to_float"};

int tc_pipeline_check(const tc_pipeline *p) {
    if (p->channels < 0 || p->channels > 4) return tc_error("pipeline: channels must be 0 to 4, got %d", p->channels);
    if (p->nops < 0 || p->nops > TC_MAX_TRANSFORMS) return tc_error("pipeline: at most %d transforms", TC_MAX_TRANSFORMS);
    for (int i = 0; i < p->nops; i++) {
        const tc_transform *t = &p->ops[i];
        if ((unsigned)t->kind > TC_TF_TO_FLOAT) return tc_error("pipeline: unknown transform %d", (int)t->kind);
        const char *name = tf_names[t->kind];
        if (t->kind == TC_TF_TO_FLOAT && i != p->nops - 1) return tc_error("pipeline: to_float must be the last transform");
        if (t->kind == TC_TF_RESIZE && !valid_mode(t->mode)) return tc_error("pipeline: resize: unknown mode %d", (int)t->mode);
        if (t->kind == TC_TF_RESIZE && (t->h < 1 || t->h > 65535 || t->w < 0 || t->w > 65535))
            return tc_error("pipeline: resize: size %lld x %lld out of range", (long long)t->h, (long long)t->w);
        if ((t->kind == TC_TF_CENTER_CROP || t->kind == TC_TF_RANDOM_CROP) && (t->h < 1 || t->w < 1))
            return tc_error("pipeline: %s: size %lld x %lld must be positive", name, (long long)t->h, (long long)t->w);
        if (t->kind == TC_TF_HFLIP && !(t->p >= 0 && t->p <= 1)) return tc_error("pipeline: hflip: p must be in [0, 1], got %g", t->p);
    }
    return TC_OK;
}

/* torchvision's Resize(int): the shorter side becomes s, the longer keeps the aspect (truncated) */
static void resize_target(const tc_transform *t, int64_t h, int64_t w, int64_t *H, int64_t *W) {
    if (t->w > 0) { *H = t->h; *W = t->w; return; }
    if (h <= w) { *H = t->h; *W = (int64_t)((double)t->h * (double)w / (double)h); }
    else { *W = t->h; *H = (int64_t)((double)t->h * (double)h / (double)w); }
}

/* the crop window of transform t on an h x w image; random crops draw at (seed, counter) */
static int crop_window(const tc_transform *t, int64_t h, int64_t w, uint64_t seed, uint64_t counter,
                       int64_t *top, int64_t *left) {
    if (t->h > h || t->w > w)
        return tc_error("%s: crop %lld x %lld is larger than the %lld x %lld image", tf_names[t->kind],
                        (long long)t->h, (long long)t->w, (long long)h, (long long)w);
    if (t->kind == TC_TF_CENTER_CROP) { /* torchvision: int(round((h - ch) / 2)), half to even */
        *top = (int64_t)nearbyint((double)(h - t->h) / 2.0);
        *left = (int64_t)nearbyint((double)(w - t->w) / 2.0);
    } else {
        uint32_t r[4];
        tc_philox(seed, counter, r);
        *top = (int64_t)(((uint64_t)r[0] * (uint64_t)(h - t->h + 1)) >> 32);
        *left = (int64_t)(((uint64_t)r[1] * (uint64_t)(w - t->w + 1)) >> 32);
    }
    return TC_OK;
}

static bool is_crop(const tc_transform *t) { return t->kind == TC_TF_CENTER_CROP || t->kind == TC_TF_RANDOM_CROP; }

/* runs the ops; the result stays a view (*v) over *hold, with *to_float telling the layout */
static int run_ops(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter, view *v,
                   tc_tensor **hold, bool *to_float) {
    if (view_of(img, v, hold, "pipeline") != TC_OK) return TC_ERR;
    *to_float = false;
    for (int i = 0; i < p->nops; i++) {
        const tc_transform *t = &p->ops[i];
        switch (t->kind) {
        case TC_TF_RESIZE: {
            if (v->h < 1 || v->w < 1) return tc_error("resize: the image is empty");
            int64_t H, W, top = 0, left = 0, h, w;
            resize_target(t, v->h, v->w, &H, &W);
            h = H; w = W;
            if (i + 1 < p->nops && is_crop(&p->ops[i + 1])) { /* compute only the cropped pixels */
                i++;
                if (crop_window(&p->ops[i], H, W, seed, counter + (uint64_t)i, &top, &left) != TC_OK) return TC_ERR;
                h = p->ops[i].h; w = p->ops[i].w;
            }
            tc_tensor *out = resize_window(*v, H, W, top, left, h, w, t->mode, t->antialias);
            if (!out) return TC_ERR;
            tc_tensor_release(*hold);
            *hold = out;
            *v = view_image(out);
            break;
        }
        case TC_TF_CENTER_CROP: case TC_TF_RANDOM_CROP: {
            int64_t top, left;
            if (crop_window(t, v->h, v->w, seed, counter + (uint64_t)i, &top, &left) != TC_OK) return TC_ERR;
            *v = crop_view(*v, top, left, t->h, t->w);
            break;
        }
        case TC_TF_HFLIP: {
            uint32_t r[4];
            tc_philox(seed, counter + (uint64_t)i, r);
            if ((double)r[0] * (1.0 / 4294967296.0) < t->p) *v = flip_view(*v);
            break;
        }
        case TC_TF_TO_FLOAT: *to_float = true; break;
        }
    }
    return TC_OK;
}

static tc_tensor *emit(view v, bool to_float, tc_tensor *dst) {
    int64_t shape[3] = {v.h, v.w, v.c};
    if (to_float) { shape[0] = v.c; shape[1] = v.h; shape[2] = v.w; }
    tc_tensor *out = dst ? tc_tensor_retain(dst) : tc_empty(3, shape, to_float ? TC_F32 : TC_U8, TC_DEV_CPU);
    if (!out) return NULL;
    if (out->ndim != 3 || memcmp(out->shape, shape, sizeof shape) != 0 || out->dtype != (to_float ? TC_F32 : TC_U8)) {
        char a[64], b[64];
        tc_shape_str(3, shape, a, sizeof a);
        tc_shape_str(out->ndim, out->shape, b, sizeof b);
        tc_error("pipeline: the sample came out %s, the batch holds %s", a, b);
        tc_tensor_release(out);
        return NULL;
    }
    if (to_float) emit_float(v, tc_data(out));
    else copy_view(v, tc_data(out));
    return out;
}

static tc_tensor *run(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter, tc_tensor *dst) {
    if (tc_pipeline_check(p) != TC_OK) return NULL;
    view v;
    tc_tensor *hold = NULL, *out = NULL;
    bool to_float;
    if (run_ops(p, img, seed, counter, &v, &hold, &to_float) == TC_OK) out = emit(v, to_float, dst);
    tc_tensor_release(hold);
    return out;
}

tc_tensor *tc_pipeline_run(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter) {
    return run(p, img, seed, counter, NULL);
}

int tc_pipeline_run_into(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter, tc_tensor *dst) {
    if (!tc_is_contiguous(dst) || dst->storage->device.type != TC_CPU) return tc_error("pipeline: the destination must be a contiguous CPU tensor");
    tc_tensor *out = run(p, img, seed, counter, dst);
    tc_tensor_release(out);
    return out ? TC_OK : TC_ERR;
}

bool tc_pipeline_out_shape(const tc_pipeline *p, int64_t shape[3], tc_dtype *dt) {
    int64_t h = 0, w = 0;
    bool fixed = false, to_float = false;
    for (int i = 0; i < p->nops; i++) {
        const tc_transform *t = &p->ops[i];
        if ((t->kind == TC_TF_RESIZE && t->w > 0) || is_crop(t)) { h = t->h; w = t->w; fixed = true; }
        else if (t->kind == TC_TF_RESIZE) fixed = false;
        else if (t->kind == TC_TF_TO_FLOAT) to_float = true;
    }
    if (!fixed || p->channels == 0) return false;
    int64_t c = p->channels;
    if (to_float) { shape[0] = c; shape[1] = h; shape[2] = w; }
    else { shape[0] = h; shape[1] = w; shape[2] = c; }
    *dt = to_float ? TC_F32 : TC_U8;
    return true;
}
