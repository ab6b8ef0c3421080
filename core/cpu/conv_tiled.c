/* conv_tiled.c (cpu): f32 3x3 convolution with stride 1 and one group on large images with many
 * channels (Stable Diffusion's 32x32 and 64x64 levels), in AVX-512, without a column matrix.
 * The output is computed on the padded image's grid: output (oh, ow) sits at position
 * q = oh * WP + ow of a row WP = OW + 2 wide, so the input of tap (i, j) for 32 consecutive
 * positions is one contiguous run of the padded plane at q + i * WP + j, whatever rows it
 * crosses; the two extra columns of each row are computed and dropped. conv.c decides when
 * this path runs (tiled_fits). */
#include "cpu.h"

#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define AVX512 __attribute__((target("arch=x86-64-v4")))
#define MR 12   /* output channels per tile */
#define NR 32   /* grid positions per tile (two zmm) */
#define CC 32   /* input channels per chunk: a tile's packed weights for one chunk (13.5 KiB) stay in L1 */
#define KK 9    /* taps */
#define MIN_BLOCK 256 /* grid positions per work item, at least */

/* a tile of MR output channels x NR positions (24 zmm accumulators) over cc input channels:
 * ys [mo <= MR rows ldy apart] = (first ? bias : ys) + sum over c, taps of wp[c][tap][o] *
 * x[c * PL + tap's offset + position] (rows past mo are computed and dropped) */
static inline __attribute__((always_inline)) AVX512 void tile(float *ys, int64_t ldy, const float *x, int64_t PL,
                                                              int64_t WP, const float *wp, int64_t cc, bool first,
                                                              const float *bias, int mo) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int o = 0; o < MR; o++) {
        if (first || o >= mo) acc[o][0] = acc[o][1] = _mm512_set1_ps(bias[o]);
        else {
            acc[o][0] = _mm512_loadu_ps(ys + o * ldy);
            acc[o][1] = _mm512_loadu_ps(ys + o * ldy + 16);
        }
    }
    for (int64_t c = 0; c < cc; c++) {
        const float *xc = x + c * PL, *wc = wp + c * KK * MR;
#pragma GCC unroll 3
        for (int i = 0; i < 3; i++)
#pragma GCC unroll 3
            for (int j = 0; j < 3; j++) {
                const float *xr = xc + i * WP + j, *wr = wc + (i * 3 + j) * MR;
                __m512 x0 = _mm512_loadu_ps(xr), x1 = _mm512_loadu_ps(xr + 16);
#pragma GCC unroll 12
                for (int o = 0; o < MR; o++) {
                    __m512 wv = _mm512_set1_ps(wr[o]);
                    acc[o][0] = _mm512_fmadd_ps(wv, x0, acc[o][0]);
                    acc[o][1] = _mm512_fmadd_ps(wv, x1, acc[o][1]);
                }
            }
    }
#pragma GCC unroll 12
    for (int o = 0; o < MR; o++) {
        if (o >= mo) break;
        _mm512_storeu_ps(ys + o * ldy, acc[o][0]);
        _mm512_storeu_ps(ys + o * ldy + 16, acc[o][1]);
    }
}

/* one work item, every output channel over ntile tiles, into ys [O rows, ldy apart]: tile t
 * covers columns [t * NR, t * NR + NR) of ys and reads the grid from position pos0 + t * NR, or,
 * with tpr > 0 (rows made of tpr whole tiles), pos0 + (t / tpr) * WP + (t % tpr) * NR */
AVX512 static void item(float *ys, int64_t ldy, const float *xp, const float *wpk, const float *bias, int64_t C,
                        int64_t O, int64_t WP, int64_t PL, int64_t pos0, int64_t ntile, int64_t tpr) {
    int64_t nob = (O + MR - 1) / MR;
    for (int64_t c0 = 0; c0 < C; c0 += CC) {
        int64_t cc = C - c0 < CC ? C - c0 : CC;
        for (int64_t ob = 0; ob < nob; ob++) {
            const float *wb = wpk + (ob * C + c0) * KK * MR;
            int mo = O - ob * MR < MR ? (int)(O - ob * MR) : MR;
            for (int64_t t = 0; t < ntile; t++) {
                int64_t pos = pos0 + (tpr ? t / tpr * WP + t % tpr * NR : t * NR);
                tile(ys + ob * MR * ldy + t * NR, ldy, xp + c0 * PL + pos, PL, WP, wb, cc, c0 == 0, bias + ob * MR, mo);
            }
        }
    }
}

/* y [O, OH, OW] <- the valid positions [q0, q0 + np) of ys [O, P] (grid layout), a row's run at
 * a time */
static void copy_out(float *y, const float *ys, int64_t P, int64_t O, int64_t ohw, int64_t OW, int64_t WP,
                     int64_t q0, int64_t np) {
    for (int64_t q = q0; q < q0 + np;) {
        int64_t oh = q / WP, ow = q % WP, end = (oh + 1) * WP < q0 + np ? (oh + 1) * WP : q0 + np;
        int64_t run = (end < oh * WP + OW ? end : oh * WP + OW) - q;
        for (int64_t o = 0; run > 0 && o < O; o++)
            memcpy(y + o * ohw + oh * OW + ow, ys + o * P + (q - q0), (size_t)run * sizeof(float));
        q = end;
    }
}

/* xp [PL] <- the plane x [H, W] placed at row ph, column pw of rows WP wide, zeros around */
static void pad_plane(float *xp, const float *x, int64_t H, int64_t W, int64_t WP, int64_t PL, int64_t ph,
                      int64_t pw) {
    memset(xp, 0, (size_t)(ph * WP) * sizeof(float));
    for (int64_t h = 0; h < H; h++) {
        float *row = xp + (h + ph) * WP;
        memset(row, 0, (size_t)pw * sizeof(float));
        memcpy(row + pw, x + h * W, (size_t)W * sizeof(float));
        memset(row + pw + W, 0, (size_t)(WP - pw - W) * sizeof(float));
    }
    memset(xp + (H + ph) * WP, 0, (size_t)(PL - (H + ph) * WP) * sizeof(float));
}

int tc_cpu_conv_tiled(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    int64_t N = d->N, C = d->C, H = d->H, W = d->W, O = d->O, OH = d->OH, OW = d->OW;
    if (d->kh != 3 || d->kw != 3 || OW + 2 < W + d->pw || OH + 2 < H + d->ph)
        return tc_error("conv2d: the tiled kernel takes 3x3 kernels padded inside the output's reach");
    int64_t WP = OW + 2, HP = OH + 2, nob = (O + MR - 1) / MR;
    /* rows of whole tiles (OW a multiple of NR) are computed straight into y; otherwise the grid's
     * positions run on, through a scratch, and its two extra columns per row are dropped */
    int64_t tpr = OW % NR == 0 ? OW / NR : 0, npos = tpr ? OH * OW : OH * WP;
    /* a tile reads up to NR - 1 positions past the grid's last one, plus the taps' reach */
    int64_t PL = (HP * WP + NR + 16 + 15) / 16 * 16;
    int nt = omp_get_max_threads();
    /* images one after the other (one padded copy at a time), each cut into blocks of at least
     * MIN_BLOCK positions (whole rows in rows of tiles), as many as a multiple of the threads */
    int64_t unit = tpr ? OW : NR, nunits = npos / unit + (npos % unit != 0);
    int64_t per = (MIN_BLOCK + unit - 1) / unit, nblk = (nunits + per - 1) / per;
    nblk = (nblk + nt - 1) / nt * nt;
    per = (nunits + nblk - 1) / nblk;
    nblk = (nunits + per - 1) / per;
    int64_t P = per * unit;
    if (nblk < nt) nt = (int)nblk;
    /* packed weights [nob][C][9][MR] (zeros past O), bias [nob * MR], the padded image [C][PL],
     * and, without rows of tiles, each thread's scratch [O][P] */
    size_t wsize = (size_t)(nob * C * KK * MR), bsize = (size_t)(nob * MR), xsize = (size_t)(C * PL),
           ssize = tpr ? 0 : (size_t)(O * P);
    float *buf = tc_cpu_alloc((wsize + bsize + xsize + (size_t)nt * ssize) * sizeof(float));
    if (!buf) return tc_error("conv2d: out of memory for the tiled kernel's buffers");
    float *wpk = buf, *bp = wpk + wsize, *xp = bp + bsize, *scratch = xp + xsize;
    for (int64_t o = 0; o < nob * MR; o++) bp[o] = b && o < O ? b[o] : 0;
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static) nowait
        for (int64_t ob = 0; ob < nob; ob++)
            for (int64_t c = 0; c < C; c++) {
                float *dst = wpk + (ob * C + c) * KK * MR; /* [9][MR] */
                for (int64_t m = 0; m < MR; m++) {
                    int64_t o = ob * MR + m;
                    if (o >= O)
                        for (int64_t t = 0; t < KK; t++) dst[t * MR + m] = 0;
                    else if (!d->flip) {
                        const float *src = w + (o * C + c) * KK;
                        __builtin_prefetch(src + 8 * KK);
                        for (int64_t t = 0; t < KK; t++) dst[t * MR + m] = src[t];
                    } else { /* w is [C, O, 3, 3], read rotated by 180 degrees (an input gradient) */
                        const float *src = w + (c * O + o) * KK;
                        for (int64_t t = 0; t < KK; t++) dst[t * MR + m] = src[KK - 1 - t];
                    }
                }
            }
        float *ys = scratch + (size_t)omp_get_thread_num() * ssize;
        for (int64_t n = 0; n < N; n++) {
            float *yn = y + n * O * OH * OW;
#pragma omp for schedule(static)
            for (int64_t c = 0; c < C; c++) pad_plane(xp + c * PL, x + (n * C + c) * H * W, H, W, WP, PL, d->ph, d->pw);
#pragma omp for schedule(dynamic)
            for (int64_t blk = 0; blk < nblk; blk++) {
                int64_t q0 = blk * P, np = npos - q0 < P ? npos - q0 : P;
                if (np <= 0) continue;
                if (tpr) /* np / OW rows from row q0 / OW, into y itself */
                    item(yn + q0, OH * OW, xp, wpk, bp, C, O, WP, PL, q0 / OW * WP, np / NR, tpr);
                else {
                    item(ys, P, xp, wpk, bp, C, O, WP, PL, q0, (np + NR - 1) / NR, 0);
                    copy_out(yn, ys, P, O, OH * OW, OW, WP, q0, np);
                }
            }
        }
    }
    tc_cpu_free(buf);
    return TC_OK;
}

#else /* the tiled kernel needs gcc's AVX-512 intrinsics; conv.c does not pick it elsewhere */
int tc_cpu_conv_tiled(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    (void)y, (void)x, (void)w, (void)b, (void)d;
    return tc_error("conv2d: the tiled kernel is not built here");
}
#endif
