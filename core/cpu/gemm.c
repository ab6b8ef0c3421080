/* gemm.c (cpu): batched matrix products through OpenBLAS (bf16 through gemm_bf16.c's kernel
 * where the CPU has AVX512-BF16, short f32 products through gemm_f32.c's). Each inner matrix
 * is read in whichever layout it has (row- or column-major), so transposed views need no copy. */
#include "cpu.h"

#include <cblas.h>

/* how cblas (row-major calls) reads an inner matrix of t [B, R, C]: NoTrans when the
 * elements of a row are adjacent (ld: the row stride), Trans when those of a column are
 * (ld: the column stride). A size-1 dim's stride is free. The op layer only passes
 * matrices that fit one of the two (a copy otherwise). */
static int operand(const tc_tensor *t, CBLAS_TRANSPOSE *tr, int *ld) {
    int64_t r = t->shape[1], c = t->shape[2], rs = t->stride[1], cs = t->stride[2];
    int64_t lead;
    if ((cs == 1 || c == 1) && (r == 1 || rs >= c)) { *tr = CblasNoTrans; lead = r == 1 ? c : rs; }
    else if ((rs == 1 || r == 1) && (c == 1 || cs >= r)) { *tr = CblasTrans; lead = c == 1 ? r : cs; }
    else return tc_error("gemm: an operand's strides cannot be read by BLAS");
    *ld = (int)(lead > 1 ? lead : 1);
    return TC_OK;
}

/* f16 (and bf16 where the CPU lacks AVX512-BF16) go through f32 copies */
static int gemm_via_f32(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta) {
    tc_tensor *af = tc_empty_like(a, TC_F32), *bf = tc_empty_like(b, TC_F32), *cf = tc_empty_like(c, TC_F32);
    int rc = af && bf && cf ? TC_OK : TC_ERR;
    if (rc == TC_OK) {
        tc_cpu_copy(af, a);
        tc_cpu_copy(bf, b);
        tc_cpu_copy(cf, c);
        rc = tc_cpu_gemm(cf, af, bf, alpha, beta);
        if (rc == TC_OK) tc_cpu_copy(c, cf);
    }
    tc_tensor_release(af);
    tc_tensor_release(bf);
    tc_tensor_release(cf);
    return rc;
}

/* bf16 A and B by gemm_bf16.c's kernel, straight from their memory */
static int gemm_bf16(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta) {
    CBLAS_TRANSPOSE ta, tb;
    int lda, ldb;
    if (operand(a, &ta, &lda) != TC_OK || operand(b, &tb, &ldb) != TC_OK) return TC_ERR;
    int64_t M = c->shape[1], N = c->shape[2];
    tc_gemm_bf16 g = {.M = M, .N = N, .K = a->shape[2], .lda = lda, .ldb = ldb, .ldc = N,
                      .ta = ta == CblasTrans, .tb = tb == CblasTrans, .threads = true,
                      .alpha = (float)alpha, .beta = (float)beta, .cdt = c->dtype};
    for (int64_t i = 0; i < c->shape[0]; i++) {
        g.a = (const uint16_t *)tc_data(a) + i * a->stride[0];
        g.b = (const uint16_t *)tc_data(b) + i * b->stride[0];
        g.c = (char *)tc_data(c) + i * M * N * (int64_t)tc_dtype_size(c->dtype);
        if (tc_cpu_gemm_bf16(&g) != TC_OK) return TC_ERR;
    }
    return TC_OK;
}

/* f32 products that gemm_f32.c's kernel runs faster than OpenBLAS: op(B) at most 256 columns
 * wide and 512 KiB in all (it is read again for each 6-row tile, with no cache blocking), at
 * least 2^21 multiply-adds, 256 columns only with 1,024 rows or more, and a transposed B (copied
 * once per call) only with 512 rows or more. Measured, ms OpenBLAS / the kernel, M x N x K, best
 * of 100-300, the machine shared; one thread: 1536 x 256 x 64 (linear 64 -> 256 at batch x
 * tokens, B transposed) 0.50 / 0.50, its input gradient 1536 x 64 x 256 0.50 / 0.43, its weight
 * gradient (A transposed) 256 x 64 x 1536 0.51 / 0.43, 1536 x 64 x 64 (B transposed) 0.127 /
 * 0.117, 64 x 64 x 1536 (A transposed) 0.135 / 0.110, 1024 x 32 x 64 0.045 / 0.040, 16 x 256 x
 * 512 0.055 / 0.041, 1536 x 128 x 512 2.16 / 1.93; two threads (OpenBLAS splits these poorly)
 * 1536 x 256 x 64 0.25 / 0.25, 1536 x 64 x 256 0.28-0.30 / 0.22, 256 x 64 x 1536 0.71 / 0.23,
 * 1536 x 64 x 64 0.074 / 0.060. Slower in the kernel: 384 x 256 x 64 0.125 / 0.134, 64 x 128 x
 * 256 (B transposed) 0.045 / 0.049, 1536 x 512 x 64 1.00 / 1.17, 512 x 128 x 1536 (A
 * transposed) 2.3 / 2.9, 4096 x 640 x 320 17.6 / 22.7. */
static bool short_product(int64_t M, int64_t N, int64_t K, bool tb) {
    return N <= 256 && N * K <= (1 << 17) && M * N * K >= (1 << 21) && (N < 256 || M >= 1024) && (!tb || M >= 512) &&
           tc_cpu_gemm_f32_ok();
}

/* which kernel: bf16 by its own where the CPU has AVX512-BF16, other half products through
 * f32 copies, short f32 products by gemm_f32.c's, the rest by OpenBLAS */
int tc_cpu_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta) {
    if (a->dtype == TC_BF16 && b->dtype == TC_BF16 && (c->dtype == TC_BF16 || c->dtype == TC_F32) &&
        tc_cpu_gemm_bf16_ok())
        return gemm_bf16(c, a, b, alpha, beta);
    if (a->dtype != TC_F32 && a->dtype != TC_F64) return gemm_via_f32(c, a, b, alpha, beta);
    int64_t B = c->shape[0], M = c->shape[1], N = c->shape[2], K = a->shape[2];
    if (M == 0 || N == 0) return TC_OK;
    CBLAS_TRANSPOSE ta, tb;
    int lda, ldb;
    if (operand(a, &ta, &lda) != TC_OK || operand(b, &tb, &ldb) != TC_OK) return TC_ERR;
    size_t es = tc_dtype_size(c->dtype);
    for (int64_t i = 0; i < B; i++) {
        const char *pa = (const char *)tc_data(a) + i * a->stride[0] * (int64_t)es;
        const char *pb = (const char *)tc_data(b) + i * b->stride[0] * (int64_t)es;
        char *pc = (char *)tc_data(c) + i * M * N * (int64_t)es;
        if (K == 0) { /* cblas leaves C alone when K is 0; the product is zero (and beta = 0
                         * means C is not read: it may hold garbage, even NaN) */
            for (int64_t j = 0; j < M * N; j++)
                tc_store(pc + j * (int64_t)es, c->dtype, beta == 0 ? 0 : beta * tc_load(pc + j * (int64_t)es, c->dtype));
            continue;
        }
        if (c->dtype == TC_F32 && alpha == 1 && short_product(M, N, K, tb == CblasTrans)) {
            tc_gemm_f32 g = {.M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = N, .a = (const float *)pa,
                             .b = (const float *)pb, .c = (float *)pc, .beta = (float)beta, .ta = ta == CblasTrans,
                             .tb = tb == CblasTrans, .threads = true};
            if (tc_cpu_gemm_f32(&g) != TC_OK) return TC_ERR;
        } else if (c->dtype == TC_F32)
            cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, (float)alpha, (const float *)pa, lda,
                        (const float *)pb, ldb, (float)beta, (float *)pc, (int)N);
        else
            cblas_dgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha, (const double *)pa, lda,
                        (const double *)pb, ldb, beta, (double *)pc, (int)N);
    }
    return TC_OK;
}
