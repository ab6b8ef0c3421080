/* conv_direct.c (cpu): f32 convolution with stride 1, no dilation and one group, computed
 * straight from a zero-padded copy of each image, without a column matrix. A tile of output
 * (OB channels x VW adjacent pixels of one row) stays in registers while the loop runs over
 * the input channels and taps: each step loads VW input floats once and adds them, times one
 * weight each, into the OB channels. conv.c decides when this path runs (conv_direct_fits). */
#include "cpu.h"
#include "vecmath.h"

#include <omp.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* a tile of ob channels x 16 pixels, rows of vr pixels (16: one row; 8: two rows of 8):
 * acc[o][v] = bias[o] + the sum over c, i, j of wp[c][i][j][o] * x[c][i + v / vr][j + v % vr]
 * (x: the tile's first input pixel in the padded image, rows wp_ apart, planes plane apart).
 * Stored to y (channels ohw apart, rows ow_ apart): nr rows of nc pixels. */
ALWAYS_INLINE void tile(float *restrict y, int64_t ohw, int64_t ow_, int64_t nr, int64_t nc, const float *restrict x,
                        int64_t wp_, int64_t plane, const float *restrict wp, const float *restrict bias, int64_t C,
                        int64_t kh, int64_t kw, const int ob, const int vr) {
    float acc[8][16];
    for (int o = 0; o < ob; o++)
        for (int v = 0; v < 16; v++) acc[o][v] = bias[o];
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++) {
                const float *xr = x + c * plane + i * wp_ + j;
                const float *wr = wp + ((c * kh + i) * kw + j) * ob;
#pragma GCC unroll 8
                for (int o = 0; o < ob; o++) {
                    float wv = wr[o];
#pragma omp simd
                    for (int v = 0; v < vr; v++) acc[o][v] += wv * xr[v];
                    if (vr == 8) /* the second row */
#pragma omp simd
                        for (int v = 0; v < 8; v++) acc[o][8 + v] += wv * xr[wp_ + v];
                }
            }
    bool full = nr * vr == 16 / vr * vr && nc == vr;
    for (int o = 0; o < ob; o++) {
        float *yr = y + o * ohw;
        if (full && vr == 16) {
#pragma omp simd
            for (int v = 0; v < 16; v++) yr[v] = acc[o][v];
        } else
            for (int64_t r = 0; r < nr; r++)
                for (int64_t v = 0; v < nc; v++) yr[r * ow_ + v] = acc[o][r * vr + v];
    }
}

/* all tiles of one image: y [O, OH, OW] from the padded image xp [C, HP, WP] (HP >= OH + kh,
 * WP >= OW + kw - 1 + 16, so that a tile may read past its row's end and below the last row)
 * and the packed weights (blocks of ob output channels, [O / ob][C][kh][kw][ob], zero beyond
 * O; bias likewise padded) */
ALWAYS_INLINE void image(float *y, const float *xp, const float *wp, const float *bp, int64_t C, int64_t O,
                         int64_t OH, int64_t OW, int64_t HP, int64_t WP, int64_t kh, int64_t kw, const int ob,
                         const int vr) {
    int64_t ohw = OH * OW, kk = C * kh * kw * ob, rows = 16 / vr;
    float spill[8 * 16]; /* the rows of a last channel block that are past O: stored here */
    for (int64_t o0 = 0; o0 < O; o0 += ob) {
        const float *wb = wp + o0 / ob * kk, *bb = bp + o0;
        for (int64_t oh = 0; oh < OH; oh += rows)
            for (int64_t ow = 0; ow < OW; ow += vr) {
                int64_t nc = OW - ow < vr ? OW - ow : vr, nr = OH - oh < rows ? OH - oh : rows;
                const float *xt = xp + oh * WP + ow;
                if (o0 + ob <= O)
                    tile(y + o0 * ohw + oh * OW + ow, ohw, OW, nr, nc, xt, WP, HP * WP, wb, bb, C, kh, kw, ob, vr);
                else { /* the last block, short of channels: tile into spill, keep the real ones */
                    tile(spill, 16, vr, nr, nc, xt, WP, HP * WP, wb, bb, C, kh, kw, ob, vr);
                    for (int64_t o = 0; o0 + o < O; o++)
                        for (int64_t r = 0; r < nr; r++)
                            memcpy(y + (o0 + o) * ohw + (oh + r) * OW + ow, spill + o * 16 + r * vr,
                                   (size_t)nc * sizeof(float));
                }
            }
    }
}

/* the clones: 8 channels x 16 pixels of one row (AVX-512: 8 zmm accumulators), and of two
 * rows for images at most 8 pixels wide */
TC_SIMD_CLONES static void image_16(float *y, const float *xp, const float *wp, const float *bp, int64_t C,
                                    int64_t O, int64_t OH, int64_t OW, int64_t HP, int64_t WP, int64_t kh,
                                    int64_t kw) {
    image(y, xp, wp, bp, C, O, OH, OW, HP, WP, kh, kw, 8, 16);
}
TC_SIMD_CLONES static void image_8(float *y, const float *xp, const float *wp, const float *bp, int64_t C,
                                   int64_t O, int64_t OH, int64_t OW, int64_t HP, int64_t WP, int64_t kh,
                                   int64_t kw) {
    image(y, xp, wp, bp, C, O, OH, OW, HP, WP, kh, kw, 8, 8);
}

#define OB 8

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

/* output channel blocks [k0, k1) of one image, through the clone for its width */
static void run_blocks(float *y, const float *xp, const float *wp, const float *bp, int64_t C, int64_t O, int64_t OH,
                       int64_t OW, int64_t HP, int64_t WP, int64_t kh, int64_t kw, int64_t k0, int64_t k1) {
    int64_t o0 = k0 * OB, o1 = k1 * OB < O ? k1 * OB : O, kk = C * kh * kw * OB;
    float *yb = y + o0 * OH * OW;
    const float *wb = wp + k0 * kk, *bb = bp + o0;
    if (OW <= 8) image_8(yb, xp, wb, bb, C, o1 - o0, OH, OW, HP, WP, kh, kw);
    else image_16(yb, xp, wb, bb, C, o1 - o0, OH, OW, HP, WP, kh, kw);
}

int tc_cpu_conv_direct(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    int64_t N = d->N, C = d->C, H = d->H, W = d->W, O = d->O, OH = d->OH, OW = d->OW, kh = d->kh, kw = d->kw;
    int64_t HP = OH + kh, WP = OW + kw - 1 + 16, nb = (O + OB - 1) / OB;
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
