/* gemm_bf16.c (cpu): C = alpha op(A) op(B) + beta C for bf16 A and B, accumulated in f32 by
 * AVX512-BF16's dot products of pairs (vdpbf16ps), on CPUs that have it (tc_cpu_gemm_bf16_ok;
 * elsewhere the callers take f32 copies through OpenBLAS). A is packed in panels of MR rows
 * and B in panels of NR columns, both as pairs of consecutive k (the low half the even k) and
 * zero-padded to whole panels and an even K; a register-blocked kernel computes each MR x NR
 * tile over the whole K, and its f32 sums are scaled, added to beta C and rounded once. */
#include "cpu.h"

#define MR 12 /* rows of a tile: 12 x 2 zmm accumulators, 2 for B, 1 for A's broadcast pair */
#define NR 32 /* columns of a tile: two zmm of 16 f32 sums */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && !defined(TC_SIMD_NO_AVX512)
#include <immintrin.h>
#define HAVE_BF16_KERNEL 1
#endif

bool tc_cpu_gemm_bf16_ok(void) {
#ifdef HAVE_BF16_KERNEL
    static int known = -1;
    if (known < 0)
        known = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl");
    return known;
#else
    return false;
#endif
}

#ifdef HAVE_BF16_KERNEL
/* ---- packing -------------------------------------------------------------------------------
 * Panels of `width` lines (rows of A, columns of B) of the operand x, whose line i has its
 * element k at x[i * is + k * ks]: panel p's pair q (elements 2q and 2q + 1, the low half the
 * even one) of line j goes to out[(p * KP + q) * width + j]; lines past n and a k past K are
 * zero. The writes run along j, so B's rows (is = 1) pack as vector loads. */
static void pack(uint32_t *out, const uint16_t *x, int64_t n, int64_t K, int64_t is, int64_t ks, int width) {
    int64_t KP = (K + 1) / 2, panels = (n + width - 1) / width;
    for (int64_t p = 0; p < panels; p++) {
        int64_t w = n - p * width < width ? n - p * width : width; /* lines present */
        for (int64_t q = 0; q < KP; q++) {
            uint32_t *o = out + (p * KP + q) * width;
            const uint16_t *lo = x + p * width * is + 2 * q * ks, *hi = lo + ks;
            if (2 * q + 1 < K) {
                if (is == 1) {
#pragma omp simd
                    for (int64_t j = 0; j < w; j++) o[j] = (uint32_t)lo[j] | (uint32_t)hi[j] << 16;
                } else if (ks == 1) /* a pair is one 32-bit word of the line (little-endian) */
                    for (int64_t j = 0; j < w; j++) memcpy(o + j, lo + j * is, sizeof *o);
                else
                    for (int64_t j = 0; j < w; j++) o[j] = (uint32_t)lo[j * is] | (uint32_t)hi[j * is] << 16;
            } else
                for (int64_t j = 0; j < w; j++) o[j] = lo[j * is];
            for (int64_t j = w; j < width; j++) o[j] = 0;
        }
    }
}

/* ---- the kernel: the m x n corner (m <= MR, n <= NR) of C (row stride ldc, f32 or bf16) =
 * alpha (sums over KP pairs of a's row pairs times b's column pairs) + beta C ---------------- */
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
TARGET static inline __m512 load_c(const char *c, int64_t off, __mmask16 k, bool bf16) {
    if (!bf16) return _mm512_maskz_loadu_ps(k, (const float *)c + off);
    __m256i h = _mm256_maskz_loadu_epi16(k, (const uint16_t *)c + off);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TARGET static inline void store_c(char *c, int64_t off, __mmask16 k, __m512 v, bool bf16) {
    if (!bf16) _mm512_mask_storeu_ps((float *)c + off, k, v);
    else _mm256_mask_storeu_epi16((uint16_t *)c + off, k, (__m256i)_mm512_cvtneps_pbh(v));
}

TARGET static void tile(char *c, int64_t ldc, bool bf16, int m, int n, const uint32_t *a, const uint32_t *b,
                        int64_t KP, float alpha, float beta) {
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t q = 0; q < KP; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + q * NR), b1 = (__m512bh)_mm512_loadu_si512(b + q * NR + 16);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[q * MR + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
    __mmask16 k0 = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1), k1 = (__mmask16)(n <= 16 ? 0 : n >= 32 ? 0xffff : (1u << (n - 16)) - 1);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int i = 0; i < m; i++) {
        __m512 v0 = _mm512_mul_ps(acc[i][0], va), v1 = _mm512_mul_ps(acc[i][1], va);
        if (beta != 0) { /* with beta 0, C is not read: it may hold anything, NaN included */
            v0 = _mm512_fmadd_ps(load_c(c, i * ldc, k0, bf16), vb, v0);
            v1 = _mm512_fmadd_ps(load_c(c, i * ldc + 16, k1, bf16), vb, v1);
        }
        store_c(c, i * ldc, k0, v0, bf16);
        store_c(c, i * ldc + 16, k1, v1, bf16);
    }
}
#endif

int tc_cpu_gemm_bf16(const tc_gemm_bf16 *g) {
#ifdef HAVE_BF16_KERNEL
    int64_t M = g->M, N = g->N, K = g->K, KP = (K + 1) / 2;
    int64_t mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
    if (M == 0 || N == 0) return TC_OK;
    uint32_t *pa = malloc((size_t)(mp * MR * (KP ? KP : 1)) * sizeof *pa);
    uint32_t *pb = malloc((size_t)(np * NR * (KP ? KP : 1)) * sizeof *pb);
    if (!pa || !pb) { free(pa); free(pb); return tc_error("gemm: out of memory packing bf16 operands"); }
    /* A(i, k) = a[i * lda + k] (a[k * lda + i] transposed); B(k, j) = b[k * ldb + j] (b[j * ldb + k]) */
    pack(pa, g->a, M, K, g->ta ? 1 : g->lda, g->ta ? g->lda : 1, MR);
    pack(pb, g->b, N, K, g->tb ? g->ldb : 1, g->tb ? 1 : g->ldb, NR);
    size_t es = tc_dtype_size(g->cdt);
    /* a column panel of B stays in cache while the row panels of A pass it */
#pragma omp parallel for collapse(2) schedule(static) if (g->threads && mp * np > 1)
    for (int64_t jp = 0; jp < np; jp++)
        for (int64_t ip = 0; ip < mp; ip++) {
            int m = (int)(M - ip * MR < MR ? M - ip * MR : MR), n = (int)(N - jp * NR < NR ? N - jp * NR : NR);
            tile((char *)g->c + (ip * MR * g->ldc + jp * NR) * (int64_t)es, g->ldc, g->cdt == TC_BF16, m, n,
                 pa + ip * KP * MR, pb + jp * KP * NR, KP, g->alpha, g->beta);
        }
    free(pa);
    free(pb);
    return TC_OK;
#else
    (void)g;
    return tc_error("gemm: this build or CPU has no bf16 kernel");
#endif
}
