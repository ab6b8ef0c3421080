/* conv.c (cpu): 2-d convolution (NCHW) by im2col + OpenBLAS GEMM, and its fused backward
 * (gx = col2im(W^T @ gy), gw = sum of gy @ col^T, gb = sums of gy). Columns are built a band
 * of output rows at a time, in one cache-sized buffer per thread. */
#include "cpu.h"

#include <cblas.h>
#include <omp.h>

/* bytes of one band's column matrix: small enough for L2, large enough for GEMM to run well
 * (512 KiB to 2 MiB measured alike for 64 -> 64 channels, 3x3, 32x32; 256 KiB and one
 * whole image, 2.3 MiB there, were 5-10% slower). Convolutions with at most 16 output
 * channels per group take 256 KiB bands: their GEMMs are then small enough for OpenBLAS's
 * unpacked small-matrix path, and 16 -> 16 channels at 32x32 (batch 32, forward + backward,
 * one thread) went from 13.3 to 9.6 ms, 48 -> 16 from 30.3 to 27.6 ms, and the demo's training
 * step (bench/t2i.lua, one thread) from 0.49 to 0.47 s; with 32 or 64 output channels 256 KiB
 * bands were up to 12% slower. */
#define BAND_BYTES (1 << 20)
#define SMALL_BAND_BYTES (256 << 10)
#define SMALL_BAND_CHANNELS 16
/* Other bands hold at least 256 output pixels when the image has them: each GEMM packs the
 * whole weight matrix [og, ckk] again, and with wide inputs 1 MiB held one row of 64 pixels or
 * less, so the packing cost as much as the products. One thread, batch 1, 3x3, ms with 1 MiB
 * bands / 256 pixels: 320 -> 320 at 64x64 116 / 91, 1280 -> 1280 at 16x16 214 / 86, 2560 ->
 * 1280 at 8x8 188 / 64, 1920 -> 640 at 32x32 435 / 289 (the machine shared; 512 and 1024
 * pixels measured alike, 4096 slower). */
#define MIN_BAND_COLS 256

/* the shapes of one convolution, read from the tensors: input [N, C, H, W], output
 * [N, O, OH, OW], kernel [kh, kw]; ckk = (C / G) * kh * kw rows of a group's column matrix */
typedef struct {
    int64_t N, C, H, W, O, OH, OW, kh, kw, G, cg, og, ckk, ohw;
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t rows;     /* output rows per band */
    int64_t colsize;  /* elements of one band's column matrix (0: direct) */
    bool direct;      /* 1x1, stride 1, no padding: the input is its own column matrix */
    tc_dtype dt;
    size_t es;
} geom;

static geom make_geom(const tc_tensor *in, const tc_tensor *out, const tc_tensor *w, const tc_conv_params *p) {
    geom g = {
        .N = in->shape[0], .C = in->shape[1], .H = in->shape[2], .W = in->shape[3],
        .O = out->shape[1], .OH = out->shape[2], .OW = out->shape[3],
        .kh = w->shape[2], .kw = w->shape[3], .G = p->groups,
        .sh = p->stride[0], .sw = p->stride[1], .ph = p->padding[0], .pw = p->padding[1],
        .dh = p->dilation[0], .dw = p->dilation[1], .dt = in->dtype, .es = tc_dtype_size(in->dtype),
    };
    g.cg = g.C / g.G;
    g.og = g.O / g.G;
    g.ckk = g.cg * g.kh * g.kw;
    g.ohw = g.OH * g.OW;
    g.direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 &&
               g.OH == g.H && g.OW == g.W;
    /* bands of equal height, each at most `band` bytes (or one row) */
    int64_t row_bytes = g.C * g.kh * g.kw * g.OW * (int64_t)g.es;
    int64_t band = BAND_BYTES, wide = g.C * g.kh * g.kw * MIN_BAND_COLS * (int64_t)g.es;
    if (g.og <= SMALL_BAND_CHANNELS) band = SMALL_BAND_BYTES;
    else if (band < wide) band = wide;
    int64_t most = band / (row_bytes > 0 ? row_bytes : 1), nbands;
    if (most < 1) most = 1;
    nbands = g.direct || g.OH < 1 ? 1 : (g.OH + most - 1) / most;
    g.rows = g.OH < 1 ? 1 : (g.OH + nbands - 1) / nbands;
    g.colsize = g.direct ? 0 : g.C * g.kh * g.kw * g.rows * g.OW;
    return g;
}

/* ---- im2col and its adjoint -------------------------------------------------------------
 * f32 and f64 share one body, specialised by inlining; the inner runs are short (one
 * output row), so they are written as loops the compiler vectorises, not memcpy calls */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE double ld(const void *p, int64_t i, bool f32) {
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
ALWAYS_INLINE void add_to(void *p, int64_t i, double v, bool f32) {
    if (f32) ((float *)p)[i] += (float)v;
    else ((double *)p)[i] += v;
}

/* output columns ow whose input column ow * s + x0 falls inside [0, n) */
static void valid_range(int64_t x0, int64_t s, int64_t n, int64_t OW, int64_t *lo, int64_t *hi) {
    *lo = x0 >= 0 ? 0 : (-x0 + s - 1) / s;
    *hi = n - 1 - x0 < 0 ? 0 : (n - 1 - x0) / s + 1;
    if (*hi > OW) *hi = OW;
    if (*lo > *hi) *lo = *hi;
}

/* d[k] = s[k * stride + x0] for k in [lo, hi), 0 for the rest of [0, n) */
ALWAYS_INLINE void gather_row(void *dst, const void *src, int64_t n, int64_t lo, int64_t hi, int64_t stride,
                              int64_t x0, bool f32) {
    if (f32) {
        float *restrict d = dst;
        const float *restrict s = src;
        for (int64_t k = 0; k < lo; k++) d[k] = 0;
        if (stride == 1) {
#pragma omp simd
            for (int64_t k = lo; k < hi; k++) d[k] = s[k + x0];
        } else
            for (int64_t k = lo; k < hi; k++) d[k] = s[k * stride + x0];
        for (int64_t k = hi; k < n; k++) d[k] = 0;
    } else {
        double *restrict d = dst;
        const double *restrict s = src;
        for (int64_t k = 0; k < lo; k++) d[k] = 0;
        if (stride == 1) {
#pragma omp simd
            for (int64_t k = lo; k < hi; k++) d[k] = s[k + x0];
        } else
            for (int64_t k = lo; k < hi; k++) d[k] = s[k * stride + x0];
        for (int64_t k = hi; k < n; k++) d[k] = 0;
    }
}

/* d[k * stride + x0] += s[k] for k in [lo, hi) */
ALWAYS_INLINE void scatter_row(void *dst, const void *src, int64_t lo, int64_t hi, int64_t stride, int64_t x0,
                               bool f32) {
    if (f32) {
        float *restrict d = dst;
        const float *restrict s = src;
        if (stride == 1) {
#pragma omp simd
            for (int64_t k = lo; k < hi; k++) d[k + x0] += s[k];
        } else
            for (int64_t k = lo; k < hi; k++) d[k * stride + x0] += s[k];
    } else {
        double *restrict d = dst;
        const double *restrict s = src;
        if (stride == 1) {
#pragma omp simd
            for (int64_t k = lo; k < hi; k++) d[k + x0] += s[k];
        } else
            for (int64_t k = lo; k < hi; k++) d[k * stride + x0] += s[k];
    }
}

/* ---- the common case (stride 1, no dilation along rows, output as wide as the input: a
 * "same" 3x3): a tap's band is then one contiguous stretch of the image shifted by a
 * constant, so it moves as one long run instead of one short run per output row, and only
 * the clipped edge columns are handled one by one. -------------------------------------- */
static bool same_rows(const geom *g) {
    return g->sh == 1 && g->sw == 1 && g->dw == 1 && g->OW == g->W && g->pw < g->W;
}

/* the band rows [a, b) of tap (i, j) that read inside the image (others read padding), and the
 * first and one-past-last valid output columns lo, hi of each row */
static void tap_span(const geom *g, int64_t i, int64_t j, int64_t r0, int64_t r1, int64_t *a, int64_t *b,
                     int64_t *lo, int64_t *hi) {
    int64_t first = g->ph - i * g->dh; /* the output row reading image row 0 */
    *a = first > r0 ? first : r0;
    if (*a > r1) *a = r1; /* every band row reads above the image */
    *b = first + g->H < r1 ? first + g->H : r1;
    if (*b < *a) *b = *a; /* or below it */
    valid_range(j - g->pw, 1, g->W, g->OW, lo, hi);
}

/* zero columns [0, lo) and [hi, W) of rows [0, m) of a W-wide block (a few elements per row:
 * plain stores, not memset calls) */
ALWAYS_INLINE void zero_edges(char *d, int64_t m, int64_t W, int64_t lo, int64_t hi, bool f32) {
    if (lo == 0 && hi == W) return;
    for (int64_t r = 0; r < m; r++) {
        if (f32) {
            float *row = (float *)d + r * W;
            for (int64_t k = 0; k < lo; k++) row[k] = 0;
            for (int64_t k = hi; k < W; k++) row[k] = 0;
        } else {
            double *row = (double *)d + r * W;
            for (int64_t k = 0; k < lo; k++) row[k] = 0;
            for (int64_t k = hi; k < W; k++) row[k] = 0;
        }
    }
}

ALWAYS_INLINE void im2col_same(char *col, const char *x, const geom *g, int64_t r0, int64_t r1, bool f32) {
    int64_t es = (int64_t)g->es, W = g->W, nc = (r1 - r0) * W;
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                char *row = col + ((c * g->kh + i) * g->kw + j) * nc * es;
                int64_t a, b, lo, hi;
                tap_span(g, i, j, r0, r1, &a, &b, &lo, &hi);
                memset(row, 0, (size_t)((a - r0) * W * es));
                memset(row + (b - r0) * W * es, 0, (size_t)((r1 - b) * W * es));
                if (b == a) continue;
                /* one run over the block, from the first row's column lo to the last row's hi */
                char *d = row + (a - r0) * W * es;
                const char *s = x + ((c * g->H + a - g->ph + i * g->dh) * W + j - g->pw + lo) * es;
                int64_t n = (b - a) * W - (W - hi) - lo;
                if (f32) {
                    float *restrict df = (float *)(d + lo * es);
                    const float *restrict sf = (const float *)s;
#pragma omp simd
                    for (int64_t k = 0; k < n; k++) df[k] = sf[k];
                } else {
                    double *restrict dd = (double *)(d + lo * es);
                    const double *restrict sd = (const double *)s;
#pragma omp simd
                    for (int64_t k = 0; k < n; k++) dd[k] = sd[k];
                }
                zero_edges(d, b - a, W, lo, hi, f32);
            }
}

/* the adjoint; the clipped edge columns of col (gradients of padding) are zeroed first, so
 * that the one long run adds nothing where a row wraps into the next */
ALWAYS_INLINE void col2im_same(char *x, char *col, const geom *g, int64_t r0, int64_t r1, bool f32) {
    int64_t es = (int64_t)g->es, W = g->W, nc = (r1 - r0) * W;
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                int64_t a, b, lo, hi;
                tap_span(g, i, j, r0, r1, &a, &b, &lo, &hi);
                if (b == a) continue;
                char *s = col + (((c * g->kh + i) * g->kw + j) * nc + (a - r0) * W) * es;
                char *d = x + ((c * g->H + a - g->ph + i * g->dh) * W + j - g->pw + lo) * es;
                int64_t n = (b - a) * W - (W - hi) - lo;
                zero_edges(s, b - a, W, lo, hi, f32);
                if (f32) {
                    float *restrict df = (float *)d;
                    const float *restrict sf = (const float *)(s + lo * es);
#pragma omp simd
                    for (int64_t k = 0; k < n; k++) df[k] += sf[k];
                } else {
                    double *restrict dd = (double *)d;
                    const double *restrict sd = (const double *)(s + lo * es);
#pragma omp simd
                    for (int64_t k = 0; k < n; k++) dd[k] += sd[k];
                }
            }
}

/* col [C * kh * kw, (r1 - r0) * OW] <- one image x [C, H, W], output rows [r0, r1);
 * taps that fall outside the image are 0 */
ALWAYS_INLINE void im2col_t(char *col, const char *x, const geom *g, int64_t r0, int64_t r1, bool f32) {
    int64_t es = (int64_t)g->es, nc = (r1 - r0) * g->OW;
    if (same_rows(g)) {
        im2col_same(col, x, g, r0, r1, f32);
        return;
    }
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                char *row = col + ((c * g->kh + i) * g->kw + j) * nc * es;
                int64_t x0 = j * g->dw - g->pw, lo, hi;
                valid_range(x0, g->sw, g->W, g->OW, &lo, &hi);
                for (int64_t oh = r0; oh < r1; oh++) {
                    int64_t ih = oh * g->sh - g->ph + i * g->dh;
                    bool inside = ih >= 0 && ih < g->H;
                    gather_row(row + (oh - r0) * g->OW * es, x + (c * g->H + (inside ? ih : 0)) * g->W * es, g->OW,
                               inside ? lo : 0, inside ? hi : 0, g->sw, x0, f32);
                }
            }
}

/* x [C, H, W] += the taps of col [C * kh * kw, (r1 - r0) * OW]: the adjoint of im2col_t */
ALWAYS_INLINE void col2im_t(char *x, char *col, const geom *g, int64_t r0, int64_t r1, bool f32) {
    int64_t es = (int64_t)g->es, nc = (r1 - r0) * g->OW;
    if (same_rows(g)) {
        col2im_same(x, col, g, r0, r1, f32);
        return;
    }
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                const char *row = col + ((c * g->kh + i) * g->kw + j) * nc * es;
                int64_t x0 = j * g->dw - g->pw, lo, hi;
                valid_range(x0, g->sw, g->W, g->OW, &lo, &hi);
                for (int64_t oh = r0; oh < r1; oh++) {
                    int64_t ih = oh * g->sh - g->ph + i * g->dh;
                    if (ih >= 0 && ih < g->H)
                        scatter_row(x + (c * g->H + ih) * g->W * es, row + (oh - r0) * g->OW * es, lo, hi, g->sw, x0, f32);
                }
            }
}

static void im2col(char *col, const char *x, const geom *g, int64_t r0, int64_t r1) {
    if (g->dt == TC_F32) im2col_t(col, x, g, r0, r1, true);
    else im2col_t(col, x, g, r0, r1, false);
}

static void col2im(char *x, char *col, const geom *g, int64_t r0, int64_t r1) {
    if (g->dt == TC_F32) col2im_t(x, col, g, r0, r1, true);
    else col2im_t(x, col, g, r0, r1, false);
}

/* sum of n elements, in double */
static double row_sum(const void *p, int64_t n, bool f32) {
    double s = 0;
    if (f32) {
        const float *v = p;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) s += v[i];
    } else {
        const double *v = p;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) s += v[i];
    }
    return s;
}

/* row-major C = alpha * op(A) @ op(B) + beta * C, in f32 or f64 */
static void gemm(tc_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                 const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    CBLAS_TRANSPOSE a = ta ? CblasTrans : CblasNoTrans, b = tb ? CblasTrans : CblasNoTrans;
    if (dt == TC_F32)
        cblas_sgemm(CblasRowMajor, a, b, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, (float)beta, C,
                    (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, a, b, (int)M, (int)N, (int)K, 1.0, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* ---- threading: work items are split between OpenMP threads, each calling a one-thread
 * GEMM; with a single item, OpenBLAS threads the GEMM instead. The forward pass hands out
 * bands (a batch of one still uses every thread); the backward, whole images, since the
 * bands of one image overlap in gx. OpenBLAS built on OpenMP runs one thread inside a
 * parallel region by itself; its pthread build must be told, and told back after. ------- */
typedef struct { int nt, blas; } thread_plan;

static thread_plan threads_begin(int64_t items) {
    int nt = omp_get_max_threads();
    thread_plan t = {items < nt ? (int)(items > 0 ? items : 1) : nt, 0};
    if (t.nt > 1 && openblas_get_parallel() == 1) {
        t.blas = openblas_get_num_threads();
        openblas_set_num_threads(1);
    }
    return t;
}

static void threads_end(thread_plan t) {
    if (t.blas > 0) openblas_set_num_threads(t.blas);
}

/* ---- f16 / bf16 and channels-last: through contiguous f32 (f64) copies -------------------------
 * The kernels below read and write contiguous NCHW; other operands are staged through copies
 * (a correct path, not a fast one: the CPU's channels-last conv is not tuned). f16 and bf16 stay
 * on im2col + GEMM: the direct kernel's different order of sums moved bf16 autocast's gradients
 * further from one run to a replay under gradient checkpointing than the tests allow. */
static int conv2d_run(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,
                      const tc_conv_params *p, bool direct_ok);
static int backward_run(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                        const tc_tensor *w, const tc_conv_params *p, bool direct_ok);
static bool is_half(const tc_tensor *t) { return t && t->dtype != TC_F32 && t->dtype != TC_F64; }
static bool nchw(const tc_tensor *t) { return !t || tc_is_contiguous(t); }

static tc_tensor *staged_copy(const tc_tensor *t, tc_dtype dt, bool fill) {
    if (!t) return NULL;
    tc_tensor *c = tc_empty_like(t, dt);
    if (c && fill) tc_cpu_copy(c, t);
    return c;
}

static void release_all(tc_tensor **ts, int n) {
    for (int i = 0; i < n; i++) tc_tensor_release(ts[i]);
}

/* ---- forward: y [N, O, OH, OW] = conv(x [N, C, H, W], w [O, C / G, kh, kw]) + b [O] ------ */
static int conv2d_staged_copy(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,
                           const tc_conv_params *p) {
    tc_dtype dt = is_half(x) ? TC_F32 : x->dtype;
    tc_tensor *t[4] = {staged_copy(y, dt, false), staged_copy(x, dt, true), staged_copy(w, dt, true),
                       staged_copy(b, dt, true)};
    int rc = t[0] && t[1] && t[2] && (!b || t[3]) ? conv2d_run(t[0], t[1], t[2], t[3], p, !is_half(x)) : TC_ERR;
    if (rc == TC_OK) tc_cpu_copy(y, t[0]);
    release_all(t, 4);
    return rc;
}

/* whether the direct kernel (AVX-512) can run here. A version built for AVX2 (8 channels x 16
 * pixels in 16 ymm registers, which spilled) measured no faster than im2col + GEMM: 16 -> 16
 * channels at 32x32 2.20 against 2.29 ms, 64 -> 64 at 8x8 2.03 against 1.85 ms (one thread). */
static bool avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(TC_SIMD_NO_AVX512)
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

/* ---- which path: the direct kernel (conv_direct.c) or im2col + GEMM ------------------------
 * The direct kernel takes f32 convolutions with stride 1, no dilation and one group, padding
 * less than the kernel (its input gradient is then a convolution of the same kind), and at
 * least 64 products per output (C * kh * kw): below that the per-tile work does not pay for
 * itself (5 -> 16 channels 3x3 at 32x32 took twice as long as im2col + GEMM). It is the
 * input gradient's path too. Measured on one thread, CPU time, batch 24 unless said, 3x3
 * padding 1, forward ms direct / im2col: 16 -> 16 at 32x32 2.2 / 2.8, 64 -> 64 at 8x8
 * 1.8 / 1.9, 32 -> 32 at 16x16 1.4 / 2.1, 16 -> 3 at 32x32 0.67 / 1.0, 48 -> 16 at 32x32
 * 3.8 / 5.8, 4 x 128 -> 128 at 32x32 12.4 / 15.4, 1 x 320 -> 320 at 32x32 22.6 / 26.6; 1x1
 * convolutions stay GEMMs on the image itself. Each block of output channels reads the whole
 * padded image again, so images over 2 MiB (C * H * W above 2^19 floats) go to im2col + GEMM,
 * whose packing keeps its blocks in cache: 2 threads, batch 1, ms direct / im2col: 128 -> 128
 * at 256x256 275 / 121 (a VAE decoder's), 640 -> 640 at 32x32 85 / 72, 320 -> 320 at 64x64
 * 51 / 47; under the limit 4 x 128 -> 128 at 32x32 6.5 / 7.7. Images under 32x32 with
 * C * kh * kw of 2048 and more go to im2col + GEMM too, since its bands hold 256 pixels
 * (MIN_BAND_COLS): batch 1, 3x3, CPU ms direct / im2col on one thread (two alike; the machine
 * shared): 256 -> 256 at 16x16 4.4 / 4.0, 512 -> 512 at 16x16 15.2 / 14.4, 512 -> 512 at 8x8
 * 6.2 / 4.7, 1280 -> 1280 at 16x16 154 / 86, 1280 -> 1280 at 8x8 81 / 29; at 32x32 direct
 * still wins: 256 -> 256 14.4 / 16.3, 320 -> 640 41 / 49. */
static bool direct_fits(const geom *g) {
    return avx512() && g->dt == TC_F32 && g->G == 1 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 &&
           g->ph < g->kh && g->pw < g->kw && !g->direct && g->ckk >= 64 && g->C * g->H * g->W <= (1 << 19) &&
           (g->ckk < 2048 || g->ohw >= 1024);
}

/* ---- the tiled kernel (conv_tiled.c): 3x3 at 32x32 and larger with at least TILED_MIN_C
 * input channels (Stable Diffusion's UNet and VAE levels), and their input gradients when the
 * output has as many. Batch 1, CPU ms on one thread, tiled / im2col + GEMM (the direct kernel
 * for 320 -> 640 at 32; the machine shared): 320 -> 320 at 64x64 72 / 91, 640 -> 640 at 32x32
 * 75 / 92, 960 -> 320 at 64x64 221 / 260, 1920 -> 640 at 32x32 229 / 251, 320 -> 640 at
 * 32x32 38 / 40, 128 -> 128 at 32x32 3.2 / 3.4, 512 -> 512 at 128x128 837 / 960, 128 -> 128
 * at 256x256 208 / 236. Under 32x32 im2col's 256-pixel bands stay ahead (the grid's two
 * extra columns cost more on narrow rows). */
#define TILED_MIN_C 128
static bool tiled_fits(const geom *g) {
    return avx512() && g->dt == TC_F32 && g->G == 1 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 &&
           g->kh == 3 && g->kw == 3 && g->ph <= 2 && g->pw <= 2 && g->OH + 2 >= g->H + g->ph &&
           g->OW + 2 >= g->W + g->pw && g->ohw >= 1024 && g->C >= TILED_MIN_C;
}

static tc_conv_direct direct_dims(const geom *g, bool grad_input) {
    if (!grad_input)
        return (tc_conv_direct){g->N, g->C, g->H, g->W, g->O, g->OH, g->OW, g->kh, g->kw, g->ph, g->pw, false};
    /* gx [N, C, H, W] from gy [N, O, OH, OW], padded by kh - 1 - ph rows and kw - 1 - pw columns */
    return (tc_conv_direct){g->N, g->O, g->OH, g->OW, g->C, g->H, g->W, g->kh, g->kw, g->kh - 1 - g->ph,
                            g->kw - 1 - g->pw, true};
}

/* Among those, 3x3 kernels with many channels run by Winograd's F(2x2, 3x3) (conv_winograd.c:
 * 16 products per input channel and 2x2 outputs instead of 36, plus the transforms of the
 * input and output tiles, which cost per input and per output channel). One thread, batch 24,
 * padding 1, ms direct / Winograd. Forward (and the input gradient, a convolution with C and O
 * swapped): 64 -> 64 at 8x8 1.36 / 0.78, 128 -> 64 at 8x8 2.7 / 1.4, 32 -> 48 at 16x16
 * 1.9 / 1.4, 48 -> 32 at 16x16 1.96 / 1.86, 64 -> 64 at 32x32 35 / 26, batch 1 320 -> 320 at
 * 32x32 20.6 / 12.1; but 32 -> 32 at 16x16 1.42 / 1.41, at 32x32 4.7 / 5.2, 48 -> 16 at 32x32
 * 4.3 / 6.8, 16 -> 16 at 32x32 1.24 / 2.81, 64 -> 3 at 8x8 0.29 / 0.31. The weight gradient
 * (whose transforms gather 16 channels of one pixel: planes of 4 KiB and more then fall in one
 * cache set) wins more often on small images: 64 -> 64 at 8x8 1.75 / 0.82, 64 -> 3 at 8x8
 * 0.65 / 0.27, 32 -> 16 at 16x16 1.17 / 0.93, 48 -> 48 at 32x32 18.9 / 13.0; but 32 -> 32 at
 * 32x32 6.1 / 6.5, 48 -> 16 at 32x32 5.8-10.8 / 11.6-18.6. The gathers and scatters index the
 * whole batch with 32-bit offsets. */
static bool winograd_shape(const tc_conv_direct *d) {
    return d->kh == 3 && d->kw == 3 && d->N * d->C * d->H * d->W < INT32_MAX && d->N * d->O * d->OH * d->OW < INT32_MAX;
}

static bool winograd_fits(const tc_conv_direct *d) {
    return winograd_shape(d) && d->C >= 32 && d->O >= 32 && d->C * d->O >= 1536;
}

static bool winograd_grad_weight_fits(const tc_conv_direct *d) {
    return winograd_shape(d) && d->C >= 32 && (d->OH * d->OW < 1024 || (d->O >= 32 && d->C * d->O >= 1536));
}

static int conv_stride1(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    return winograd_fits(d) ? tc_cpu_conv_winograd(y, x, w, b, d) : tc_cpu_conv_direct(y, x, w, b, d);
}

int tc_cpu_conv2d(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,
                  const tc_conv_params *p) {
    if (is_half(x) || !nchw(y) || !nchw(x) || !nchw(w)) return conv2d_staged_copy(y, x, w, b, p);
    return conv2d_run(y, x, w, b, p, true);
}

static int conv2d_run(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,
                      const tc_conv_params *p, bool direct_ok) {
    geom g = make_geom(x, y, w, p);
    if (direct_ok && tiled_fits(&g)) {
        tc_conv_direct d = direct_dims(&g, false);
        return tc_cpu_conv_tiled(tc_data(y), tc_data(x), tc_data(w), b ? tc_data(b) : NULL, &d);
    }
    if (direct_ok && direct_fits(&g)) {
        tc_conv_direct d = direct_dims(&g, false);
        return conv_stride1(tc_data(y), tc_data(x), tc_data(w), b ? tc_data(b) : NULL, &d);
    }
    size_t es = g.es;
    int64_t nbands = (g.OH + g.rows - 1) / g.rows;
    thread_plan tp = threads_begin(g.N * nbands);
    /* from the caching allocator: a fresh mapping of tens of MiB each call took page faults */
    char *cols = g.direct ? NULL : tc_cpu_alloc((size_t)(tp.nt * g.colsize) * es);
    if (!g.direct && !cols) { threads_end(tp); return tc_error("conv2d: out of memory for the column buffer"); }
    const char *xd = tc_data(x), *wd = tc_data(w), *bd = b ? tc_data(b) : NULL;
    char *yd = tc_data(y);
#pragma omp parallel for num_threads(tp.nt) schedule(dynamic)
    for (int64_t item = 0; item < g.N * nbands; item++) {
        int64_t n = item / nbands, r0 = item % nbands * g.rows, r1 = r0 + g.rows < g.OH ? r0 + g.rows : g.OH;
        int64_t nc = (r1 - r0) * g.OW;
        const char *xn = xd + n * g.C * g.H * g.W * (int64_t)es;
        char *yn = yd + (n * g.O * g.ohw + r0 * g.OW) * (int64_t)es; /* band columns of y[n] [O, OH * OW] */
        const char *src = xn + r0 * g.OW * (int64_t)es;              /* direct: band columns of x[n] */
        int64_t lds = g.ohw;
        if (!g.direct) {
            char *col = cols + omp_get_thread_num() * g.colsize * (int64_t)es;
            im2col(col, xn, &g, r0, r1);
            src = col;
            lds = nc;
        }
        if (bd) /* y starts as the bias; the GEMM adds onto it */
            for (int64_t o = 0; o < g.O; o++) {
                if (g.dt == TC_F32) {
                    float v = ((const float *)bd)[o], *r = (float *)yn + o * g.ohw;
                    for (int64_t i = 0; i < nc; i++) r[i] = v;
                } else {
                    double v = ((const double *)bd)[o], *r = (double *)yn + o * g.ohw;
                    for (int64_t i = 0; i < nc; i++) r[i] = v;
                }
            }
        for (int64_t k = 0; k < g.G; k++)
            gemm(g.dt, false, false, g.og, nc, g.ckk, wd + k * g.og * g.ckk * (int64_t)es, g.ckk,
                 src + k * g.ckk * lds * (int64_t)es, lds, bd ? 1 : 0, yn + k * g.og * g.ohw * (int64_t)es, g.ohw);
    }
    threads_end(tp);
    tc_cpu_free(cols);
    return TC_OK;
}

/* ---- backward: any of gx, gw, gb may be NULL (not wanted). gx needs w; gw needs x.
 * conv_transpose2d runs its forward through the gx path (gx = its output, gy = its input)
 * and its weight gradient through the gw path. ------------------------------------------- */
static int conv2d_backward_staged_copy(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                    const tc_tensor *x, const tc_tensor *w, const tc_conv_params *p) {
    tc_dtype dt = is_half(gy) ? TC_F32 : gy->dtype;
    tc_tensor *t[6] = {staged_copy(gx, dt, false), staged_copy(gw, dt, false), staged_copy(gb, dt, false),
                       staged_copy(gy, dt, true), staged_copy(x, dt, true), staged_copy(w, dt, true)};
    const tc_tensor *orig[6] = {gx, gw, gb, gy, x, w};
    int rc = TC_OK;
    for (int i = 0; i < 6; i++)
        if (orig[i] && !t[i]) rc = TC_ERR;
    if (rc == TC_OK) rc = backward_run(t[0], t[1], t[2], t[3], t[4], t[5], p, !is_half(gy));
    for (int i = 0; i < 3 && rc == TC_OK; i++)
        if (orig[i]) tc_cpu_copy((tc_tensor *)orig[i], t[i]);
    release_all(t, 6);
    return rc;
}

int tc_cpu_conv2d_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                           const tc_tensor *x, const tc_tensor *w, const tc_conv_params *p) {
    if (is_half(gy) || !nchw(gy) || !nchw(gx) || !nchw(gw) || !nchw(x) || !nchw(w))
        return conv2d_backward_staged_copy(gx, gw, gb, gy, x, w, p);
    return backward_run(gx, gw, gb, gy, x, w, p, true);
}

static int backward_run(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                        const tc_tensor *w, const tc_conv_params *p, bool direct_ok) {
    geom g = make_geom(gx ? gx : x, gy, w ? w : gw, p);
    if (direct_ok && gx && tiled_fits(&g) && g.O >= TILED_MIN_C) { /* gx: gy correlated with w flipped */
        tc_conv_direct d = direct_dims(&g, true);
        if (tc_cpu_conv_tiled(tc_data(gx), tc_data(gy), tc_data(w), NULL, &d) != TC_OK) return TC_ERR;
        gx = NULL;
        if (!gw && !gb) return TC_OK;
    }
    if (direct_ok && direct_fits(&g)) { /* gx and gw by the direct kernels; the rest below */
        tc_conv_direct d = direct_dims(&g, true);
        if (gx && conv_stride1(tc_data(gx), tc_data(gy), tc_data(w), NULL, &d) != TC_OK) return TC_ERR;
        gx = NULL;
        /* the weight gradient's threads take whole images: with fewer images than threads, the
         * GEMM below (threaded inside OpenBLAS) uses them all */
        d = direct_dims(&g, false);
        if (gw && g.N >= omp_get_max_threads()) {
            int rc = winograd_grad_weight_fits(&d) ? tc_cpu_conv_winograd_grad_weight(tc_data(gw), tc_data(x), tc_data(gy), &d)
                                                  : tc_cpu_conv_direct_grad_weight(tc_data(gw), tc_data(x), tc_data(gy), &d);
            if (rc != TC_OK) return TC_ERR;
            gw = NULL;
        }
        if (!gw && !gb) return TC_OK;
    }
    size_t es = g.es;
    bool f32 = g.dt == TC_F32;
    /* bands of one image overlap in gx, so threads take whole images */
    thread_plan tp = threads_begin(g.N);
    /* per thread: a column buffer, and private sums of the weight and bias gradients */
    int64_t csize = gx || gw ? g.colsize : 0, wsize = gw ? g.O * g.ckk : 0, bsize = gb ? g.O : 0;
    int64_t per = csize + wsize + bsize;
    char *ws = per ? tc_cpu_alloc((size_t)(tp.nt * per) * es) : NULL;
    if (per && !ws) { threads_end(tp); return tc_error("conv2d backward: out of memory for the column buffer"); }
    if (ws) memset(ws, 0, (size_t)(tp.nt * per) * es);
    const char *gyd = tc_data(gy), *xd = x ? tc_data(x) : NULL, *wd = w ? tc_data(w) : NULL;
    char *gxd = gx ? tc_data(gx) : NULL;
#pragma omp parallel num_threads(tp.nt)
    {
        char *mine = ws ? ws + omp_get_thread_num() * per * (int64_t)es : NULL;
        char *col = csize ? mine : NULL, *gwt = wsize ? mine + csize * (int64_t)es : NULL;
        char *gbt = bsize ? mine + (csize + wsize) * (int64_t)es : NULL;
#pragma omp for schedule(static) /* a fixed split keeps the gradient sums reproducible */
        for (int64_t n = 0; n < g.N; n++) {
            const char *gyn = gyd + n * g.O * g.ohw * (int64_t)es;
            const char *xn = xd ? xd + n * g.C * g.H * g.W * (int64_t)es : NULL;
            char *gxn = gxd ? gxd + n * g.C * g.H * g.W * (int64_t)es : NULL;
            if (gxn && !g.direct) memset(gxn, 0, (size_t)(g.C * g.H * g.W) * es);
            for (int64_t r0 = 0; r0 < g.OH; r0 += g.rows) {
                int64_t r1 = r0 + g.rows < g.OH ? r0 + g.rows : g.OH, nc = (r1 - r0) * g.OW;
                const char *gyb = gyn + r0 * g.OW * (int64_t)es; /* band columns of gy[n] [O, OH * OW] */
                if (gw) { /* gw[k] [og, ckk] += gy[k] [og, nc] @ col[k]^T [nc, ckk] */
                    const char *src = xn + r0 * g.OW * (int64_t)es;
                    int64_t lds = g.ohw;
                    if (!g.direct) {
                        im2col(col, xn, &g, r0, r1);
                        src = col;
                        lds = nc;
                    }
                    for (int64_t k = 0; k < g.G; k++)
                        gemm(g.dt, false, true, g.og, g.ckk, nc, gyb + k * g.og * g.ohw * (int64_t)es, g.ohw,
                             src + k * g.ckk * lds * (int64_t)es, lds, 1, gwt + k * g.og * g.ckk * (int64_t)es, g.ckk);
                }
                if (gx) { /* col[k] [ckk, nc] = w[k]^T [ckk, og] @ gy[k] [og, nc], then back to image rows */
                    char *dst = g.direct ? gxn + r0 * g.OW * (int64_t)es : col;
                    int64_t ldd = g.direct ? g.ohw : nc;
                    for (int64_t k = 0; k < g.G; k++)
                        gemm(g.dt, true, false, g.ckk, nc, g.og, wd + k * g.og * g.ckk * (int64_t)es, g.ckk,
                             gyb + k * g.og * g.ohw * (int64_t)es, g.ohw, 0, dst + k * g.ckk * ldd * (int64_t)es, ldd);
                    if (!g.direct) col2im(gxn, col, &g, r0, r1);
                }
            }
            if (gb)
                for (int64_t o = 0; o < g.O; o++) add_to(gbt, o, row_sum(gyn + o * g.ohw * (int64_t)es, g.ohw, f32), f32);
        }
    }
    threads_end(tp);
    /* the gradients are the sums of the threads' private ones */
    for (int which = 0; which < 2; which++) {
        tc_tensor *out = which ? gb : gw;
        if (!out) continue;
        int64_t off = csize + (which ? wsize : 0), len = which ? bsize : wsize;
        char *od = tc_data(out);
        for (int64_t i = 0; i < len; i++) {
            double s = 0;
            for (int t = 0; t < tp.nt; t++) s += ld(ws + (t * per + off) * (int64_t)es, i, f32);
            if (f32) ((float *)od)[i] = (float)s;
            else ((double *)od)[i] = s;
        }
    }
    tc_cpu_free(ws);
    return TC_OK;
}
