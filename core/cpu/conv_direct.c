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
 * (HP >= OH + kh + 3, WP >= OW + kw - 1 + 32: a tile may read past its row's end and below
 * the last row) and packed weights [C][kh][kw][OB], bias [OB], zero past O */
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

/* xp [C, HP, WP] <- x [C, H, W] placed at (ph, pw), zeros around */
static void pad_image(float *xp, const float *x, int64_t C, int64_t H, int64_t W, int64_t HP, int64_t WP,
                      int64_t ph, int64_t pw) {
    memset(xp, 0, (size_t)(C * HP * WP) * sizeof(float));
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++) {
            int64_t r = h + ph;
            if (r < 0 || r >= HP) continue;
            int64_t lo = pw < 0 ? -pw : 0, hi = W + pw > WP ? WP - pw : W; /* columns that land inside */
            if (hi > lo) memcpy(xp + (c * HP + r) * WP + lo + pw, x + (c * H + h) * W + lo, (size_t)(hi - lo) * sizeof(float));
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
    int64_t HP = OH + kh + 3, WP = OW + kw - 1 + 32, nb = (O + OB - 1) / OB;
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

#else /* the direct kernel needs gcc's AVX-512 intrinsics; conv.c does not pick it elsewhere */
int tc_cpu_conv_direct(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    (void)y, (void)x, (void)w, (void)b, (void)d;
    return tc_error("conv2d: the direct kernel is not built here");
}
#endif
