/* gemm_f32.c (cpu): f32 C = op(A) op(B) + beta C for the short products of small layers (linear
 * 64 -> 256 at batch x tokens: [1536 x 64] @ [64 x 256], and its two gradients), in AVX-512,
 * threaded over rows by OpenMP. A tile of 6 rows x 64 columns of C stays in 24 zmm registers over
 * the whole sum; each step loads four vectors of one row of op(B) and broadcasts six elements of
 * op(A), read in place in either layout. op(B) is used in place when its rows are contiguous and
 * copied once per call otherwise. tc_cpu_gemm decides when this path runs. */
#include "cpu.h"

#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define AVX512 __attribute__((target("arch=x86-64-v4")))
#define MR 6 /* rows of a tile */
#define NV 4 /* vectors of 16 columns in a tile */

/* C's rows [i0, i0 + mr) x columns [j0, j0 + 16 nv) (the last vector's lanes cut by last) <-
 * beta C + the sums over k of op(A)[i][k] op(B)[k][j]; op(A)[i][k] at a[i * ars + k * aks], op(B)'s
 * row k at b + k * ldb. Rows past mr repeat the last one and are not stored. */
static inline __attribute__((always_inline)) AVX512 void tile(const tc_gemm_f32 *g, const float *b, int64_t ldb,
                                                              int64_t i0, int64_t mr, int64_t j0, __mmask16 last,
                                                              const int nv, const bool ta) {
    int64_t ars = ta ? 1 : g->lda, aks = ta ? g->lda : 1;
    const float *ar[MR];
    __m512 acc[MR][NV];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        ar[r] = g->a + (i0 + (r < mr ? r : mr - 1)) * ars;
        float *cr = g->c + (i0 + (r < mr ? r : mr - 1)) * g->ldc + j0;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __mmask16 m = v == nv - 1 ? last : (__mmask16)0xffff;
            acc[r][v] = g->beta == 0 ? _mm512_setzero_ps()
                                     : _mm512_mul_ps(_mm512_set1_ps(g->beta), _mm512_maskz_loadu_ps(m, cr + 16 * v));
        }
    }
    const float *bk = b + j0;
    for (int64_t k = 0; k < g->K; k++, bk += ldb) {
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) bv[v] = _mm512_maskz_loadu_ps(v == nv - 1 ? last : (__mmask16)0xffff, bk + 16 * v);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(ar[r][k * aks]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6 /* fixed indices (a loop to mr kept acc in memory throughout) */
    for (int r = 0; r < MR; r++) {
        float *cr = g->c + (i0 + r) * g->ldc + j0;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            if (r < mr) _mm512_mask_storeu_ps(cr + 16 * v, v == nv - 1 ? last : (__mmask16)0xffff, acc[r][v]);
    }
}

#define TILE_NV(ta)                                                                                              \
    static AVX512 void tiles_##ta(const tc_gemm_f32 *g, const float *b, int64_t ldb, int64_t i0, int64_t i1) {    \
        int64_t nvec = (g->N + 15) / 16;                                                                         \
        __mmask16 tail = g->N % 16 ? (__mmask16)((1u << (g->N % 16)) - 1) : (__mmask16)0xffff;                 \
        for (int64_t j = 0; j < nvec; j += NV) {                                                                 \
            int64_t nv = nvec - j < NV ? nvec - j : NV;                                                          \
            __mmask16 last = j + nv == nvec ? tail : (__mmask16)0xffff;                                          \
            for (int64_t i = i0; i < i1; i += MR) {                                                              \
                int64_t mr = i1 - i < MR ? i1 - i : MR;                                                          \
                if (nv == 4) tile(g, b, ldb, i, mr, 16 * j, last, 4, ta);                                        \
                else if (nv == 3) tile(g, b, ldb, i, mr, 16 * j, last, 3, ta);                                   \
                else if (nv == 2) tile(g, b, ldb, i, mr, 16 * j, last, 2, ta);                                   \
                else tile(g, b, ldb, i, mr, 16 * j, last, 1, ta);                                                \
            }                                                                                                    \
        }                                                                                                        \
    }
TILE_NV(false)
TILE_NV(true)

/* out [K][N] <- B^T (b [N, K] with row stride ldb), 16 columns of out per gather */
AVX512 static void pack_transposed(float *out, const tc_gemm_f32 *g) {
    __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                       _mm512_set1_epi32((int)g->ldb));
    for (int64_t n0 = 0; n0 < g->N; n0 += 16) {
        __mmask16 m = g->N - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (g->N - n0)) - 1);
        const float *col = g->b + n0 * g->ldb;
        for (int64_t k = 0; k < g->K; k++)
            _mm512_mask_storeu_ps(out + k * g->N + n0, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lanes, col + k, 4));
    }
}

bool tc_cpu_gemm_f32_ok(void) {
#ifndef TC_SIMD_NO_AVX512
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("avx512f");
    return known;
#else
    return false;
#endif
}

int tc_cpu_gemm_f32(const tc_gemm_f32 *g) {
    const float *b = g->b;
    int64_t ldb = g->ldb;
    float *packed = NULL;
    if (g->tb) { /* op(B) = B^T: rows of op(B) are columns of B, copied out once */
        packed = tc_cpu_alloc((size_t)(g->K * g->N) * sizeof(float));
        if (!packed) return tc_error("gemm: out of memory for a packed operand");
        pack_transposed(packed, g);
        b = packed;
        ldb = g->N;
    }
    int64_t tiles = (g->M + MR - 1) / MR;
    int nt = g->threads && !omp_in_parallel() && tc_cpu_parallel(g->M * g->N * g->K / 16, TC_PAR_COMPUTE)
                 ? omp_get_max_threads() : 1;
    if (nt > tiles) nt = (int)tiles;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        int64_t i0 = tiles * t / nt * MR, i1 = tiles * (t + 1) / nt * MR;
        if (i1 > g->M) i1 = g->M;
        if (g->ta) tiles_true(g, b, ldb, i0, i1);
        else tiles_false(g, b, ldb, i0, i1);
    }
    tc_cpu_free(packed);
    return TC_OK;
}

#else /* needs gcc's AVX-512 intrinsics; tc_cpu_gemm does not pick it elsewhere */
bool tc_cpu_gemm_f32_ok(void) { return false; }
int tc_cpu_gemm_f32(const tc_gemm_f32 *g) {
    (void)g;
    return tc_error("gemm: the f32 kernel is not built here");
}
#endif
