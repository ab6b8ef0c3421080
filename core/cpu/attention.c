/* attention.c (cpu): dropout, and scaled dot-product attention with its fused backward.
 * Attention works one batch slice at a time with an [L, S] scores buffer, two OpenBLAS
 * GEMMs forward (QK^T, PV) and four backward; both share the Philox dropout rule. f32
 * without dropout has its own path: float scores and slices spread over the threads. */
#include "cpu.h"
#include "philox.h"
#include "vecmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#define PAR_MIN tc_cpu_par_min(TC_PAR_COMPUTE) /* elements below which one thread runs (cpu.h) */

/* ---- dropout -------------------------------------------------------------------------------- */

/* r[j] *= keep / (1 - p) for the elements first + j of the Philox stream at (seed, offset) */
static void drop_row(double *r, int64_t n, uint64_t first, double p, uint64_t seed, uint64_t offset) {
    double scale = p < 1 ? 1 / (1 - p) : 0;
    uint32_t w[4];
    for (int64_t j = 0; j < n; j++) {
        uint64_t i = first + (uint64_t)j;
        if (j == 0 || i % 4 == 0) tc_philox(seed, offset + i / 4, w);
        r[j] = tc_philox_u01_open(w[i % 4]) >= p ? r[j] * scale : 0;
    }
}

/* runs of the last dim (any strides), or blocks of a contiguous x */
int tc_cpu_dropout(tc_tensor *y, const tc_tensor *x, double p, uint64_t seed, uint64_t offset) {
    int64_t numel = tc_numel(x);
    bool flat = tc_is_contiguous(x) || x->ndim == 0;
    int64_t run = flat ? 4096 : x->shape[x->ndim - 1];
    if (numel == 0) return TC_OK;
    int64_t nrun = (numel + run - 1) / run, es = (int64_t)tc_dtype_size(x->dtype);
    int err = 0;
#pragma omp parallel reduction(max : err) if (numel >= PAR_MIN)
    {
        double *r = malloc((size_t)run * sizeof *r);
        if (!r) err = 1;
#pragma omp for schedule(static)
        for (int64_t k = 0; k < nrun; k++) {
            if (!r) continue;
            int64_t first = k * run, n = first + run <= numel ? run : numel - first;
            const char *src = flat ? (const char *)tc_data(x) + first * es
                                   : (const char *)tc_data(x) + tc_cpu_offset_of(k, x->ndim - 1, x->shape, x->stride) * es;
            tc_cpu_load_row(r, src, n, flat ? 1 : x->stride[x->ndim - 1], x->dtype);
            drop_row(r, n, (uint64_t)first, p, seed, offset);
            tc_cpu_store_row((char *)tc_data(y) + first * (int64_t)tc_dtype_size(y->dtype), r, n, 1, y->dtype);
        }
        free(r);
    }
    return err ? tc_error("dropout: out of memory") : TC_OK;
}

/* ---- GEMM on one slice ---------------------------------------------------------------------- */
typedef struct {
    char *p;
    bool t; /* stored transposed: element (i, j) at p[i + j * ld] */
    int ld;
} mat;

/* slice b of t's inner matrix (its last two dims) */
static mat mat_of(const tc_tensor *t, int64_t b) {
    int nb = t->ndim - 2;
    int64_t rows = t->shape[nb], cols = t->shape[nb + 1], rs = t->stride[nb], cs = t->stride[nb + 1];
    mat m = {(char *)tc_data(t) + tc_cpu_offset_of(b, nb, t->shape, t->stride) * (int64_t)tc_dtype_size(t->dtype),
             false, 1};
    if (cs == 1 && (rows <= 1 || rs >= cols)) m.ld = (int)(rows <= 1 ? cols : rs);
    else { m.t = true; m.ld = (int)(cols <= 1 ? rows : cs); }
    if (m.ld < 1) m.ld = 1;
    return m;
}

static mat dense(void *p, int64_t cols) { return (mat){p, false, (int)(cols > 0 ? cols : 1)}; }
static mat transposed(mat m) { m.t = !m.t; return m; }

/* c [M, N] (row-major, ld N) = alpha a @ b + beta c, in dtype dt (f32 or f64) */
static void gemm(tc_dtype dt, int64_t M, int64_t N, int64_t K, double alpha, mat a, mat b, double beta, void *c) {
    if (M == 0 || N == 0) return;
    if (K == 0) { /* cblas leaves c alone when K is 0; beta 0 means overwrite (c may be garbage) */
        for (int64_t i = 0; i < M * N; i++) {
            if (dt == TC_F32) ((float *)c)[i] = beta == 0 ? 0.0f : (float)(beta * ((float *)c)[i]);
            else ((double *)c)[i] = beta == 0 ? 0.0 : beta * ((double *)c)[i];
        }
        return;
    }
    CBLAS_TRANSPOSE ta = a.t ? CblasTrans : CblasNoTrans, tb = b.t ? CblasTrans : CblasNoTrans;
    if (dt == TC_F32)
        cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, (float)alpha, (const float *)a.p, a.ld,
                    (const float *)b.p, b.ld, (float)beta, (float *)c, (int)N);
    else
        cblas_dgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha, (const double *)a.p, a.ld,
                    (const double *)b.p, b.ld, beta, (double *)c, (int)N);
}

/* ---- attention --------------------------------------------------------------------------- */
typedef struct {
    int nb;                /* batch dims */
    int64_t B, L, S, E, Ev;
    tc_dtype dt;           /* compute dtype: f32 or f64 */
    const tc_tensor *mask;
    const tc_sdpa_params *p;
} attn;

static attn attn_of(const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                    const tc_sdpa_params *p) {
    int nb = q->ndim - 2;
    attn a = {nb, tc_shape_numel(nb, q->shape), q->shape[nb], k->shape[nb], q->shape[nb + 1], v->shape[nb + 1],
              q->dtype, mask, p};
    return a;
}

/* row l of slice b's scores, masked: r += mask, -inf where not attended */
static void mask_row(const attn *a, int64_t b, int64_t l, double *r, double *tmp) {
    if (a->p->causal)
        for (int64_t s = l + 1; s < a->S; s++) r[s] = -INFINITY;
    const tc_tensor *m = a->mask;
    if (!m) return;
    int nb = a->nb;
    int64_t ms = m->stride[nb + 1];
    const char *mp = (const char *)tc_data(m) +
                     (tc_cpu_offset_of(b, nb, m->shape, m->stride) + l * m->stride[nb]) * (int64_t)tc_dtype_size(m->dtype);
    if (m->dtype == TC_BOOL) {
        for (int64_t s = 0; s < a->S; s++)
            if (!mp[s * ms]) r[s] = -INFINITY;
    } else {
        tc_cpu_load_row(tmp, mp, a->S, ms, m->dtype);
        for (int64_t s = 0; s < a->S; s++) r[s] += tmp[s];
    }
}

/* softmax in place; a row with nothing to attend becomes 0 (lse -inf) */
static double softmax_masked(double *r, int64_t n) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++) m = r[i] > m ? r[i] : m;
    if (m == -INFINITY) {
        for (int64_t i = 0; i < n; i++) r[i] = 0;
        return -INFINITY;
    }
    for (int64_t i = 0; i < n; i++) s += (r[i] = exp(r[i] - m));
    double inv = 1 / s;
    for (int64_t i = 0; i < n; i++) r[i] *= inv;
    return m + log(s);
}

static char *row_ptr(void *buf, tc_dtype dt, int64_t i) { return (char *)buf + i * (int64_t)tc_dtype_size(dt); }

/* per-thread scratch rows: n doubles each, k per thread */
static double *scratch(int64_t n, int k) {
    return malloc((size_t)omp_get_max_threads() * (size_t)k * (size_t)(n + 1) * sizeof(double));
}
#define MY_ROWS(base, n, k) ((base) + (size_t)omp_get_thread_num() * (size_t)(k) * (size_t)((n) + 1))

static int sdpa_typed(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                      const tc_tensor *mask, const tc_sdpa_params *p) {
    attn a = attn_of(q, k, v, mask, p);
    int64_t L = a.L, S = a.S;
    size_t es = tc_dtype_size(a.dt);
    void *sc = malloc((size_t)(L * S + 1) * es); /* scores, then probabilities: [L, S] */
    double *rows = scratch(S, 2);
    if (!sc || !rows) { free(sc); free(rows); return tc_error("scaled_dot_product_attention: out of memory"); }
    for (int64_t b = 0; b < a.B; b++) {
        gemm(a.dt, L, S, a.E, p->scale, mat_of(q, b), transposed(mat_of(k, b)), 0, sc);
#pragma omp parallel for schedule(static) if (L > 1 && L * S >= PAR_MIN)
        for (int64_t l = 0; l < L; l++) {
            double *r = MY_ROWS(rows, S, 2), *tmp = r + S + 1;
            tc_cpu_load_row(r, row_ptr(sc, a.dt, l * S), S, 1, a.dt);
            mask_row(&a, b, l, r, tmp);
            double m = softmax_masked(r, S);
            if (p->dropout_p > 0) drop_row(r, S, (uint64_t)((b * L + l) * S), p->dropout_p, p->seed, p->offset);
            tc_cpu_store_row(row_ptr(sc, a.dt, l * S), r, S, 1, a.dt);
            tc_store(row_ptr(tc_data(lse), lse->dtype, b * L + l), lse->dtype, m);
        }
        gemm(a.dt, L, a.Ev, S, 1, dense(sc, S), mat_of(v, b), 0, row_ptr(tc_data(out), a.dt, b * L * a.Ev));
    }
    free(sc);
    free(rows);
    return TC_OK;
}

/* Per slice, with P the probabilities and Pd = P after dropout:
 *   gv = Pd^T gout;  dP = (gout v^T) * dropout mask;  dS = P * (dP - rowsum(P dP));
 *   gq = scale dS k;  gk = scale dS^T q;  gmask = dS */
static int sdpa_backward_typed(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *gout,
                               const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                               const tc_tensor *lse, const tc_sdpa_params *p) {
    attn a = attn_of(q, k, v, mask, p);
    int64_t L = a.L, S = a.S, E = a.E, Ev = a.Ev;
    size_t es = tc_dtype_size(a.dt);
    bool drop = p->dropout_p > 0, need_ds = gq || gk || gmask;
    void *pb = malloc((size_t)(L * S + 1) * es), *db = malloc((size_t)(L * S + 1) * es); /* P and Pd/dP/dS */
    double *rows = scratch(S, 2);
    if (!pb || !db || !rows) {
        free(pb); free(db); free(rows);
        return tc_error("scaled_dot_product_attention backward: out of memory");
    }
    for (int64_t b = 0; b < a.B; b++) {
        gemm(a.dt, L, S, E, p->scale, mat_of(q, b), transposed(mat_of(k, b)), 0, pb);
#pragma omp parallel for schedule(static) if (L > 1 && L * S >= PAR_MIN)
        for (int64_t l = 0; l < L; l++) {
            double *r = MY_ROWS(rows, S, 2), *tmp = r + S + 1;
            double m = tc_load(row_ptr(tc_data(lse), lse->dtype, b * L + l), lse->dtype);
            tc_cpu_load_row(r, row_ptr(pb, a.dt, l * S), S, 1, a.dt);
            mask_row(&a, b, l, r, tmp);
            for (int64_t s = 0; s < S; s++) r[s] = m == -INFINITY ? 0 : exp(r[s] - m);
            tc_cpu_store_row(row_ptr(pb, a.dt, l * S), r, S, 1, a.dt);
            if (!drop || !gv) continue;
            drop_row(r, S, (uint64_t)((b * L + l) * S), p->dropout_p, p->seed, p->offset);
            tc_cpu_store_row(row_ptr(db, a.dt, l * S), r, S, 1, a.dt);
        }
        mat go = mat_of(gout, b);
        if (gv) gemm(a.dt, S, Ev, L, 1, transposed(dense(drop ? db : pb, S)), go, 0, row_ptr(tc_data(gv), a.dt, b * S * Ev));
        if (!need_ds) continue;
        gemm(a.dt, L, S, Ev, 1, go, transposed(mat_of(v, b)), 0, db);
#pragma omp parallel for schedule(static) if (L > 1 && L * S >= PAR_MIN)
        for (int64_t l = 0; l < L; l++) {
            double *dp = MY_ROWS(rows, S, 2), *pr = dp + S + 1;
            tc_cpu_load_row(dp, row_ptr(db, a.dt, l * S), S, 1, a.dt);
            tc_cpu_load_row(pr, row_ptr(pb, a.dt, l * S), S, 1, a.dt);
            if (drop) drop_row(dp, S, (uint64_t)((b * L + l) * S), p->dropout_p, p->seed, p->offset);
            double d = 0;
            for (int64_t s = 0; s < S; s++) d += pr[s] * dp[s];
            for (int64_t s = 0; s < S; s++) dp[s] = pr[s] * (dp[s] - d);
            tc_cpu_store_row(row_ptr(db, a.dt, l * S), dp, S, 1, a.dt);
            if (gmask) tc_cpu_store_row(row_ptr(tc_data(gmask), gmask->dtype, (b * L + l) * S), dp, S, 1, gmask->dtype);
        }
        if (gq) gemm(a.dt, L, E, S, p->scale, dense(db, S), mat_of(k, b), 0, row_ptr(tc_data(gq), a.dt, b * L * E));
        if (gk) gemm(a.dt, S, E, L, p->scale, transposed(dense(db, S)), mat_of(q, b), 0, row_ptr(tc_data(gk), a.dt, b * S * E));
    }
    free(pb);
    free(db);
    free(rows);
    return TC_OK;
}

/* ---- f32 without dropout: float scores, vectorised softmax, batch slices in parallel -----
 * Each thread takes whole slices with its own [L, S] buffers; OpenBLAS (the OpenMP build)
 * runs single-threaded inside the parallel region, so the small GEMMs do not fight. */
static bool f32_path(const tc_tensor *q, const tc_tensor *mask, const tc_sdpa_params *p) {
    return q->dtype == TC_F32 && p->dropout_p == 0 && (!mask || mask->dtype == TC_BOOL || mask->dtype == TC_F32);
}

/* row l of slice b's scores, masked in place: + a float mask, -inf where not attended */
static void mask_row_f32(const attn *a, int64_t b, int64_t l, float *r) {
    if (a->p->causal)
        for (int64_t s = l + 1; s < a->S; s++) r[s] = -INFINITY;
    const tc_tensor *m = a->mask;
    if (!m) return;
    int nb = a->nb;
    int64_t ms = m->stride[nb + 1], off = tc_cpu_offset_of(b, nb, m->shape, m->stride) + l * m->stride[nb];
    if (m->dtype == TC_BOOL) {
        const uint8_t *mp = (const uint8_t *)tc_data(m) + off;
        for (int64_t s = 0; s < a->S; s++)
            if (!mp[s * ms]) r[s] = -INFINITY;
    } else {
        const float *mp = (const float *)tc_data(m) + off;
        for (int64_t s = 0; s < a->S; s++) r[s] += mp[s * ms];
    }
}

/* softmax of r in place; returns the logsumexp (-inf, and r all 0, where nothing is attended) */
TC_SIMD_CLONES
static float softmax_row_f32(float *restrict r, int64_t n) {
    float m = tc_maxf(r, n), s = 0;
    if (m == -INFINITY) {
        for (int64_t i = 0; i < n; i++) r[i] = 0;
        return -INFINITY;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; i++) r[i] = tc_expf(r[i] - m);
#pragma omp simd reduction(+ : s) /* apart: gcc vectorises no reduction around tc_expf's selects */
    for (int64_t i = 0; i < n; i++) s += r[i];
    float inv = 1 / s;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) r[i] *= inv;
    return m + logf(s);
}

/* the probabilities again from the masked scores and the row's logsumexp */
TC_SIMD_CLONES
static void probs_row_f32(float *restrict r, int64_t n, float lse) {
    if (lse == -INFINITY) {
        for (int64_t i = 0; i < n; i++) r[i] = 0;
        return;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; i++) r[i] = tc_expf(r[i] - lse);
}

/* dS = P * (dP - rowsum(P dP)), in place of dP */
TC_SIMD_CLONES
static void dscores_row_f32(float *restrict dp, const float *restrict pr, int64_t n) {
    double d = 0;
#pragma omp simd reduction(+ : d)
    for (int64_t i = 0; i < n; i++) d += (double)(pr[i] * dp[i]);
    float df = (float)d;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dp[i] = pr[i] * (dp[i] - df);
}

static bool slices_in_parallel(const attn *a) { return a->B > 1 && a->B * a->L * a->S >= PAR_MIN; }

static int sdpa_f32(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                    const tc_tensor *mask, const tc_sdpa_params *p) {
    attn a = attn_of(q, k, v, mask, p);
    int64_t L = a.L, S = a.S, Ev = a.Ev, LS = L * S + 1;
    float *bufs = malloc((size_t)omp_get_max_threads() * (size_t)LS * sizeof *bufs); /* [L, S] per thread */
    if (!bufs) return tc_error("scaled_dot_product_attention: out of memory");
    float *op = tc_data(out), *lp = tc_data(lse);
#pragma omp parallel for schedule(static) if (slices_in_parallel(&a))
    for (int64_t b = 0; b < a.B; b++) {
        float *sc = bufs + (size_t)omp_get_thread_num() * (size_t)LS;
        gemm(TC_F32, L, S, a.E, p->scale, mat_of(q, b), transposed(mat_of(k, b)), 0, sc);
        for (int64_t l = 0; l < L; l++) {
            mask_row_f32(&a, b, l, sc + l * S);
            lp[b * L + l] = softmax_row_f32(sc + l * S, S);
        }
        gemm(TC_F32, L, Ev, S, 1, dense(sc, S), mat_of(v, b), 0, op + b * L * Ev);
    }
    free(bufs);
    return TC_OK;
}

/* as sdpa_backward_typed without dropout and the mask's gradient */
static int sdpa_backward_f32(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, const tc_tensor *gout, const tc_tensor *q,
                             const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask, const tc_tensor *lse,
                             const tc_sdpa_params *p) {
    attn a = attn_of(q, k, v, mask, p);
    int64_t L = a.L, S = a.S, E = a.E, Ev = a.Ev, LS = L * S + 1;
    float *bufs = malloc((size_t)omp_get_max_threads() * 2 * (size_t)LS * sizeof *bufs); /* P and dP, per thread */
    if (!bufs) return tc_error("scaled_dot_product_attention backward: out of memory");
    const float *lp = tc_data(lse);
#pragma omp parallel for schedule(static) if (slices_in_parallel(&a))
    for (int64_t b = 0; b < a.B; b++) {
        float *pb = bufs + (size_t)omp_get_thread_num() * 2 * (size_t)LS, *db = pb + LS;
        gemm(TC_F32, L, S, E, p->scale, mat_of(q, b), transposed(mat_of(k, b)), 0, pb);
        for (int64_t l = 0; l < L; l++) {
            mask_row_f32(&a, b, l, pb + l * S);
            probs_row_f32(pb + l * S, S, lp[b * L + l]);
        }
        mat go = mat_of(gout, b);
        if (gv) gemm(TC_F32, S, Ev, L, 1, transposed(dense(pb, S)), go, 0, (float *)tc_data(gv) + b * S * Ev);
        if (!gq && !gk) continue;
        gemm(TC_F32, L, S, Ev, 1, go, transposed(mat_of(v, b)), 0, db);
        for (int64_t l = 0; l < L; l++) dscores_row_f32(db + l * S, pb + l * S, S);
        if (gq) gemm(TC_F32, L, E, S, p->scale, dense(db, S), mat_of(k, b), 0, (float *)tc_data(gq) + b * L * E);
        if (gk) gemm(TC_F32, S, E, L, p->scale, transposed(dense(db, S)), mat_of(q, b), 0, (float *)tc_data(gk) + b * S * E);
    }
    free(bufs);
    return TC_OK;
}

/* ---- f16 and bf16: through f32 copies (the CPU is not where they are fast) --------------- */
static tc_tensor *f32_copy(const tc_tensor *t) {
    if (!t) return NULL;
    tc_tensor *c = tc_empty_like(t, TC_F32);
    if (c) tc_cpu_copy(c, t);
    return c;
}

static tc_tensor *f32_out(const tc_tensor *t) { return t ? tc_empty_like(t, TC_F32) : NULL; }

static bool narrow_float(tc_dtype dt) { return dt == TC_F16 || dt == TC_BF16; }

int tc_cpu_sdpa(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                const tc_tensor *mask, const tc_sdpa_params *p) {
    if (f32_path(q, mask, p)) return sdpa_f32(out, lse, q, k, v, mask, p);
    if (!narrow_float(q->dtype)) return sdpa_typed(out, lse, q, k, v, mask, p);
    tc_tensor *qf = f32_copy(q), *kf = f32_copy(k), *vf = f32_copy(v), *of = f32_out(out);
    int rc = qf && kf && vf && of ? tc_cpu_sdpa(of, lse, qf, kf, vf, mask, p) : TC_ERR; /* f32's fast path */
    if (rc == TC_OK) rc = tc_cpu_copy(out, of);
    tc_tensor *tmp[] = {qf, kf, vf, of};
    for (int i = 0; i < 4; i++) tc_tensor_release(tmp[i]);
    return rc;
}

int tc_cpu_sdpa_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *gout,
                         const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                         const tc_tensor *lse, const tc_sdpa_params *p) {
    if (f32_path(q, mask, p) && !gmask) return sdpa_backward_f32(gq, gk, gv, gout, q, k, v, mask, lse, p);
    if (!narrow_float(q->dtype)) return sdpa_backward_typed(gq, gk, gv, gmask, gout, q, k, v, mask, lse, p);
    tc_tensor *qf = f32_copy(q), *kf = f32_copy(k), *vf = f32_copy(v), *gof = f32_copy(gout);
    tc_tensor *gqf = f32_out(gq), *gkf = f32_out(gk), *gvf = f32_out(gv);
    int rc = qf && kf && vf && gof && (gqf || !gq) && (gkf || !gk) && (gvf || !gv)
                 ? tc_cpu_sdpa_backward(gqf, gkf, gvf, gmask, gof, qf, kf, vf, mask, lse, p) : TC_ERR;
    if (rc == TC_OK && gq) rc = tc_cpu_copy(gq, gqf);
    if (rc == TC_OK && gk) rc = tc_cpu_copy(gk, gkf);
    if (rc == TC_OK && gv) rc = tc_cpu_copy(gv, gvf);
    tc_tensor *tmp[] = {qf, kf, vf, gof, gqf, gkf, gvf};
    for (int i = 0; i < 7; i++) tc_tensor_release(tmp[i]);
    return rc;
}
