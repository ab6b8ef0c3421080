/* linalg.c: the symmetric eigendecomposition, by LAPACK's divide-and-conquer syevd from
 * OpenBLAS, in the input's precision (f32 or f64) on the CPU. It is a host function, not a
 * device kernel, and records no autograd: it serves statistics (the Fréchet distance's matrix
 * square roots), not training. */
#include "../internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK's Fortran entries as OpenBLAS exports them: 32-bit integers, everything by
 * reference, and gfortran's hidden lengths of the two character arguments at the end */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w, float *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

/* one call of syevd on the n x n column-major matrix a (overwritten by the eigenvectors when
 * jobz is 'V'), eigenvalues into w; work and iwork grown as LAPACK asks */
typedef struct {
    void *work;
    int *iwork;
    int lwork, liwork;
} workspace;

static int syevd(tc_dtype dt, char jobz, char uplo, int n, void *a, void *w, workspace *ws) {
    int info = 0;
    if (!ws->work) { /* ask LAPACK how much room it wants */
        int query = -1, liw = 0;
        if (dt == TC_F64) {
            double lw = 0;
            dsyevd_(&jobz, &uplo, &n, a, &n, w, &lw, &query, &liw, &query, &info, 1, 1);
            ws->lwork = (int)lw;
        } else {
            float lw = 0;
            ssyevd_(&jobz, &uplo, &n, a, &n, w, &lw, &query, &liw, &query, &info, 1, 1);
            ws->lwork = (int)lw;
        }
        if (info != 0) return tc_error("linalg.eigh: LAPACK's workspace query failed (info %d)", info);
        ws->liwork = liw > 1 ? liw : 1;
        if (ws->lwork < 1) ws->lwork = 1;
        ws->work = malloc((size_t)ws->lwork * tc_dtype_size(dt));
        ws->iwork = malloc((size_t)ws->liwork * sizeof(int));
        if (!ws->work || !ws->iwork) return tc_error("linalg.eigh: out of memory for a %d x %d matrix", n, n);
    }
    if (dt == TC_F64)
        dsyevd_(&jobz, &uplo, &n, a, &n, w, ws->work, &ws->lwork, ws->iwork, &ws->liwork, &info, 1, 1);
    else
        ssyevd_(&jobz, &uplo, &n, a, &n, w, ws->work, &ws->lwork, ws->iwork, &ws->liwork, &info, 1, 1);
    if (info > 0) return tc_error("linalg.eigh: the eigenvalues of a %d x %d matrix did not converge", n, n);
    if (info < 0) return tc_error("linalg.eigh: LAPACK rejected argument %d", -info);
    return TC_OK;
}

static int check_input(tc_tensor *a) {
    char s[128];
    tc_shape_str(a->ndim, a->shape, s, sizeof s);
    if (a->ndim < 2 || a->shape[a->ndim - 1] != a->shape[a->ndim - 2])
        return tc_error("linalg.eigh: expected square matrices [..., n, n], got %s", s);
    if (a->dtype != TC_F32 && a->dtype != TC_F64)
        return tc_error("linalg.eigh: expected an f32 or f64 tensor, got %s", tc_dtype_name(a->dtype));
    if (a->storage->device.type != TC_CPU)
        return tc_error("linalg.eigh: runs on the CPU only; move the tensor there with :to(\"cpu\")");
    if (a->requires_grad && tc_grad_enabled())
        return tc_error("linalg.eigh: has no gradient; call it on a detached tensor (or under no_grad)");
    if (a->shape[a->ndim - 1] > INT_MAX / 2) return tc_error("linalg.eigh: the matrix %s is too large for LAPACK", s);
    return TC_OK;
}

static double get(const void *p, int64_t i, bool f64) { return f64 ? ((const double *)p)[i] : ((const float *)p)[i]; }
static void put(void *p, int64_t i, double v, bool f64) {
    if (f64) ((double *)p)[i] = v;
    else ((float *)p)[i] = (float)v;
}

tc_tensor *tc_linalg_eigh(tc_tensor *a, bool upper, tc_tensor **vectors) {
    if (vectors) *vectors = NULL;
    if (check_input(a) != TC_OK) return NULL;
    int nd = a->ndim;
    int64_t n = a->shape[nd - 1], batch = tc_shape_numel(nd - 2, a->shape);
    bool f64 = a->dtype == TC_F64;
    size_t es = tc_dtype_size(a->dtype);
    tc_tensor *x = tc_contiguous(a);
    tc_tensor *w = x ? tc_empty(nd - 1, a->shape, a->dtype, TC_DEV_CPU) : NULL;
    tc_tensor *v = w && vectors ? tc_empty(nd, a->shape, a->dtype, TC_DEV_CPU) : NULL;
    void *buf = w ? malloc((size_t)(n * n > 0 ? n * n : 1) * es) : NULL;
    workspace ws = {0};
    int rc = buf && (v || !vectors) ? TC_OK : TC_ERR;
    if (!buf && w) rc = tc_error("linalg.eigh: out of memory for a %lld x %lld matrix", (long long)n, (long long)n);
    /* row-major a is column-major a^T, which is a itself: what the caller calls the lower
     * triangle, LAPACK sees as the upper one */
    char uplo = upper ? 'L' : 'U', jobz = vectors ? 'V' : 'N';
    for (int64_t b = 0; rc == TC_OK && b < batch && n > 0; b++) {
        const char *src = (const char *)tc_data(x) + (size_t)(b * n * n) * es;
        for (int64_t i = 0; i < n && rc == TC_OK; i++)
            for (int64_t j = upper ? i : 0; j < (upper ? n : i + 1); j++)
                if (!isfinite(get(src, i * n + j, f64)))
                    rc = tc_error("linalg.eigh: matrix %lld has a non-finite value at [%lld, %lld]", (long long)b + 1,
                                  (long long)i + 1, (long long)j + 1);
        if (rc != TC_OK) break;
        memcpy(buf, src, (size_t)(n * n) * es);
        void *wb = (char *)tc_data(w) + (size_t)(b * n) * es;
        rc = syevd(a->dtype, jobz, uplo, (int)n, buf, wb, &ws);
        if (rc != TC_OK || !v) continue;
        /* LAPACK's column k (buf[k n ..]) is eigenvector k; tocha's is column k of row-major v */
        char *dst = (char *)tc_data(v) + (size_t)(b * n * n) * es;
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < n; k++) put(dst, i * n + k, get(buf, k * n + i, f64), f64);
    }
    free(buf);
    free(ws.work);
    free(ws.iwork);
    tc_tensor_release(x);
    if (rc != TC_OK) {
        tc_tensor_release(w);
        tc_tensor_release(v);
        return NULL;
    }
    if (vectors) *vectors = v;
    return w;
}
