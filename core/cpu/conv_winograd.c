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
 * [C, O, 3, 3] rotated by 180 degrees), zero past the O output channels; the 8 channels of a
 * block in the lanes of a vector (scalar code took a quarter of the time of a 64 -> 64 8x8
 * convolution). G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. */
AVX512 static void transform_weights(float *U, const float *w, const tc_conv_direct *d, int64_t nob) {
    int64_t C = d->C, O = d->O, ostride = d->flip ? 9 : C * 9; /* between two output channels' kernels */
    __m256i lanes = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)ostride));
    __m256 half = _mm256_set1_ps(0.5f);
    for (int64_t k = 0; k < nob; k++) {
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

/* V [XI][C][TB] <- B^T d B of every tile of the block and input channel,
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
AVX512 static void transform_input(float *V, const float *x, const block_map *m, const tc_conv_direct *d) {
    int64_t C = d->C, hw = d->H * d->W;
    for (int64_t c = 0; c < C; c++)
        for (int h = 0; h < 2; h++) {
            __m512 v[4][4], t[4][4];
#pragma GCC unroll 16
            for (int xi = 0; xi < XI; xi++)
                v[xi / 4][xi % 4] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m->inm[h][xi],
                                                             _mm512_loadu_si512(m->in[h][xi]), x + c * hw, 4);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                t[0][j] = _mm512_sub_ps(v[0][j], v[2][j]);
                t[1][j] = _mm512_add_ps(v[1][j], v[2][j]);
                t[2][j] = _mm512_sub_ps(v[2][j], v[1][j]);
                t[3][j] = _mm512_sub_ps(v[1][j], v[3][j]);
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                float *o = V + ((i * 4) * C + c) * TB + h * 16;
                _mm512_storeu_ps(o, _mm512_sub_ps(t[i][0], t[i][2]));
                _mm512_storeu_ps(o + C * TB, _mm512_add_ps(t[i][1], t[i][2]));
                _mm512_storeu_ps(o + 2 * C * TB, _mm512_sub_ps(t[i][2], t[i][1]));
                _mm512_storeu_ps(o + 3 * C * TB, _mm512_sub_ps(t[i][1], t[i][3]));
            }
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
    /* fewer blocks than threads: each block's output channels are split into groups, each
     * group transforming the block's input again */
    int64_t groups = nblk >= nt ? 1 : (nt + nblk - 1) / nblk;
    if (groups > nob) groups = nob;
    int64_t items = nblk * groups;
    if (nt > items) nt = (int)items;
    size_t usize = (size_t)(XI * nob * C * OB), per = (size_t)(XI * C * TB + XI * OB * TB);
    float *buf = tc_cpu_alloc((usize + (size_t)nt * per) * sizeof(float));
    if (!buf) return tc_error("conv2d: out of memory for the Winograd transforms");
    transform_weights(buf, w, d, nob);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t item = 0; item < items; item++) {
        float *V = buf + usize + (size_t)omp_get_thread_num() * per;
        int64_t blk = item / groups, g = item % groups;
        run_item(y, x, buf, b, d, nob, blk * TB, nob * g / groups, nob * (g + 1) / groups, V, V + XI * C * TB);
    }
    tc_cpu_free(buf);
    return TC_OK;
}

#else /* needs gcc's AVX-512 intrinsics; conv.c does not pick it elsewhere */
int tc_cpu_conv_winograd(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d) {
    (void)y, (void)x, (void)w, (void)b, (void)d;
    return tc_error("conv2d: the Winograd kernel is not built here");
}
#endif
