/* conv_direct.c (cpu): f32 convolution with stride 1, no dilation and one group, computed
 * straight from a zero-padded copy of each image, without a column matrix, in AVX-512. A tile
 * of output (8 channels x 32 pixels: one row of 32, two of 16 or four of 8) stays in 16 zmm
 * registers while the loop runs over the input channels and taps: each step loads the tile's
 * 32 input pixels once and adds them, times one weight each, into the 8 channels. conv.c
 * decides when this path runs (direct_fits). */
#include "cpu.h"

#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define AVX512 __attribute__((target("arch=x86-64-v4")))
#define OB 8 /* output channels per tile */

/* a tile of 8 output channels x 32 pixels (16 zmm accumulators), as 32 / vr rows of vr
 * pixels (vr: 32, 16 or 8): acc = bias + the sum over c, i, j of wp[c][i][j][o] *
 * x[c][i + row][j + col] (x: the tile's first input pixel in the padded image, rows wp_
 * apart, planes plane apart). Stored to y (channels ohw apart, rows ow_ apart): nr rows of nc
 * pixels. */
static inline __attribute__((always_inline)) AVX512 void tile(float *y, int64_t ohw, int64_t ow_, int64_t nr,
                                                              int64_t nc, const float *x, int64_t wp_,
                                                              int64_t plane, const float *wp, const float *bias,
                                                              int64_t C, int64_t kh, int64_t kw, const int vr) {
    __m512 acc[OB][2];
#pragma GCC unroll 8
    for (int o = 0; o < OB; o++) acc[o][0] = acc[o][1] = _mm512_set1_ps(bias[o]);
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++) {
                const float *xr = x + c * plane + i * wp_ + j;
                const float *wr = wp + ((c * kh + i) * kw + j) * OB;
                __m512 x0, x1;
                if (vr == 32) {
                    x0 = _mm512_loadu_ps(xr);
                    x1 = _mm512_loadu_ps(xr + 16);
                } else if (vr == 16) {
                    x0 = _mm512_loadu_ps(xr);
                    x1 = _mm512_loadu_ps(xr + wp_);
                } else {
                    x0 = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(xr)), _mm256_loadu_ps(xr + wp_), 1);
                    x1 = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(xr + 2 * wp_)),
                                            _mm256_loadu_ps(xr + 3 * wp_), 1);
                }
#pragma GCC unroll 8
                for (int o = 0; o < OB; o++) {
                    __m512 w = _mm512_set1_ps(wr[o]);
                    acc[o][0] = _mm512_fmadd_ps(w, x0, acc[o][0]);
                    acc[o][1] = _mm512_fmadd_ps(w, x1, acc[o][1]);
                }
            }
    int64_t rows = 32 / vr;
#pragma GCC unroll 8
    for (int o = 0; o < OB; o++) {
        float t[32], *yr = y + o * ohw;
        _mm512_storeu_ps(t, acc[o][0]);
        _mm512_storeu_ps(t + 16, acc[o][1]);
        if (nr == rows && nc == vr)
            for (int64_t r = 0; r < rows; r++) memcpy(yr + r * ow_, t + r * vr, (size_t)vr * sizeof(float));
        else
            for (int64_t r = 0; r < nr; r++) memcpy(yr + r * ow_, t + r * vr, (size_t)nc * sizeof(float));
    }
}

/* all tiles of one image for the output channels [0, O) (O <= OB is a block's last, short
 * of channels: its tiles go through spill): y [O, OH, OW] from the padded image xp [C, HP, WP]
 * (a tile may read past its row's end and below the last row: HP >= OH rounded up to the
 * tile's rows + kh - 1, WP >= OW rounded up to vr + kw - 1) and packed weights [C][kh][kw][OB], bias [OB], zero past O */
static inline __attribute__((always_inline)) AVX512 void block(float *y, const float *xp, const float *wp,
                                                               const float *bp, int64_t C, int64_t O, int64_t OH,
                                                               int64_t OW, int64_t HP, int64_t WP, int64_t kh,
                                                               int64_t kw, const int vr) {
    int64_t ohw = OH * OW, rows = 32 / vr;
    float spill[OB * 32];
    for (int64_t oh = 0; oh < OH; oh += rows)
        for (int64_t ow = 0; ow < OW; ow += vr) {
            int64_t nc = OW - ow < vr ? OW - ow : vr, nr = OH - oh < rows ? OH - oh : rows;
            const float *xt = xp + oh * WP + ow;
            if (O == OB)
                tile(y + oh * OW + ow, ohw, OW, nr, nc, xt, WP, HP * WP, wp, bp, C, kh, kw, vr);
            else {
                tile(spill, 32, vr, nr, nc, xt, WP, HP * WP, wp, bp, C, kh, kw, vr);
                for (int64_t o = 0; o < O; o++)
                    for (int64_t r = 0; r < nr; r++)
                        memcpy(y + o * ohw + (oh + r) * OW + ow, spill + o * 32 + r * vr, (size_t)nc * sizeof(float));
            }
        }
}

AVX512 static void block_32(float *y, const float *xp, const float *wp, const float *bp, int64_t C, int64_t O,
                            int64_t OH, int64_t OW, int64_t HP, int64_t WP, int64_t kh, int64_t kw) {
    block(y, xp, wp, bp, C, O, OH, OW, HP, WP, kh, kw, 32);
}
AVX512 static void block_16(float *y, const float *xp, const float *wp, const float *bp, int64_t C, int64_t O,
                            int64_t OH, int64_t OW, int64_t HP, int64_t WP, int64_t kh, int64_t kw) {
    block(y, xp, wp, bp, C, O, OH, OW, HP, WP, kh, kw, 16);
}
AVX512 static void block_8(float *y, const float *xp, const float *wp, const float *bp, int64_t C, int64_t O,
                           int64_t OH, int64_t OW, int64_t HP, int64_t WP, int64_t kh, int64_t kw) {
    block(y, xp, wp, bp, C, O, OH, OW, HP, WP, kh, kw, 8);
}

/* xp [C, HP, WP] <- x [C, H, W] placed at (ph, pw), zeros around (each element written once:
 * at 8x8 the border is most of the padded image) */
static void pad_image(float *xp, const float *x, int64_t C, int64_t H, int64_t W, int64_t HP, int64_t WP,
                      int64_t ph, int64_t pw) {
    int64_t lo = pw < 0 ? -pw : 0, hi = W + pw > WP ? WP - pw : W; /* columns of x that land inside */
    if (hi < lo) hi = lo;
    for (int64_t c = 0; c < C; c++)
        for (int64_t r = 0; r < HP; r++) {
            float *row = xp + (c * HP + r) * WP;
            int64_t h = r - ph;
            if (h < 0 || h >= H) {
                memset(row, 0, (size_t)WP * sizeof(float));
                continue;
            }
            memset(row, 0, (size_t)(lo + pw) * sizeof(float));
            memcpy(row + lo + pw, x + (c * H + h) * W + lo, (size_t)(hi - lo) * sizeof(float));
            memset(row + hi + pw, 0, (size_t)(WP - hi - pw) * sizeof(float));
        }
}

/* output channel blocks [k0, k1) of one image, through the tile for its width */
static void run_blocks(float *y, const float *xp, const float *wp, const float *bp, int64_t C, int64_t O, int64_t OH,
                       int64_t OW, int64_t HP, int64_t WP, int64_t kh, int64_t kw, int64_t k0, int64_t k1) {
    int64_t kk = C * kh * kw * OB;
    for (int64_t k = k0; k < k1; k++) {
        int64_t o0 = k * OB, n = O - o0 < OB ? O - o0 : OB;
        float *yb = y + o0 * OH * OW;
        const float *wb = wp + k * kk, *bb = bp + o0;
        if (OW <= 8) block_8(yb, xp, wb, bb, C, n, OH, OW, HP, WP, kh, kw);
        else if (OW <= 16) block_16(yb, xp, wb, bb, C, n, OH, OW, HP, WP, kh, kw);
        else block_32(yb, xp, wb, bb, C, n, OH, OW, HP, WP, kh, kw);
    }
}

int tc_cpu_conv_direct(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    int64_t N = d->N, C = d->C, H = d->H, W = d->W, O = d->O, OH = d->OH, OW = d->OW, kh = d->kh, kw = d->kw;
    /* tiles of vr x rows pixels read up to the next multiples of vr and rows, plus the taps */
    int64_t vr = OW <= 8 ? 8 : OW <= 16 ? 16 : 32, rows = 32 / vr;
    int64_t HP = (OH + rows - 1) / rows * rows + kh - 1, WP = (OW + vr - 1) / vr * vr + kw - 1, nb = (O + OB - 1) / OB;
    int64_t kk = C * kh * kw;
    int nt = omp_get_max_threads();
    int npads = N >= nt ? nt : 1;
    /* packed weights [nb][C][kh][kw][OB] and bias [nb * OB], then one padded image per thread */
    size_t wsize = (size_t)(nb * kk * OB), psize = (size_t)(C * HP * WP);
    float *buf = malloc((wsize + (size_t)(nb * OB) + (size_t)npads * psize) * sizeof(float));
    if (!buf) return tc_error("conv2d: out of memory for the padded input");
    float *wp = buf, *bp = buf + wsize, *pads = bp + nb * OB;
    for (int64_t o = 0; o < nb * OB; o++) {
        bp[o] = b && o < O ? b[o] : 0;
        for (int64_t k = 0; k < kk; k++) {
            /* d->flip: w is [C, O, kh, kw] read rotated by 180 degrees (the input gradient) */
            float v = 0;
            if (o < O) {
                int64_t c = k / (kh * kw), t = k % (kh * kw);
                v = d->flip ? w[(c * O + o) * kh * kw + (kh * kw - 1 - t)] : w[o * kk + k];
            }
            wp[(o / OB * kk + k) * OB + o % OB] = v;
        }
    }
    if (N >= nt) { /* threads take whole images */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t n = 0; n < N; n++) {
            float *xp = pads + (size_t)omp_get_thread_num() * psize;
            pad_image(xp, x + n * C * H * W, C, H, W, HP, WP, d->ph, d->pw);
            run_blocks(y + n * O * OH * OW, xp, wp, bp, C, O, OH, OW, HP, WP, kh, kw, 0, nb);
        }
    } else /* fewer images than threads: they share each image's blocks of output channels */
        for (int64_t n = 0; n < N; n++) {
            pad_image(pads, x + n * C * H * W, C, H, W, HP, WP, d->ph, d->pw);
#pragma omp parallel for num_threads(nt) schedule(dynamic)
            for (int64_t k = 0; k < nb; k++)
                run_blocks(y + n * O * OH * OW, pads, wp, bp, C, O, OH, OW, HP, WP, kh, kw, k, k + 1);
        }
    free(buf);
    return TC_OK;
}

/* ---- the weight gradient: gw [O, C, kh, kw] = the sum over images n and output pixels q of
 * gy[n][o][q] times the padded input at q moved by the tap (i, j). kw copies of each padded
 * image, shifted left by j columns and cut to the output's width (xs [C][kw][R * OW], R =
 * OH + kh - 1 rows), make every tap's input a contiguous run at a constant offset (i * OW)
 * from the output plane's, so the sums run over the flat plane in 16-pixel vectors, with no
 * edge cases but the plane's last vector. A tile holds 8 output channels x 3 taps in 24 zmm
 * accumulators; its loop runs over a group of images before the 24 sums are reduced, so that
 * 8x8 images (4 vectors each) do not spend their time in the reductions. */
#define GT 3 /* taps per tile */

/* gw[o * ldw + t] += the sums over the group's `images` images (gy planes of P pixels: channel
 * o at gy + o * P, images gstep apart; tap t's runs at xt[t], images xstep apart) for the
 * channels o < no and taps t < nt */
static inline __attribute__((always_inline)) AVX512 void grad_tile(float *gw, int64_t ldw, int no, const float *gy,
                                                                   int64_t P, int64_t gstep, const float *const *xt,
                                                                   int64_t xstep, int64_t images, const int nt) {
    __m512 acc[OB][GT];
    const float *gp[OB];
#pragma GCC unroll 8
    for (int o = 0; o < OB; o++) {
        gp[o] = gy + (o < no ? o : no - 1) * P; /* a short block repeats its last channel */
#pragma GCC unroll 3
        for (int t = 0; t < nt; t++) acc[o][t] = _mm512_setzero_ps();
    }
    for (int64_t n = 0; n < images; n++)
        for (int64_t q = 0; q < P; q += 16) {
            __mmask16 m = P - q >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - q)) - 1);
            __m512 xv[GT];
#pragma GCC unroll 3
            for (int t = 0; t < nt; t++) xv[t] = _mm512_maskz_loadu_ps(m, xt[t] + n * xstep + q);
#pragma GCC unroll 8
            for (int o = 0; o < OB; o++) {
                __m512 g = _mm512_maskz_loadu_ps(m, gp[o] + n * gstep + q);
        #pragma GCC unroll 3
        for (int t = 0; t < nt; t++) acc[o][t] = _mm512_fmadd_ps(g, xv[t], acc[o][t]);
            }
        }
    float sums[OB][GT]; /* every accumulator reduced at a fixed index: acc stays in registers */
#pragma GCC unroll 8
    for (int o = 0; o < OB; o++)
#pragma GCC unroll 3
        for (int t = 0; t < nt; t++) sums[o][t] = _mm512_reduce_add_ps(acc[o][t]);
    for (int o = 0; o < no; o++)
        for (int t = 0; t < nt; t++) gw[o * ldw + t] += sums[o][t];
}

/* xs [C][kw][R * OW] <- x [C, H, W]: row r, column q of copy j is the padded image's (r, q + j),
 * that is x[r - ph][q + j - pw], zero outside the image */
static void shifted_copies(float *xs, const float *x, const tc_conv_direct *d, int64_t R) {
    int64_t H = d->H, W = d->W, OW = d->OW;
    for (int64_t c = 0; c < d->C; c++)
        for (int64_t j = 0; j < d->kw; j++) {
            int64_t lo = d->pw - j > 0 ? d->pw - j : 0, hi = W + d->pw - j < OW ? W + d->pw - j : OW;
            if (hi < lo) hi = lo;
            for (int64_t r = 0; r < R; r++) {
                float *row = xs + ((c * d->kw + j) * R + r) * OW;
                int64_t h = r - d->ph;
                if (h < 0 || h >= H) {
                    memset(row, 0, (size_t)OW * sizeof(float));
                    continue;
                }
                memset(row, 0, (size_t)lo * sizeof(float));
                memcpy(row + lo, x + (c * H + h) * W + lo + j - d->pw, (size_t)(hi - lo) * sizeof(float));
                memset(row + hi, 0, (size_t)(OW - hi) * sizeof(float));
            }
        }
}

/* one thread's images [n0, n1): gw [O, C, kh, kw] += their sums, in groups of g images whose
 * shifted copies fill xs */
AVX512 static void grad_images(float *gw, float *xs, const float *x, const float *gy, const tc_conv_direct *d, int64_t n0,
                        int64_t n1, int64_t g) {
    int64_t C = d->C, O = d->O, P = d->OH * d->OW, R = d->OH + d->kh - 1, taps = d->kh * d->kw;
    int64_t xstep = C * d->kw * R * d->OW; /* one image's shifted copies */
    for (int64_t a = n0; a < n1; a += g) {
        int64_t images = n1 - a < g ? n1 - a : g;
        for (int64_t n = 0; n < images; n++) shifted_copies(xs + n * xstep, x + (a + n) * C * d->H * d->W, d, R);
        for (int64_t o0 = 0; o0 < O; o0 += OB)
            for (int64_t c = 0; c < C; c++)
                for (int64_t t0 = 0; t0 < taps; t0 += GT) {
                    const float *xt[GT];
                    int nt = taps - t0 < GT ? (int)(taps - t0) : GT, no = O - o0 < OB ? (int)(O - o0) : OB;
                    for (int t = 0; t < nt; t++) {
                        int64_t i = (t0 + t) / d->kw, j = (t0 + t) % d->kw;
                        xt[t] = xs + (c * d->kw + j) * R * d->OW + i * d->OW;
                    }
                    float *gwt = gw + (o0 * C + c) * taps + t0;
                    const float *gyb = gy + (a * O + o0) * P;
                    if (nt == 3) grad_tile(gwt, C * taps, no, gyb, P, O * P, xt, xstep, images, 3);
                    else if (nt == 2) grad_tile(gwt, C * taps, no, gyb, P, O * P, xt, xstep, images, 2);
                    else grad_tile(gwt, C * taps, no, gyb, P, O * P, xt, xstep, images, 1);
                }
    }
}

int tc_cpu_conv_direct_grad_weight(float *gw, const float *x, const float *gy, const tc_conv_direct *d) {
    int64_t N = d->N, P = d->OH * d->OW, R = d->OH + d->kh - 1, size = d->O * d->C * d->kh * d->kw;
    /* images per group: about 32 vectors of output plane between two reductions */
    int64_t g = (32 + (P + 15) / 16 - 1) / ((P + 15) / 16 > 0 ? (P + 15) / 16 : 1);
    if (g > N) g = N > 0 ? N : 1;
    int nt = omp_get_max_threads();
    if (nt > N) nt = N > 0 ? (int)N : 1;
    /* per thread: private sums of gw (added up in thread order at the end: reproducible), then
     * shifted copies of g images */
    size_t per = (size_t)size + (size_t)(g * d->C * d->kw * R * d->OW);
    float *buf = calloc((size_t)nt * per, sizeof(float));
    if (!buf) return tc_error("conv2d backward: out of memory for the weight gradient's buffers");
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *mine = buf + (size_t)t * per;
        grad_images(mine, mine + size, x, gy, d, N * t / nt, N * (t + 1) / nt, g);
    }
    for (int64_t k = 0; k < size; k++) {
        float s = 0;
        for (int t = 0; t < nt; t++) s += buf[(size_t)t * per + (size_t)k];
        gw[k] = s;
    }
    free(buf);
    return TC_OK;
}

#else /* the direct kernel needs gcc's AVX-512 intrinsics; conv.c does not pick it elsewhere */
int tc_cpu_conv_direct(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    (void)y, (void)x, (void)w, (void)b, (void)d;
    return tc_error("conv2d: the direct kernel is not built here");
}
int tc_cpu_conv_direct_grad_weight(float *gw, const float *x, const float *gy, const tc_conv_direct *d) {
    (void)gw, (void)x, (void)gy, (void)d;
    return tc_error("conv2d: the direct kernel is not built here");
}
#endif
