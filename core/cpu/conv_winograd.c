/* conv_winograd.c (cpu): f32 3x3 convolution with stride 1 by Winograd's F(2x2, 3x3), in
 * AVX-512: each 2x2 block of output is computed from the 4x4 input tile around it with 16
 * products per input channel instead of 36. The input tiles (B^T d B), the weights (G g G^T)
 * and the products' sums (A^T m A) are transformed as in Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks" (2015); the 16 sums over input channels are 16 small GEMMs.
 * Tiles go in blocks of 32 (two vectors of 16 tiles, from one image or several), gathered
 * from the input and scattered to the output with masks, so that no padded copy is made and
 * odd sizes need no edge case. conv.c decides when this path runs (winograd_fits). */
#include "cpu.h"

#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define AVX512 __attribute__((target("arch=x86-64-v4")))
#define TB 32 /* tiles per block: two vectors */
#define OB 8  /* output channels per GEMM tile */
#define XI 16 /* positions of a transformed 4x4 tile */

/* U [XI][nob][C][OB] <- G g G^T of each 3x3 kernel g (w [O, C, 3, 3], or with d->flip
 * [C, O, 3, 3] rotated by 180 degrees) of the blocks [k0, k1) of output channels, zero past the
 * O output channels; the 8 channels of a
 * block in the lanes of a vector (scalar code took a quarter of the time of a 64 -> 64 8x8
 * convolution). G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. */
AVX512 static void transform_weights(float *U, const float *w, const tc_conv_direct *d, int64_t nob, int64_t k0,
                                     int64_t k1) {
    int64_t C = d->C, O = d->O, ostride = d->flip ? 9 : C * 9; /* between two output channels' kernels */
    __m256i lanes = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)ostride));
    __m256 half = _mm256_set1_ps(0.5f);
    for (int64_t k = k0; k < k1; k++) {
        int64_t n = O - k * OB < OB ? O - k * OB : OB;
        __mmask8 m = (__mmask8)((1u << n) - 1);
        for (int64_t c = 0; c < C; c++) {
            const float *g0 = d->flip ? w + (c * O + k * OB) * 9 : w + (k * OB * C + c) * 9;
            __m256 g[3][3], t[4][3];
#pragma GCC unroll 9
            for (int q = 0; q < 9; q++) /* flipped: tap q is read at 8 - q */
                g[q / 3][q % 3] = _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), m, lanes, g0 + (d->flip ? 8 - q : q), 4);
#pragma GCC unroll 3
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[0][j];
                t[1][j] = _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(g[0][j], g[1][j]), g[2][j]), half);
                t[2][j] = _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(g[0][j], g[1][j]), g[2][j]), half);
                t[3][j] = g[2][j];
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                __m256 u[4] = {t[i][0], _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(t[i][0], t[i][1]), t[i][2]), half),
                               _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(t[i][0], t[i][1]), t[i][2]), half), t[i][2]};
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) _mm256_storeu_ps(U + (((i * 4 + j) * nob + k) * C + c) * OB, u[j]);
            }
        }
    }
}

/* where one block's tiles read and write: for each half (16 tiles) and each of the 16 input
 * positions, the input element's index from the batch's start (c = 0) and whether it is
 * inside the image (outside: padding, read as 0); for each of the 4 output positions, the
 * output's index (o = 0) and whether it exists (odd output sizes cut the last tiles) */
typedef struct {
    int32_t in[2][XI][16], out[2][4][16];
    __mmask16 inm[2][XI], outm[2][4];
} block_map;

static void map_block(block_map *m, const tc_conv_direct *d, int64_t t0) {
    int64_t tw = (d->OW + 1) / 2, P = (d->OH + 1) / 2 * tw, T = d->N * P;
    memset(m, 0, sizeof *m);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 16; l++) {
            int64_t t = t0 + h * 16 + l;
            if (t >= T) continue;
            int64_t n = t / P, r = t % P / tw * 2, s = t % P % tw * 2;
            for (int xi = 0; xi < XI; xi++) {
                int64_t row = r - d->ph + xi / 4, col = s - d->pw + xi % 4;
                if (row < 0 || row >= d->H || col < 0 || col >= d->W) continue;
                m->in[h][xi][l] = (int32_t)((n * d->C * d->H + row) * d->W + col);
                m->inm[h][xi] |= (__mmask16)(1u << l);
            }
            for (int k = 0; k < 4; k++) {
                int64_t row = r + k / 2, col = s + k % 2;
                if (row >= d->OH || col >= d->OW) continue;
                m->out[h][k][l] = (int32_t)((n * d->O * d->OH + row) * d->OW + col);
                m->outm[h][k] |= (__mmask16)(1u << l);
            }
        }
}

/* o[xi * step] <- (B^T v B)[xi] for the 16 positions xi of a transformed tile,
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
static inline __attribute__((always_inline)) AVX512 void store_input_tile(float *o, int64_t step, __m512 v[4][4]) {
    __m512 t[4][4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        t[0][j] = _mm512_sub_ps(v[0][j], v[2][j]);
        t[1][j] = _mm512_add_ps(v[1][j], v[2][j]);
        t[2][j] = _mm512_sub_ps(v[2][j], v[1][j]);
        t[3][j] = _mm512_sub_ps(v[1][j], v[3][j]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        _mm512_storeu_ps(o + (i * 4) * step, _mm512_sub_ps(t[i][0], t[i][2]));
        _mm512_storeu_ps(o + (i * 4 + 1) * step, _mm512_add_ps(t[i][1], t[i][2]));
        _mm512_storeu_ps(o + (i * 4 + 2) * step, _mm512_sub_ps(t[i][2], t[i][1]));
        _mm512_storeu_ps(o + (i * 4 + 3) * step, _mm512_sub_ps(t[i][1], t[i][3]));
    }
}

/* V [XI][C][TB] <- B^T d B of every tile of the block and input channel */
AVX512 static void transform_input(float *V, const float *x, const block_map *m, const tc_conv_direct *d) {
    int64_t C = d->C, hw = d->H * d->W;
    for (int64_t c = 0; c < C; c++)
        for (int h = 0; h < 2; h++) {
            __m512 v[4][4];
#pragma GCC unroll 16
            for (int xi = 0; xi < XI; xi++)
                v[xi / 4][xi % 4] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m->inm[h][xi],
                                                             _mm512_loadu_si512(m->in[h][xi]), x + c * hw, 4);
            store_input_tile(V + c * TB + h * 16, C * TB, v);
        }
}

/* M [XI][OB][TB] <- the 16 products U_xi [OB, C] @ V_xi [C, TB] of one block of output
 * channels (U at its block: rows XI apart by ustep) */
AVX512 static void products(float *M, const float *U, int64_t ustep, const float *V, int64_t C) {
    for (int xi = 0; xi < XI; xi++) {
        const float *u = U + xi * ustep, *v = V + xi * C * TB;
        __m512 acc[OB][2];
#pragma GCC unroll 8
        for (int o = 0; o < OB; o++) acc[o][0] = acc[o][1] = _mm512_setzero_ps();
        for (int64_t c = 0; c < C; c++) {
            __m512 v0 = _mm512_loadu_ps(v + c * TB), v1 = _mm512_loadu_ps(v + c * TB + 16);
#pragma GCC unroll 8
            for (int o = 0; o < OB; o++) {
                __m512 wv = _mm512_set1_ps(u[c * OB + o]);
                acc[o][0] = _mm512_fmadd_ps(wv, v0, acc[o][0]);
                acc[o][1] = _mm512_fmadd_ps(wv, v1, acc[o][1]);
            }
        }
#pragma GCC unroll 8
        for (int o = 0; o < OB; o++) {
            _mm512_storeu_ps(M + (xi * OB + o) * TB, acc[o][0]);
            _mm512_storeu_ps(M + (xi * OB + o) * TB + 16, acc[o][1]);
        }
    }
}

/* y's 2x2 blocks of the channels [o0, o0 + no) <- A^T m A + bias, A^T = [1 1 1 0; 0 1 -1 -1] */
AVX512 static void transform_output(float *y, const float *M, const float *b, const block_map *m,
                                    const tc_conv_direct *d, int64_t o0, int64_t no) {
    int64_t ohw = d->OH * d->OW;
    for (int64_t o = 0; o < no; o++) {
        __m512 bias = _mm512_set1_ps(b ? b[o0 + o] : 0.0f);
        float *yo = y + (o0 + o) * ohw;
        for (int h = 0; h < 2; h++) {
            __m512 v[4][4], s[2][4];
#pragma GCC unroll 16
            for (int xi = 0; xi < XI; xi++) v[xi / 4][xi % 4] = _mm512_loadu_ps(M + (xi * OB + o) * TB + h * 16);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                s[0][j] = _mm512_add_ps(_mm512_add_ps(v[0][j], v[1][j]), v[2][j]);
                s[1][j] = _mm512_sub_ps(_mm512_sub_ps(v[1][j], v[2][j]), v[3][j]);
            }
#pragma GCC unroll 2
            for (int r = 0; r < 2; r++) {
                __m512 a = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[r][0], s[r][1]), s[r][2]), bias);
                __m512 c = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s[r][1], s[r][2]), s[r][3]), bias);
                _mm512_mask_i32scatter_ps(yo, m->outm[h][2 * r], _mm512_loadu_si512(m->out[h][2 * r]), a, 4);
                _mm512_mask_i32scatter_ps(yo, m->outm[h][2 * r + 1], _mm512_loadu_si512(m->out[h][2 * r + 1]), c, 4);
            }
        }
    }
}

/* one work item: the block of tiles starting at t0, output channel blocks [k0, k1) */
AVX512 static void run_item(float *y, const float *x, const float *U, const float *b, const tc_conv_direct *d,
                            int64_t nob, int64_t t0, int64_t k0, int64_t k1, float *V, float *M) {
    block_map m;
    map_block(&m, d, t0);
    transform_input(V, x, &m, d);
    for (int64_t k = k0; k < k1; k++) {
        products(M, U + k * d->C * OB, nob * d->C * OB, V, d->C);
        transform_output(y, M, b, &m, d, k * OB, d->O - k * OB < OB ? d->O - k * OB : OB);
    }
}

int tc_cpu_conv_winograd(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    int64_t C = d->C, nob = (d->O + OB - 1) / OB;
    int64_t T = d->N * ((d->OH + 1) / 2) * ((d->OW + 1) / 2), nblk = (T + TB - 1) / TB;
    int nt = omp_get_max_threads();
    if (T == 0) return TC_OK;
    /* fewer blocks than threads: each block's output channels are split into groups, each
     * group transforming the block's input again */
    int64_t groups = nblk >= nt ? 1 : (nt + nblk - 1) / nblk;
    if (groups > nob) groups = nob;
    int64_t items = nblk * groups;
    if (nt > items) nt = (int)items;
    size_t usize = (size_t)(XI * nob * C * OB), per = (size_t)(XI * C * TB + XI * OB * TB);
    float *buf = tc_cpu_alloc((usize + (size_t)nt * per) * sizeof(float));
    if (!buf) return tc_error("conv2d: out of memory for the Winograd transforms");
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        transform_weights(buf, w, d, nob, nob * t / nt, nob * (t + 1) / nt);
#pragma omp barrier
        float *V = buf + usize + (size_t)t * per;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; item++) {
            int64_t blk = item / groups, g = item % groups;
            run_item(y, x, buf, b, d, nob, blk * TB, nob * g / groups, nob * (g + 1) / groups, V, V + XI * C * TB);
        }
    }
    tc_cpu_free(buf);
    return TC_OK;
}

/* ---- the weight gradient. With Y = A^T (U . V) A for each tile (. elementwise), the gradient
 * of U is (A gY A^T) . V, summed over tiles: for each of the 16 positions a GEMM gU_xi [O, C]
 * += gM_xi [O, T] @ V_xi [C, T]^T, whose sums run over tiles; then gw = G^T gU G. Here the
 * vectors hold channels, not tiles: each tile's transforms are gathered across 16 channels at
 * a time (planes apart), stored tile-major (Vt [XI][TB][Cp], gMt [XI][TB][Op], Cp and Op
 * rounded up to 16), and a GEMM tile keeps 6 output channels x 64 input channels in 24
 * accumulators over the block's tiles. Threads take whole blocks into private sums of gU,
 * added in thread order at the end (reproducible for a given thread count). */
#define GO 6 /* output channels per weight-gradient tile */

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

/* Vt [XI][TB][Cp] <- B^T d B of each tile of the block, 16 input channels per vector */
AVX512 static void transform_input_t(float *Vt, const float *x, const tc_conv_direct *d, int64_t t0) {
    int64_t tw = (d->OW + 1) / 2, P = (d->OH + 1) / 2 * tw, T = d->N * P, C = d->C, Cp = round16(C), hw = d->H * d->W;
    __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                       _mm512_set1_epi32((int)hw));
    for (int64_t l = 0; l < TB; l++) {
        int64_t t = t0 + l, n = t / P, r = t % P / tw * 2 - d->ph, s = t % P % tw * 2 - d->pw;
        for (int64_t c0 = 0; c0 < Cp; c0 += 16) {
            __mmask16 cm = t >= T ? 0 : C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
            const float *base = x + (n * C + c0) * hw;
            __m512 v[4][4];
#pragma GCC unroll 16
            for (int xi = 0; xi < XI; xi++) {
                int64_t row = r + xi / 4, col = s + xi % 4;
                bool in = row >= 0 && row < d->H && col >= 0 && col < d->W;
                v[xi / 4][xi % 4] = in ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), cm, lanes, base + row * d->W + col, 4)
                                       : _mm512_setzero_ps();
            }
            store_input_tile(Vt + l * Cp + c0, TB * Cp, v);
        }
    }
}

/* gMt [XI][TB][Op] <- A gY A^T of each tile's 2x2 output gradient (outputs past the edge are
 * 0), 16 output channels per vector; A = [1 0; 1 1; 1 -1; 0 -1] */
AVX512 static void transform_grad_t(float *gMt, const float *gy, const tc_conv_direct *d, int64_t t0) {
    int64_t tw = (d->OW + 1) / 2, P = (d->OH + 1) / 2 * tw, T = d->N * P, O = d->O, Op = round16(O);
    int64_t ohw = d->OH * d->OW;
    __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                       _mm512_set1_epi32((int)ohw));
    for (int64_t l = 0; l < TB; l++) {
        int64_t t = t0 + l, n = t / P, r = t % P / tw * 2, s = t % P % tw * 2;
        for (int64_t o0 = 0; o0 < Op; o0 += 16) {
            __mmask16 om = t >= T ? 0 : O - o0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (O - o0)) - 1);
            const float *base = gy + (n * O + o0) * ohw;
            __m512 g[2][2], a[4][2];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                int64_t row = r + k / 2, col = s + k % 2;
                g[k / 2][k % 2] = row < d->OH && col < d->OW
                                      ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), om, lanes, base + row * d->OW + col, 4)
                                      : _mm512_setzero_ps();
            }
#pragma GCC unroll 2
            for (int j = 0; j < 2; j++) {
                a[0][j] = g[0][j];
                a[1][j] = _mm512_add_ps(g[0][j], g[1][j]);
                a[2][j] = _mm512_sub_ps(g[0][j], g[1][j]);
                a[3][j] = _mm512_sub_ps(_mm512_setzero_ps(), g[1][j]);
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                float *o = gMt + ((i * 4) * TB + l) * Op + o0;
                _mm512_storeu_ps(o, a[i][0]);
                _mm512_storeu_ps(o + TB * Op, _mm512_add_ps(a[i][0], a[i][1]));
                _mm512_storeu_ps(o + 2 * TB * Op, _mm512_sub_ps(a[i][0], a[i][1]));
                _mm512_storeu_ps(o + 3 * TB * Op, _mm512_sub_ps(_mm512_setzero_ps(), a[i][1]));
            }
        }
    }
}

/* gU [XI][O][Cp] += the block's gMt_xi^T @ Vt_xi for the channels [o0, o0 + no) (no <= GO) and
 * nv vectors of input channels from c0 */
static inline __attribute__((always_inline)) AVX512 void grad_products(float *gU, const float *gMt, const float *Vt,
                                                                       int64_t O, int64_t Op, int64_t Cp, int64_t o0,
                                                                       int no, int64_t c0, const int nv) {
    for (int xi = 0; xi < XI; xi++) {
        const float *gm[GO], *v = Vt + xi * TB * Cp + c0;
        __m512 acc[GO][4];
#pragma GCC unroll 6
        for (int o = 0; o < GO; o++) {
            gm[o] = gMt + xi * TB * Op + o0 + (o < no ? o : no - 1); /* a short tile repeats its last channel */
#pragma GCC unroll 4
            for (int k = 0; k < nv; k++) acc[o][k] = _mm512_setzero_ps();
        }
        for (int64_t t = 0; t < TB; t++) {
            __m512 vv[4];
#pragma GCC unroll 4
            for (int k = 0; k < nv; k++) vv[k] = _mm512_loadu_ps(v + t * Cp + 16 * k);
#pragma GCC unroll 6
            for (int o = 0; o < GO; o++) {
                __m512 g = _mm512_set1_ps(gm[o][t * Op]);
#pragma GCC unroll 4
                for (int k = 0; k < nv; k++) acc[o][k] = _mm512_fmadd_ps(g, vv[k], acc[o][k]);
            }
        }
#pragma GCC unroll 6 /* fixed indices: a loop to no kept acc in memory throughout */
        for (int o = 0; o < GO; o++) {
            float *u = gU + (xi * O + o0 + o) * Cp + c0;
#pragma GCC unroll 4
            for (int k = 0; k < nv; k++)
                if (o < no) _mm512_storeu_ps(u + 16 * k, _mm512_add_ps(_mm512_loadu_ps(u + 16 * k), acc[o][k]));
        }
    }
}

/* one thread's blocks [b0, b1): gU [XI][O][Cp] += their sums */
AVX512 static void grad_blocks(float *gU, float *Vt, float *gMt, const float *x, const float *gy, const tc_conv_direct *d,
                               int64_t b0, int64_t b1) {
    int64_t O = d->O, Op = round16(O), Cp = round16(d->C);
    for (int64_t blk = b0; blk < b1; blk++) {
        transform_input_t(Vt, x, d, blk * TB);
        transform_grad_t(gMt, gy, d, blk * TB);
        for (int64_t o0 = 0; o0 < O; o0 += GO) {
            int no = O - o0 < GO ? (int)(O - o0) : GO;
            int64_t c0 = 0;
            for (; c0 + 64 <= Cp; c0 += 64) grad_products(gU, gMt, Vt, O, Op, Cp, o0, no, c0, 4);
            if (Cp - c0 == 48) grad_products(gU, gMt, Vt, O, Op, Cp, o0, no, c0, 3);
            else if (Cp - c0 == 32) grad_products(gU, gMt, Vt, O, Op, Cp, o0, no, c0, 2);
            else if (Cp - c0 == 16) grad_products(gU, gMt, Vt, O, Op, Cp, o0, no, c0, 1);
        }
    }
}

/* gw [O, C, 3, 3] <- G^T (the threads' gU summed in order) G, 16 input channels per vector */
AVX512 static void grad_to_weights(float *gw, const float *gU, size_t per, int nt, const tc_conv_direct *d) {
    int64_t O = d->O, C = d->C, Cp = round16(C);
    __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                       _mm512_set1_epi32(9));
    __m512 half = _mm512_set1_ps(0.5f);
    for (int64_t o = 0; o < O; o++)
        for (int64_t c0 = 0; c0 < Cp; c0 += 16) {
            __mmask16 cm = C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
            __m512 u[4][4], t[3][4];
#pragma GCC unroll 16
            for (int xi = 0; xi < XI; xi++) {
                const float *p = gU + (xi * O + o) * Cp + c0;
                __m512 s = _mm512_loadu_ps(p);
                for (int k = 1; k < nt; k++) s = _mm512_add_ps(s, _mm512_loadu_ps(p + (size_t)k * per));
                u[xi / 4][xi % 4] = s;
            }
            /* G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] on both sides */
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m512 p = _mm512_mul_ps(_mm512_add_ps(u[1][j], u[2][j]), half);
                t[0][j] = _mm512_add_ps(u[0][j], p);
                t[1][j] = _mm512_mul_ps(_mm512_sub_ps(u[1][j], u[2][j]), half);
                t[2][j] = _mm512_add_ps(p, u[3][j]);
            }
            float *g = gw + (o * C + c0) * 9;
#pragma GCC unroll 3
            for (int i = 0; i < 3; i++) {
                __m512 p = _mm512_mul_ps(_mm512_add_ps(t[i][1], t[i][2]), half);
                _mm512_mask_i32scatter_ps(g + i * 3, cm, lanes, _mm512_add_ps(t[i][0], p), 4);
                _mm512_mask_i32scatter_ps(g + i * 3 + 1, cm, lanes, _mm512_mul_ps(_mm512_sub_ps(t[i][1], t[i][2]), half), 4);
                _mm512_mask_i32scatter_ps(g + i * 3 + 2, cm, lanes, _mm512_add_ps(p, t[i][3]), 4);
            }
        }
}

int tc_cpu_conv_winograd_grad_weight(float *gw, const float *x, const float *gy, const tc_conv_direct *d) {
    int64_t T = d->N * ((d->OH + 1) / 2) * ((d->OW + 1) / 2), nblk = (T + TB - 1) / TB;
    int64_t Cp = round16(d->C), Op = round16(d->O);
    int nt = omp_get_max_threads();
    if (nt > nblk) nt = nblk > 0 ? (int)nblk : 1;
    /* per thread: its sums of gU, then the block's transforms */
    size_t gsize = (size_t)(XI * d->O * Cp), per = gsize + (size_t)(XI * TB * (Cp + Op));
    float *buf = tc_cpu_alloc((size_t)nt * per * sizeof(float));
    if (!buf) return tc_error("conv2d backward: out of memory for the Winograd weight gradient");
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *mine = buf + (size_t)t * per;
        memset(mine, 0, gsize * sizeof(float));
        grad_blocks(mine, mine + gsize, mine + gsize + XI * TB * Cp, x, gy, d, nblk * t / nt, nblk * (t + 1) / nt);
    }
    grad_to_weights(gw, buf, per, nt, d);
    tc_cpu_free(buf);
    return TC_OK;
}

#else /* needs gcc's AVX-512 intrinsics; conv.c does not pick it elsewhere */
int tc_cpu_conv_winograd(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    (void)y, (void)x, (void)w, (void)b, (void)d;
    return tc_error("conv2d: the Winograd kernel is not built here");
}
int tc_cpu_conv_winograd_grad_weight(float *gw, const float *x, const float *gy, const tc_conv_direct *d) {
    (void)gw, (void)x, (void)gy, (void)d;
    return tc_error("conv2d: the Winograd kernel is not built here");
}
#endif
