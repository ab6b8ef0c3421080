/* gemm.cu: batched matrix products through cuBLASLt, for f32 (TF32 when allowed), f64, and
 * f16/bf16 accumulated in f32. Each inner matrix is read in whichever layout it has, as the
 * CPU's gemm (core/cpu/gemm.c) reads it, and the descriptors and algorithm of each shape are
 * kept in a small cache. Not built under the CPU emulation (the table takes the CPU's gemm). */
#include "cuda.h"

#include <cublasLt.h>

/* TCUBLAS_CHECK(call): as TCU_CHECK, for a cuBLASLt status */
#define TCUBLAS_CHECK(call)                                                               \
    do {                                                                                  \
        cublasStatus_t tcu_s_ = (call);                                                   \
        if (tcu_s_ != CUBLAS_STATUS_SUCCESS)                                              \
            return tcu_fail(#call, cublasLtGetStatusName(tcu_s_), __FILE__, __LINE__);    \
    } while (0)

#define WORKSPACE_BYTES ((size_t)32 << 20) /* what cuBLAS asks for on Hopper */
#define CACHE_SIZE 64

/* ---- the handle and its workspace: made on first use, kept for the process -------------------- */
static cublasLtHandle_t lt_handle;
static void *workspace;
static size_t workspace_bytes;

static int lt_init(void) {
    if (lt_handle) return TC_OK;
    TCUBLAS_CHECK(cublasLtCreate(&lt_handle));
    /* without a workspace cuBLASLt still works, with fewer algorithms */
    workspace = tc_cuda_alloc(WORKSPACE_BYTES);
    workspace_bytes = workspace ? WORKSPACE_BYTES : 0;
    return TC_OK;
}

/* ---- one product's shape, and what cuBLASLt needs for it ----------------------------------------
 * tocha's c [M, N] = a [M, K] @ b [K, N] is row-major; cuBLASLt's matrices are column-major,
 * where the same memory holds c^T [N, M] = b^T @ a^T: cuBLASLt's A is tocha's b, its B is a.
 * A row-major matrix t [R, C] is, read column-major, t^T (op N, layout C x R); a column-major
 * one is t itself (op T, layout R x C). */
typedef struct {
    tc_dtype dt;
    bool tf32;
    cublasOperation_t op[2];   /* cuBLASLt's A (tocha's b) and B (tocha's a) */
    uint64_t rows[2], cols[2];
    int64_t ld[2], batch_stride[2];
    int64_t m, n, k, batch;    /* cuBLASLt's: m = N, n = M */
    uint32_t align[3];         /* of the A, B, C pointers, in bytes (up to 256) */
} gemm_key;

typedef struct {
    gemm_key key;
    bool used;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t layout[3]; /* A, B, C (C also serves as D) */
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

static gemm_plan cache[CACHE_SIZE];
static int cache_next; /* the slot the next new plan replaces (round robin) */

/* how cuBLASLt reads an inner matrix of t [B, R, C]: as the CPU's operand() decides it */
static int operand(const tc_tensor *t, int which, gemm_key *k) {
    int64_t r = t->shape[1], c = t->shape[2], rs = t->stride[1], cs = t->stride[2], lead;
    if ((cs == 1 || c == 1) && (r == 1 || rs >= c)) {
        k->op[which] = CUBLAS_OP_N;
        k->rows[which] = (uint64_t)c;
        k->cols[which] = (uint64_t)r;
        lead = r == 1 ? c : rs;
    } else if ((rs == 1 || r == 1) && (c == 1 || cs >= r)) {
        k->op[which] = CUBLAS_OP_T;
        k->rows[which] = (uint64_t)r;
        k->cols[which] = (uint64_t)c;
        lead = c == 1 ? r : cs;
    } else {
        return tc_error("gemm: an operand's strides cannot be read by cuBLASLt");
    }
    k->ld[which] = lead > 1 ? lead : 1;
    k->batch_stride[which] = t->shape[0] > 1 ? t->stride[0] : 0;
    return TC_OK;
}

/* the largest power of two (up to 256) that divides the address */
static uint32_t alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 1;
    while (al < 256 && a % (al * 2) == 0) al *= 2;
    return al;
}

static void plan_free(gemm_plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    for (int i = 0; i < 3; i++)
        if (p->layout[i]) cublasLtMatrixLayoutDestroy(p->layout[i]);
    memset(p, 0, sizeof *p);
}

static int layout_new(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld,
                      int32_t batch, int64_t stride) {
    TCUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, t, rows, cols, ld));
    TCUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
    TCUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    return TC_OK;
}

/* the descriptors of k and the heuristic's first algorithm for them */
static int plan_fill(gemm_plan *p, const gemm_key *k, cublasLtMatmulPreference_t pref) {
    cudaDataType data = k->dt == TC_F64    ? CUDA_R_64F
                        : k->dt == TC_F16  ? CUDA_R_16F
                        : k->dt == TC_BF16 ? CUDA_R_16BF
                                           : CUDA_R_32F;
    /* f16 and bf16 accumulate and scale in f32 */
    cudaDataType scale = k->dt == TC_F64 ? CUDA_R_64F : CUDA_R_32F;
    cublasComputeType_t compute = k->dt == TC_F64 ? CUBLAS_COMPUTE_64F
                                  : k->tf32       ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                  : CUBLAS_COMPUTE_32F;
    TCUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, compute, scale));
    TCUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &k->op[0], sizeof k->op[0]));
    TCUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &k->op[1], sizeof k->op[1]));
    int32_t batch = (int32_t)k->batch;
    for (int i = 0; i < 2; i++)
        if (layout_new(&p->layout[i], data, k->rows[i], k->cols[i], k->ld[i], batch, k->batch_stride[i]) != TC_OK)
            return TC_ERR;
    int64_t c_stride = k->batch > 1 ? k->m * k->n : 0; /* c [B, M, N] contiguous: c^T [N, M], ld N */
    if (layout_new(&p->layout[2], data, (uint64_t)k->m, (uint64_t)k->n, k->m, batch, c_stride) != TC_OK) return TC_ERR;
    uint64_t ws = workspace_bytes;
    TCUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    /* the heuristic assumes 256-byte aligned pointers unless told: views may be less aligned */
    const cublasLtMatmulPreferenceAttributes_t attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        TCUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr[i], &k->align[i < 3 ? i : 2], sizeof(uint32_t)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    TCUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_handle, p->desc, p->layout[0], p->layout[1], p->layout[2],
                                                 p->layout[2], pref, 1, &res, &found));
    if (found < 1)
        return tc_error("gemm: cuBLASLt has no algorithm for %s [%lld x %lld] @ [%lld x %lld] (batch %lld)",
                        tc_dtype_name(k->dt), (long long)k->n, (long long)k->k, (long long)k->k, (long long)k->m,
                        (long long)k->batch);
    p->algo = res.algo;
    memcpy(&p->key, k, sizeof *k); /* padding included: keys are compared with memcmp */
    p->used = true;
    return TC_OK;
}

/* the cached plan for k, or a new one in the next slot; NULL on failure */
static gemm_plan *plan_for(const gemm_key *k) {
    for (int i = 0; i < CACHE_SIZE; i++)
        if (cache[i].used && memcmp(&cache[i].key, k, sizeof *k) == 0) return &cache[i];
    gemm_plan *p = &cache[cache_next];
    cache_next = (cache_next + 1) % CACHE_SIZE;
    plan_free(p);
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
    int rc = s == CUBLAS_STATUS_SUCCESS
                 ? plan_fill(p, k, pref)
                 : tcu_fail("cublasLtMatmulPreferenceCreate(&pref)", cublasLtGetStatusName(s), __FILE__, __LINE__);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (rc != TC_OK) { plan_free(p); return NULL; }
    return p;
}

/* ---- K = 0: c = beta * c (beta = 0 writes zeros without reading c, which may hold NaN) -------- */
__global__ void scale_kernel(void *c, tc_dtype dt, int64_t n, double beta) {
    TCU_GRID_STRIDE(i, n) tcu_store(c, dt, i, beta == 0 ? 0.0 : beta * tcu_load(c, dt, i));
}

/* ---- the entry -------------------------------------------------------------------------------- */
/* c[b] = alpha * a[b] @ b[b] + beta * c[b]; a [B, M, K], b [B, K, N], c [B, M, N] contiguous */
extern "C" int tc_cuda_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta) {
    tc_dtype dt = c->dtype;
    if (!tc_dtype_is_float(dt) || a->dtype != dt || b->dtype != dt)
        return tc_error("gemm: dtype %s is not supported on cuda", tc_dtype_name(a->dtype));
    int64_t B = c->shape[0], M = c->shape[1], N = c->shape[2], K = a->shape[2];
    if (B == 0 || M == 0 || N == 0) return TC_OK;
    if (K == 0) {
        TCU_LAUNCH(scale_kernel, tcu_blocks(B * M * N), TCU_THREADS, 0, tcu_ptr(c), dt, B * M * N, beta);
        TCU_LAUNCHED("gemm");
        return TC_OK;
    }
    if (B > INT32_MAX) return tc_error("gemm: batch of %lld matrices is too large for cuBLASLt", (long long)B);
    gemm_key k;
    memset(&k, 0, sizeof k); /* padding too: keys are compared with memcmp */
    k.dt = dt;
    k.tf32 = dt == TC_F32 && tc_cuda_allow_tf32();
    if (operand(b, 0, &k) != TC_OK || operand(a, 1, &k) != TC_OK) return TC_ERR;
    k.m = N;
    k.n = M;
    k.k = K;
    k.batch = B;
    k.align[0] = alignment(tcu_ptr(b));
    k.align[1] = alignment(tcu_ptr(a));
    k.align[2] = alignment(tcu_ptr(c));
    if (lt_init() != TC_OK) return TC_ERR;
    gemm_plan *p = plan_for(&k);
    if (!p) return TC_ERR;
    float alpha32 = (float)alpha, beta32 = (float)beta;
    const void *al = dt == TC_F64 ? (const void *)&alpha : (const void *)&alpha32;
    const void *be = dt == TC_F64 ? (const void *)&beta : (const void *)&beta32;
    TCUBLAS_CHECK(cublasLtMatmul(lt_handle, p->desc, al, tcu_ptr(b), p->layout[0], tcu_ptr(a), p->layout[1], be,
                                 tcu_ptr(c), p->layout[2], tcu_ptr(c), p->layout[2], &p->algo, workspace,
                                 workspace_bytes, tcu_stream()));
    return TC_OK;
}
