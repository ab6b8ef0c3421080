/* pool.cu: avg_pool2d, max_pool2d, interpolate (nearest, bilinear) and pad (constant, reflect,
 * replicate) on the GPU, each with its backward (pooling and interpolate in NCHW or
 * channels-last, read and written in place), following the window, divisor, index and
 * source-coordinate rules of their CPU twins (core/cpu/pool.c). One thread per element of
 * the result; the backward passes gather per input element (deterministic sums), except
 * max_pool2d's, which is given only the argmax and so scatters through it with atomics. */
#include "cuda.h"
#include "../core/pad.h"

/* ---- shared helpers ------------------------------------------------------------------------ */
/* stores a value of the compute type (float, or double for f64) as element type T */
__device__ static inline void store(float *p, float v) { *p = v; }
__device__ static inline void store(double *p, double v) { *p = v; }
__device__ static inline void store(__half *p, float v) { *p = __float2half_rn(v); }
__device__ static inline void store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

__host__ __device__ static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- layouts: [N, C, H, W] tensors as N C planes, contiguous NCHW or channels-last (NHWC, the
 * caller's tensors all in one of the two) ------------------------------------------------------ */
/* where plane k = n C + c of an [N, C, H, W] tensor lies: element (h, w) at base + h hs + w ws */
typedef struct { int64_t base, hs, ws; } plane;

__device__ static inline plane plane_of(int64_t k, int64_t C, int64_t H, int64_t W, bool nhwc) {
    plane p;
    if (nhwc) {
        p.base = k / C * H * W * C + k % C;
        p.hs = W * C;
        p.ws = C;
    } else {
        p.base = k * H * W;
        p.hs = W;
        p.ws = 1;
    }
    return p;
}

/* the plane k, row h and column w of the element at memory offset i of such a tensor */
__device__ static inline void split_index(int64_t i, int64_t C, int64_t H, int64_t W, bool nhwc, int64_t *k,
                                          int64_t *h, int64_t *w) {
    if (nhwc) {
        int64_t c = i % C, r = i / C;
        *w = r % W;
        *h = r / W % H;
        *k = r / (W * H) * C + c;
    } else {
        *w = i % W;
        *h = i / W % H;
        *k = i / (W * H);
    }
}

/* channels-last: a 4-d tensor not row-major (one that is both counts as NCHW) */
static bool is_nhwc(const tc_tensor *t) { return !tc_is_contiguous(t); }

/* [N, C, H, W] inputs and [N, C, OH, OW] outputs seen as planes independent planes, with a
 * pooling window's parameters */
typedef struct {
    int64_t planes, C, H, W, OH, OW;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    bool count_include_pad, nhwc;
} pool_geom;

static pool_geom pool_geom_of(const tc_tensor *in, const tc_tensor *out, const tc_pool_params *p) {
    pool_geom g = {in->shape[0] * in->shape[1], in->shape[1], in->shape[2], in->shape[3], out->shape[2],
                   out->shape[3], p->kernel[0], p->kernel[1], p->stride[0], p->stride[1], p->padding[0],
                   p->padding[1], p->dilation[0], p->dilation[1], p->count_include_pad,
                   is_nhwc(in) || is_nhwc(out)};
    return g;
}

/* gx [planes, isz] = acc (float) converted to gx's type: f16 and bf16 gradients are summed
 * in float, then rounded once */
template <typename T>
__global__ void from_float_kernel(T *gx, const float *acc, int64_t n) {
    TCU_GRID_STRIDE(i, n) store(&gx[i], acc[i]);
}

/* ---- average pooling: window [h0, h1) x [w0, w1) clipped to the plane, and its divisor
 * (PyTorch's rules, as tc_cpu_avg_pool2d) ------------------------------------------------------- */
typedef struct { int64_t h0, h1, w0, w1, div; } window;

__device__ static inline window avg_window(const pool_geom &g, int64_t oh, int64_t ow) {
    int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    int64_t h1 = min64(h0 + g.kh, g.H + g.ph), w1 = min64(w0 + g.kw, g.W + g.pw);
    int64_t full = (h1 - h0) * (w1 - w0);
    window r;
    r.h0 = max64(h0, 0);
    r.w0 = max64(w0, 0);
    r.h1 = min64(h1, g.H);
    r.w1 = min64(w1, g.W);
    r.div = g.count_include_pad ? full : (r.h1 - r.h0) * (r.w1 - r.w0);
    return r;
}

/* y [planes, OH, OW] = window means of x [planes, H, W]; an empty window gives 0 */
template <typename T>
__global__ void avg_pool_kernel(T *y, const T *x, pool_geom g) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(i, g.planes * g.OH * g.OW) {
        int64_t ow, oh, k;
        split_index(i, g.C, g.OH, g.OW, g.nhwc, &k, &oh, &ow);
        window r = avg_window(g, oh, ow);
        plane px = plane_of(k, g.C, g.H, g.W, g.nhwc);
        A s = 0;
        for (int64_t h = r.h0; h < r.h1; h++)
            for (int64_t w = r.w0; w < r.w1; w++) s += tcu_float(x[px.base + h * px.hs + w * px.ws]);
        store(&y[i], r.h0 < r.h1 && r.w0 < r.w1 ? s / (A)r.div : (A)0);
    }
}

/* gx [planes, H, W]: each input sums gy / divisor over the outputs whose windows hold it */
template <typename T>
__global__ void avg_pool_backward_kernel(T *gx, const T *gy, pool_geom g) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(i, g.planes * g.H * g.W) {
        int64_t w, h, k;
        split_index(i, g.C, g.H, g.W, g.nhwc, &k, &h, &w);
        /* outputs oh with oh * sh - ph <= h < oh * sh - ph + kh, likewise ow */
        int64_t oh0 = h + g.ph < g.kh ? 0 : (h + g.ph - g.kh) / g.sh + 1, oh1 = min64((h + g.ph) / g.sh + 1, g.OH);
        int64_t ow0 = w + g.pw < g.kw ? 0 : (w + g.pw - g.kw) / g.sw + 1, ow1 = min64((w + g.pw) / g.sw + 1, g.OW);
        plane py = plane_of(k, g.C, g.OH, g.OW, g.nhwc);
        A s = 0;
        for (int64_t oh = oh0; oh < oh1; oh++)
            for (int64_t ow = ow0; ow < ow1; ow++) {
                window r = avg_window(g, oh, ow);
                if (h >= r.h0 && h < r.h1 && w >= r.w0 && w < r.w1)
                    s += tcu_float(gy[py.base + oh * py.hs + ow * py.ws]) / (A)r.div;
            }
        store(&gx[i], s);
    }
}

template <typename T>
static int avg_pool_launch(tc_tensor *y, const tc_tensor *x, const pool_geom &g) {
    TCU_LAUNCH(avg_pool_kernel<T>, tcu_blocks(g.planes * g.OH * g.OW), TCU_THREADS, 0, (T *)tcu_ptr(y),
               (const T *)tcu_ptr(x), g);
    TCU_LAUNCHED("avg_pool2d");
    return TC_OK;
}

template <typename T>
static int avg_pool_backward_launch(tc_tensor *gx, const tc_tensor *gy, const pool_geom &g) {
    TCU_LAUNCH(avg_pool_backward_kernel<T>, tcu_blocks(g.planes * g.H * g.W), TCU_THREADS, 0, (T *)tcu_ptr(gx),
               (const T *)tcu_ptr(gy), g);
    TCU_LAUNCHED("avg_pool2d backward");
    return TC_OK;
}

extern "C" int tc_cuda_avg_pool2d(tc_tensor *y, const tc_tensor *x, const tc_pool_params *p) {
    pool_geom g = pool_geom_of(x, y, p);
    if (g.planes * g.OH * g.OW == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(x->dtype, T, "avg_pool2d", rc = avg_pool_launch<T>(y, x, g));
    return rc;
}

extern "C" int tc_cuda_avg_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_pool_params *p) {
    pool_geom g = pool_geom_of(gx, gy, p);
    if (g.planes * g.H * g.W == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(gy->dtype, T, "avg_pool2d backward", rc = avg_pool_backward_launch<T>(gx, gy, g));
    return rc;
}

/* ---- max pooling: argmax holds 1-based offsets h * W + w + 1 within each plane (0: an empty
 * window, whose value is -inf and which takes no gradient). NaN wins, the last NaN of a window
 * if several, as on the CPU. -------------------------------------------------------------------- */
template <typename T>
__global__ void max_pool_kernel(T *y, int64_t *arg, const T *x, pool_geom g) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(i, g.planes * g.OH * g.OW) {
        int64_t ow, oh, k;
        split_index(i, g.C, g.OH, g.OW, g.nhwc, &k, &oh, &ow);
        int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
        int64_t h1 = min64(h0 + (g.kh - 1) * g.dh + 1, g.H), w1 = min64(w0 + (g.kw - 1) * g.dw + 1, g.W);
        while (h0 < 0) h0 += g.dh;
        while (w0 < 0) w0 += g.dw;
        plane px = plane_of(k, g.C, g.H, g.W, g.nhwc);
        A best = -INFINITY;
        int64_t at = 0;
        for (int64_t h = h0; h < h1; h += g.dh)
            for (int64_t w = w0; w < w1; w += g.dw) {
                A v = tcu_float(x[px.base + h * px.hs + w * px.ws]);
                if (v > best || isnan(v) || at == 0) {
                    best = v;
                    at = h * g.W + w + 1;
                }
            }
        store(&y[i], best);
        arg[i] = at;
    }
}

/* acc (zeroed, gx's shape and layout) += gy at the argmax of each output (gy and arg of one
 * layout, g's); acc is gx itself for f32 and f64, a float buffer for f16 and bf16 */
template <typename T>
__global__ void max_pool_backward_kernel(typename tcu_acc<T>::type *acc, const T *gy, const int64_t *arg,
                                         pool_geom g) {
    int64_t isz = g.H * g.W;
    TCU_GRID_STRIDE(i, g.planes * g.OH * g.OW) {
        int64_t a = arg[i], k, oh, ow;
        if (a <= 0 || a > isz) continue;
        split_index(i, g.C, g.OH, g.OW, g.nhwc, &k, &oh, &ow);
        plane px = plane_of(k, g.C, g.H, g.W, g.nhwc);
        atomicAdd(&acc[px.base + (a - 1) / g.W * px.hs + (a - 1) % g.W * px.ws], tcu_float(gy[i]));
    }
}

template <typename T>
static int max_pool_launch(tc_tensor *y, tc_tensor *argmax, const tc_tensor *x, const pool_geom &g) {
    TCU_LAUNCH(max_pool_kernel<T>, tcu_blocks(g.planes * g.OH * g.OW), TCU_THREADS, 0, (T *)tcu_ptr(y),
               (int64_t *)tcu_ptr(argmax), (const T *)tcu_ptr(x), g);
    TCU_LAUNCHED("max_pool2d");
    return TC_OK;
}

template <typename T>
static int max_pool_backward_launch(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *argmax) {
    typedef typename tcu_acc<T>::type A;
    int64_t planes = gx->shape[0] * gx->shape[1], isz = gx->shape[2] * gx->shape[3];
    int64_t osz = gy->shape[2] * gy->shape[3];
    bool direct = sizeof(T) == sizeof(A); /* f32, f64: add straight into gx */
    A *acc = direct ? (A *)tcu_ptr(gx) : (A *)tc_cuda_alloc((size_t)(planes * isz) * sizeof(A));
    if (!acc) return TC_ERR;
    int rc = TC_ERR;
    cudaError_t e = cudaMemsetAsync(acc, 0, (size_t)(planes * isz) * sizeof(A), tcu_stream());
    if (e != cudaSuccess) {
        rc = tcu_fail("cudaMemsetAsync", cudaGetErrorString(e), __FILE__, __LINE__);
    } else if (planes * osz > 0) {
        tc_pool_params none = {};
        TCU_LAUNCH(max_pool_backward_kernel<T>, tcu_blocks(planes * osz), TCU_THREADS, 0, acc, (const T *)tcu_ptr(gy),
                   (const int64_t *)tcu_ptr(argmax), pool_geom_of(gx, gy, &none));
        rc = tcu_after_launch("max_pool2d backward", __FILE__, __LINE__);
    } else {
        rc = TC_OK;
    }
    if (rc == TC_OK && !direct) {
        TCU_LAUNCH(from_float_kernel<T>, tcu_blocks(planes * isz), TCU_THREADS, 0, (T *)tcu_ptr(gx),
                   (const float *)acc, planes * isz);
        rc = tcu_after_launch("max_pool2d backward", __FILE__, __LINE__);
    }
    if (!direct) tc_cuda_free(acc); /* stream-ordered: the kernels above finish first */
    return rc;
}

extern "C" int tc_cuda_max_pool2d(tc_tensor *y, tc_tensor *argmax, const tc_tensor *x, const tc_pool_params *p) {
    pool_geom g = pool_geom_of(x, y, p);
    if (g.planes * g.OH * g.OW == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(x->dtype, T, "max_pool2d", rc = max_pool_launch<T>(y, argmax, x, g));
    return rc;
}

extern "C" int tc_cuda_max_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *argmax) {
    if (tc_numel(gx) == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(gy->dtype, T, "max_pool2d backward", rc = max_pool_backward_launch<T>(gx, gy, argmax));
    return rc;
}

/* ---- resampling: per output row (column), its source rows (columns) i0, i1 and weights l0,
 * l1, computed as tc_cpu_interpolate does: in float for f32, f16 and bf16, in double for f64.
 * (nvcc may fuse the half-pixel multiply-add, which can move a weight by one rounding; the
 * CPU does not fuse it.) ------------------------------------------------------------------------ */
typedef struct {
    int64_t planes, C, H, W, OH, OW;
    bool nearest, align_corners, nhwc;
} interp_geom;

template <typename A> struct taps { int64_t i0, i1; A l0, l1; };

__device__ static inline float floor_of(float v) { return floorf(v); }
__device__ static inline double floor_of(double v) { return floor(v); }

/* legacy 'nearest': src = floor(dst * in / out) with a float scale, as PyTorch */
__device__ static inline int64_t nearest_src(int64_t dst, int64_t in, int64_t out) {
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    float scale = (float)in / (float)out;
    int64_t s = (int64_t)floorf((float)dst * scale);
    return s < in - 1 ? s : in - 1;
}

template <typename A>
__device__ static inline taps<A> taps_of(int64_t dst, int64_t in, int64_t out, bool nearest, bool align_corners) {
    taps<A> t;
    if (nearest) {
        t.i0 = nearest_src(dst, in, out);
        t.i1 = 0;
        t.l0 = 1;
        t.l1 = 0;
        return t;
    }
    /* PyTorch's area_pixel_compute_source_index */
    A scale = align_corners ? (out > 1 ? (A)(in - 1) / (A)(out - 1) : (A)0) : (A)in / (A)out;
    A src = align_corners ? scale * (A)dst : scale * ((A)dst + (A)0.5) - (A)0.5;
    if (src < 0) src = 0;
    t.i0 = (int64_t)floor_of(src);
    if (t.i0 > in - 1) t.i0 = in - 1;
    A l = src - (A)t.i0;
    t.l1 = l < 0 ? (A)0 : l > 1 ? (A)1 : l;
    t.l0 = 1 - t.l1;
    t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
    return t;
}

/* the first dst in [0, out) whose i0 is at least k (out if none): i0 never decreases with dst */
template <typename A>
__device__ static inline int64_t first_src_at_least(int64_t k, int64_t in, int64_t out, bool nearest,
                                                    bool align_corners) {
    if (k <= 0) return 0;
    if (k > in - 1) return out;
    int64_t lo = 0, hi = out;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (taps_of<A>(mid, in, out, nearest, align_corners).i0 >= k) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* the weight output dst's taps give input index i */
template <typename A>
__device__ static inline A weight_of(const taps<A> &t, int64_t i) {
    return (t.i0 == i ? t.l0 : (A)0) + (t.i1 == i ? t.l1 : (A)0);
}

template <typename T>
__global__ void interp_kernel(T *y, const T *x, interp_geom g) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(i, g.planes * g.OH * g.OW) {
        int64_t ow, oh, k;
        split_index(i, g.C, g.OH, g.OW, g.nhwc, &k, &oh, &ow);
        taps<A> th = taps_of<A>(oh, g.H, g.OH, g.nearest, g.align_corners);
        taps<A> tw = taps_of<A>(ow, g.W, g.OW, g.nearest, g.align_corners);
        plane px = plane_of(k, g.C, g.H, g.W, g.nhwc);
        const T *r0 = x + px.base + th.i0 * px.hs, *r1 = x + px.base + th.i1 * px.hs;
        int64_t c0 = tw.i0 * px.ws, c1 = tw.i1 * px.ws;
        if (g.nearest) {
            y[i] = r0[c0];
            continue;
        }
        A top = tw.l0 * tcu_float(r0[c0]) + tw.l1 * tcu_float(r0[c1]);
        A bot = tw.l0 * tcu_float(r1[c0]) + tw.l1 * tcu_float(r1[c1]);
        store(&y[i], th.l0 * top + th.l1 * bot);
    }
}

/* gx [planes, H, W]: each input gathers weight_h * weight_w * gy over the outputs that read it:
 * those whose i0 is h (nearest), or h - 1 or h (bilinear: i1 is i0 + 1, or i0 at the edge) */
template <typename T>
__global__ void interp_backward_kernel(T *gx, const T *gy, interp_geom g) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(i, g.planes * g.H * g.W) {
        int64_t w, h, k, back = g.nearest ? 0 : 1;
        split_index(i, g.C, g.H, g.W, g.nhwc, &k, &h, &w);
        int64_t oh0 = first_src_at_least<A>(h - back, g.H, g.OH, g.nearest, g.align_corners);
        int64_t oh1 = first_src_at_least<A>(h + 1, g.H, g.OH, g.nearest, g.align_corners);
        int64_t ow0 = first_src_at_least<A>(w - back, g.W, g.OW, g.nearest, g.align_corners);
        int64_t ow1 = first_src_at_least<A>(w + 1, g.W, g.OW, g.nearest, g.align_corners);
        plane py = plane_of(k, g.C, g.OH, g.OW, g.nhwc);
        A s = 0;
        for (int64_t oh = oh0; oh < oh1; oh++) {
            A wh = weight_of(taps_of<A>(oh, g.H, g.OH, g.nearest, g.align_corners), h), row = 0;
            for (int64_t ow = ow0; ow < ow1; ow++)
                row += weight_of(taps_of<A>(ow, g.W, g.OW, g.nearest, g.align_corners), w) *
                       tcu_float(gy[py.base + oh * py.hs + ow * py.ws]);
            s += wh * row;
        }
        store(&gx[i], s);
    }
}

template <typename T>
static int interp_launch(tc_tensor *y, const tc_tensor *x, const interp_geom &g) {
    TCU_LAUNCH(interp_kernel<T>, tcu_blocks(g.planes * g.OH * g.OW), TCU_THREADS, 0, (T *)tcu_ptr(y),
               (const T *)tcu_ptr(x), g);
    TCU_LAUNCHED("interpolate");
    return TC_OK;
}

template <typename T>
static int interp_backward_launch(tc_tensor *gx, const tc_tensor *gy, const interp_geom &g) {
    TCU_LAUNCH(interp_backward_kernel<T>, tcu_blocks(g.planes * g.H * g.W), TCU_THREADS, 0, (T *)tcu_ptr(gx),
               (const T *)tcu_ptr(gy), g);
    TCU_LAUNCHED("interpolate backward");
    return TC_OK;
}

static interp_geom interp_geom_of(const tc_tensor *x, const tc_tensor *y, tc_interp_mode mode, bool align_corners) {
    interp_geom g = {x->shape[0] * x->shape[1], x->shape[1], x->shape[2], x->shape[3], y->shape[2], y->shape[3],
                     mode == TC_INTERP_NEAREST, align_corners, is_nhwc(x) || is_nhwc(y)};
    return g;
}

extern "C" int tc_cuda_interpolate(tc_tensor *y, const tc_tensor *x, tc_interp_mode mode, bool align_corners) {
    interp_geom g = interp_geom_of(x, y, mode, align_corners);
    if (g.planes * g.OH * g.OW == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(x->dtype, T, "interpolate", rc = interp_launch<T>(y, x, g));
    return rc;
}

extern "C" int tc_cuda_interpolate_backward(tc_tensor *gx, const tc_tensor *gy, tc_interp_mode mode,
                                            bool align_corners) {
    interp_geom g = interp_geom_of(gx, gy, mode, align_corners);
    if (g.planes * g.H * g.W == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(gy->dtype, T, "interpolate backward", rc = interp_backward_launch<T>(gx, gy, g));
    return rc;
}

/* ---- padding: pads holds (before, after) for every dim, from the last dim back ----------------
 * constant: y (contiguous) takes x (any strides) shifted by the pads where it lands inside x,
 * else the value (negative pads crop). Its backward is the same with the pads negated and
 * value 0. Any dtype: the inside is copied bit for bit through an integer of the element's
 * size, the value stored as tc_cpu_fill stores it. */
typedef struct {
    int nd;
    int64_t shape[TC_MAX_DIMS];                                  /* y's */
    int64_t xshape[TC_MAX_DIMS], xstride[TC_MAX_DIMS], before[TC_MAX_DIMS];
} const_pad_geom;

template <typename E>
__global__ void pad_constant_kernel(E *y, const E *x, const_pad_geom g, int64_t n, tc_dtype dt, double value) {
    TCU_GRID_STRIDE(i, n) {
        int64_t rest = i, off = 0;
        bool inside = true;
        for (int d = g.nd - 1; d >= 0; d--) {
            int64_t s = rest % g.shape[d] - g.before[d];
            rest /= g.shape[d];
            if (s < 0 || s >= g.xshape[d]) inside = false;
            else off += s * g.xstride[d];
        }
        if (inside) y[i] = x[off];
        else tcu_store(y, dt, i, value);
    }
}

template <typename E>
static int pad_constant_launch(tc_tensor *y, const tc_tensor *x, const const_pad_geom &g, double value) {
    int64_t n = tc_numel(y);
    TCU_LAUNCH(pad_constant_kernel<E>, tcu_blocks(n), TCU_THREADS, 0, (E *)tcu_ptr(y), (const E *)tcu_ptr(x), g, n,
               y->dtype, value);
    TCU_LAUNCHED("pad");
    return TC_OK;
}

/* sign -1: the backward, gx = the part of gy that the forward filled from x */
static int pad_constant(tc_tensor *y, const tc_tensor *x, const int64_t *pads, int sign, double value) {
    if (tc_numel(y) == 0) return TC_OK;
    const_pad_geom g;
    g.nd = x->ndim;
    for (int d = 0; d < x->ndim; d++) {
        g.shape[d] = y->shape[d];
        g.xshape[d] = x->shape[d];
        g.xstride[d] = x->stride[d];
        g.before[d] = sign * pads[2 * (x->ndim - 1 - d)];
    }
    switch (tc_dtype_size(y->dtype)) {
    case 1: return pad_constant_launch<uint8_t>(y, x, g, value);
    case 2: return pad_constant_launch<uint16_t>(y, x, g, value);
    case 4: return pad_constant_launch<uint32_t>(y, x, g, value);
    case 8: return pad_constant_launch<uint64_t>(y, x, g, value);
    default: return tc_error("pad: dtype %s is not supported on cuda", tc_dtype_name(y->dtype));
    }
}

/* reflect and replicate over [B, H, W]: core/pad.h's geometry, shared with the CPU.
 * The output coordinates whose source is i, within up to three ranges [lo, hi) of [0, out):
 * replicate: one range (wider at the edges); reflect: i itself and its two mirror images */
typedef struct { int64_t lo[3], hi[3]; } spans;

__device__ static inline spans pad_spans(int64_t i, int64_t before, int64_t n, int64_t out, tc_pad_mode mode) {
    spans s;
    if (mode == TC_PAD_REPLICATE) {
        s.lo[0] = i == 0 ? 0 : i + before;
        s.hi[0] = i == n - 1 ? out : i + before + 1;
        s.lo[1] = s.hi[1] = s.lo[2] = s.hi[2] = 0;
    } else {
        int64_t at[3] = {i + before, before - i, before + 2 * (n - 1) - i};
        for (int j = 0; j < 3; j++) {
            s.lo[j] = at[j];
            s.hi[j] = at[j] + 1;
        }
        if (i < 1) s.hi[1] = s.lo[1];     /* the left mirror repeats no edge */
        if (i > n - 2) s.hi[2] = s.lo[2]; /* nor the right one */
    }
    for (int j = 0; j < 3; j++) {
        s.lo[j] = max64(s.lo[j], 0);
        s.hi[j] = min64(s.hi[j], out);
    }
    return s;
}

template <typename T>
__global__ void pad_kernel(T *y, const T *x, tc_pad_geom g) {
    TCU_GRID_STRIDE(i, g.B * g.OH * g.OW) {
        int64_t ow = i % g.OW, oh = i / g.OW % g.OH, b = i / (g.OW * g.OH);
        y[i] = x[(b * g.H + tc_pad_src(oh, g.top, g.H, g.mode)) * g.W + tc_pad_src(ow, g.left, g.W, g.mode)];
    }
}

/* gx [B, H, W]: each input gathers gy over the outputs that copied it */
template <typename T>
__global__ void pad_backward_kernel(T *gx, const T *gy, tc_pad_geom g) {
    typedef typename tcu_acc<T>::type A;
    TCU_GRID_STRIDE(i, g.B * g.H * g.W) {
        int64_t w = i % g.W, h = i / g.W % g.H, b = i / (g.W * g.H);
        spans sh = pad_spans(h, g.top, g.H, g.OH, g.mode), sw = pad_spans(w, g.left, g.W, g.OW, g.mode);
        const T *gyb = gy + b * g.OH * g.OW;
        A s = 0;
        for (int jh = 0; jh < 3; jh++)
            for (int64_t oh = sh.lo[jh]; oh < sh.hi[jh]; oh++) {
                if (tc_pad_src(oh, g.top, g.H, g.mode) != h) continue;
                for (int jw = 0; jw < 3; jw++)
                    for (int64_t ow = sw.lo[jw]; ow < sw.hi[jw]; ow++)
                        if (tc_pad_src(ow, g.left, g.W, g.mode) == w) s += tcu_float(gyb[oh * g.OW + ow]);
            }
        store(&gx[i], s);
    }
}

template <typename T>
static int pad_launch(tc_tensor *y, const tc_tensor *x, const tc_pad_geom &g) {
    TCU_LAUNCH(pad_kernel<T>, tcu_blocks(g.B * g.OH * g.OW), TCU_THREADS, 0, (T *)tcu_ptr(y), (const T *)tcu_ptr(x), g);
    TCU_LAUNCHED("pad");
    return TC_OK;
}

template <typename T>
static int pad_backward_launch(tc_tensor *gx, const tc_tensor *gy, const tc_pad_geom &g) {
    TCU_LAUNCH(pad_backward_kernel<T>, tcu_blocks(g.B * g.H * g.W), TCU_THREADS, 0, (T *)tcu_ptr(gx),
               (const T *)tcu_ptr(gy), g);
    TCU_LAUNCHED("pad backward");
    return TC_OK;
}

extern "C" int tc_cuda_pad(tc_tensor *y, const tc_tensor *x, const int64_t *pads, tc_pad_mode mode, double value) {
    if (mode == TC_PAD_CONSTANT) return pad_constant(y, x, pads, 1, value);
    tc_pad_geom g = tc_pad_geom_of(x, y, pads, mode);
    if (g.B * g.OH * g.OW == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(x->dtype, T, "pad", rc = pad_launch<T>(y, x, g));
    return rc;
}

extern "C" int tc_cuda_pad_backward(tc_tensor *gx, const tc_tensor *gy, const int64_t *pads, tc_pad_mode mode) {
    if (mode == TC_PAD_CONSTANT) return pad_constant(gx, gy, pads, -1, 0);
    tc_pad_geom g = tc_pad_geom_of(gx, gy, pads, mode);
    if (g.B * g.H * g.W == 0) return TC_OK;
    int rc = TC_OK;
    TCU_FLOAT_DISPATCH(gy->dtype, T, "pad backward", rc = pad_backward_launch<T>(gx, gy, g));
    return rc;
}
