/* softmax.c (cpu): softmax and log_softmax along any dim, cross entropy, and the row
 * helpers the norm and attention kernels share. Each row is loaded from its dtype and
 * strides into a double scratch row, computed there, and stored back; f32 along a
 * unit-stride last dim takes a vectorised float path instead. */
#include "cpu.h"
#include "vecmath.h"

#include <math.h>

/* ---- rows: any dtype, any stride, through double -------------------------------------- */
void tc_cpu_load_row(double *dst, const char *src, int64_t n, int64_t stride, tc_dtype dt) {
    if (dt == TC_F32) {
        const float *p = (const float *)src;
        if (stride == 1) for (int64_t i = 0; i < n; i++) dst[i] = p[i];
        else for (int64_t i = 0; i < n; i++) dst[i] = p[i * stride];
    } else if (dt == TC_F64) {
        const double *p = (const double *)src;
        if (stride == 1) memcpy(dst, p, (size_t)n * sizeof *dst);
        else for (int64_t i = 0; i < n; i++) dst[i] = p[i * stride];
    } else {
        int64_t es = (int64_t)tc_dtype_size(dt);
        for (int64_t i = 0; i < n; i++) dst[i] = tc_load(src + i * stride * es, dt);
    }
}

void tc_cpu_store_row(char *dst, const double *src, int64_t n, int64_t stride, tc_dtype dt) {
    if (dt == TC_F32) {
        float *p = (float *)dst;
        if (stride == 1) for (int64_t i = 0; i < n; i++) p[i] = (float)src[i];
        else for (int64_t i = 0; i < n; i++) p[i * stride] = (float)src[i];
    } else if (dt == TC_F64) {
        double *p = (double *)dst;
        if (stride == 1) memcpy(p, src, (size_t)n * sizeof *src);
        else for (int64_t i = 0; i < n; i++) p[i * stride] = src[i];
    } else {
        int64_t es = (int64_t)tc_dtype_size(dt);
        for (int64_t i = 0; i < n; i++) tc_store(dst + i * stride * es, dt, src[i]);
    }
}

/* one exp per element: the max is subtracted first, so nothing overflows */
double tc_cpu_softmax_row(double *r, int64_t n, bool as_log) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++) m = r[i] > m ? r[i] : m;
    if (as_log) {
        for (int64_t i = 0; i < n; i++) s += exp(r[i] - m);
        double lse = m + log(s);
        for (int64_t i = 0; i < n; i++) r[i] -= lse;
        return lse;
    }
    for (int64_t i = 0; i < n; i++) s += (r[i] = exp(r[i] - m));
    double inv = 1 / s;
    for (int64_t i = 0; i < n; i++) r[i] *= inv;
    return m + log(s);
}

int64_t tc_cpu_offset_of(int64_t k, int n, const int64_t *shape, const int64_t *stride) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; d--) {
        off += (k % shape[d]) * stride[d];
        k /= shape[d];
    }
    return off;
}

/* ---- softmax along dim ------------------------------------------------------------------
 * Row r = (o, i): o indexes the dims before dim, i those after it. Outputs are contiguous,
 * so output rows start at o * n * inner + i with stride inner. */
typedef struct {
    int64_t outer, n, inner;
    int dim, ndim;
    const int64_t *shape;
} rows;

static rows rows_of(const tc_tensor *t, int dim) {
    rows r = {1, t->shape[dim], 1, dim, t->ndim, t->shape};
    for (int d = 0; d < dim; d++) r.outer *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) r.inner *= t->shape[d];
    return r;
}

/* byte address of row k's first element in t (any strides) */
static const char *row_at(const tc_tensor *t, const rows *r, int64_t k) {
    int64_t o = k / r->inner, i = k % r->inner;
    int64_t off = tc_cpu_offset_of(o, r->dim, t->shape, t->stride) +
                  tc_cpu_offset_of(i, r->ndim - r->dim - 1, t->shape + r->dim + 1, t->stride + r->dim + 1);
    return (const char *)tc_data(t) + off * (int64_t)tc_dtype_size(t->dtype);
}

static char *out_row(const tc_tensor *t, const rows *r, int64_t k) {
    int64_t o = k / r->inner, i = k % r->inner;
    return (char *)tc_data(t) + (o * r->n * r->inner + i) * (int64_t)tc_dtype_size(t->dtype);
}

#define PAR_MIN tc_cpu_par_min(TC_PAR_COMPUTE) /* elements below which one thread runs (cpu.h) */

/* ---- f32 along a unit-stride last dim: vectorised, sums in double ------------------------ */
static bool f32_rows(const rows *r, const tc_tensor *a, const tc_tensor *b, int dim) {
    return r->inner == 1 && a->dtype == TC_F32 && b->dtype == TC_F32 && a->stride[dim] == 1 && b->stride[dim] == 1;
}

TC_SIMD_CLONES
static void softmax_row_f32(float *restrict y, const float *restrict x, int64_t n, bool as_log) {
    float m = tc_maxf(x, n);
    double s = 0;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = tc_expf(x[i] - m);
#pragma omp simd reduction(+ : s) /* apart: gcc vectorises no reduction around tc_expf's selects */
    for (int64_t i = 0; i < n; i++) s += y[i];
    if (as_log) {
        float lse = m + (float)log(s);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] - lse;
        return;
    }
    float inv = (float)(1 / s);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] *= inv;
}

/* softmax: gx = y (gy - sum(gy y)); log_softmax: gx = gy - exp(y) sum(gy) */
TC_SIMD_CLONES
static void softmax_backward_row_f32(float *restrict gx, const float *restrict gy, const float *restrict y, int64_t n,
                                     bool as_log) {
    double s = 0;
    if (as_log) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) s += gy[i];
        float sf = (float)s;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) gx[i] = gy[i] - tc_expf(y[i]) * sf;
        return;
    }
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)(gy[i] * y[i]);
    float sf = (float)s;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) gx[i] = y[i] * (gy[i] - sf);
}

static int softmax_f32(tc_tensor *y, const tc_tensor *x, const rows *r, bool as_log) {
    int64_t nrows = r->outer;
#pragma omp parallel for schedule(static) if (nrows > 1 && nrows * r->n >= PAR_MIN)
    for (int64_t k = 0; k < nrows; k++)
        softmax_row_f32((float *)out_row(y, r, k), (const float *)row_at(x, r, k), r->n, as_log);
    return TC_OK;
}

static int softmax_backward_f32(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, const rows *r, bool as_log) {
    int64_t nrows = r->outer;
#pragma omp parallel for schedule(static) if (nrows > 1 && nrows * r->n >= PAR_MIN)
    for (int64_t k = 0; k < nrows; k++)
        softmax_backward_row_f32((float *)out_row(gx, r, k), (const float *)row_at(gy, r, k),
                                 (const float *)out_row(y, r, k), r->n, as_log);
    return TC_OK;
}

/* ---- any dtype and layout, through double rows ------------------------------------------ */
int tc_cpu_softmax(tc_tensor *y, const tc_tensor *x, int dim, bool as_log) {
    rows r = rows_of(x, dim);
    if (f32_rows(&r, x, y, dim)) return softmax_f32(y, x, &r, as_log);
    int64_t nrows = r.outer * r.inner;
    int err = 0;
#pragma omp parallel reduction(max : err) if (nrows > 1 && nrows * r.n >= PAR_MIN)
    {
        double *buf = malloc((size_t)(r.n ? r.n : 1) * sizeof *buf);
        if (!buf) err = 1;
#pragma omp for schedule(static)
        for (int64_t k = 0; k < nrows; k++) {
            if (!buf) continue;
            tc_cpu_load_row(buf, row_at(x, &r, k), r.n, x->stride[dim], x->dtype);
            tc_cpu_softmax_row(buf, r.n, as_log);
            tc_cpu_store_row(out_row(y, &r, k), buf, r.n, r.inner, y->dtype);
        }
        free(buf);
    }
    return err ? tc_error("softmax: out of memory") : TC_OK;
}

/* softmax: gx = y (gy - sum(gy y)); log_softmax: gx = gy - exp(y) sum(gy) */
int tc_cpu_softmax_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool as_log) {
    rows r = rows_of(y, dim);
    if (f32_rows(&r, gy, gx, dim) && y->dtype == TC_F32) return softmax_backward_f32(gx, gy, y, &r, as_log);
    int64_t nrows = r.outer * r.inner;
    int err = 0;
#pragma omp parallel reduction(max : err) if (nrows > 1 && nrows * r.n >= PAR_MIN)
    {
        double *g = malloc((size_t)(2 * r.n + 1) * sizeof *g), *yr = g ? g + r.n : NULL;
        if (!g) err = 1;
#pragma omp for schedule(static)
        for (int64_t k = 0; k < nrows; k++) {
            if (!g) continue;
            tc_cpu_load_row(g, row_at(gy, &r, k), r.n, gy->stride[dim], gy->dtype);
            tc_cpu_load_row(yr, out_row(y, &r, k), r.n, r.inner, y->dtype);
            double s = 0;
            if (as_log) {
                for (int64_t i = 0; i < r.n; i++) s += g[i];
                for (int64_t i = 0; i < r.n; i++) g[i] -= exp(yr[i]) * s;
            } else {
                for (int64_t i = 0; i < r.n; i++) s += g[i] * yr[i];
                for (int64_t i = 0; i < r.n; i++) g[i] = yr[i] * (g[i] - s);
            }
            tc_cpu_store_row(out_row(gx, &r, k), g, r.n, r.inner, gx->dtype);
        }
        free(g);
    }
    return err ? tc_error("softmax backward: out of memory") : TC_OK;
}

/* ---- cross entropy ------------------------------------------------------------------------
 * A sample's loss is -sum_c a_c logp_c, with a_c = (1 - eps) w_t [c = t] + eps / C w_c for a
 * class target t, or a_c = w_c ((1 - eps) p_c + eps / C) for probabilities p; so its
 * gradient is (sum_c a_c) softmax - a. */
typedef struct {
    const tc_tensor *logits, *target, *weight;
    int64_t ignore_index, C, D;
    double eps;
    bool probs;
} ce_args;

/* loads sample (n, d)'s log-probabilities into logp, its coefficients into a and its weight
 * in a mean into *w; returns 0, 1 (ignored), or -1 (target out of range: *bad holds it) */
static int ce_sample(const ce_args *c, int64_t n, int64_t d, const double *wrow, double *logp, double *a,
                     double *w, int64_t *bad) {
    const tc_tensor *lg = c->logits, *t = c->target;
    int64_t C = c->C, tes = (int64_t)tc_dtype_size(t->dtype);
    if (c->probs) {
        const char *tb = (const char *)tc_data(t) + (n * t->stride[0] + d * t->stride[2]) * tes;
        tc_cpu_load_row(a, tb, C, t->stride[1], t->dtype);
        for (int64_t k = 0; k < C; k++) a[k] = wrow[k] * ((1 - c->eps) * a[k] + c->eps / (double)C);
        *w = 1;
    } else {
        int64_t tv = (int64_t)tc_load((const char *)tc_data(t) + (n * t->stride[0] + d * t->stride[1]) * tes, t->dtype);
        if (tv == c->ignore_index) return 1;
        if (tv < 1 || tv > C) { *bad = tv; return -1; }
        for (int64_t k = 0; k < C; k++) a[k] = c->eps / (double)C * wrow[k];
        a[tv - 1] += (1 - c->eps) * wrow[tv - 1];
        *w = wrow[tv - 1];
    }
    const char *lb = (const char *)tc_data(lg) + (n * lg->stride[0] + d * lg->stride[2]) * (int64_t)tc_dtype_size(lg->dtype);
    tc_cpu_load_row(logp, lb, C, lg->stride[1], lg->dtype);
    tc_cpu_softmax_row(logp, C, true);
    return 0;
}

/* the class weights as doubles (all 1 without weights); NULL when out of memory */
static double *class_weights(const tc_tensor *w, int64_t C) {
    double *wr = malloc((size_t)(C ? C : 1) * sizeof *wr);
    if (!wr) return NULL;
    if (w) tc_cpu_load_row(wr, tc_data(w), C, w->stride[0], w->dtype);
    else for (int64_t k = 0; k < C; k++) wr[k] = 1;
    return wr;
}

static int ce_error(int err, int64_t bad, int64_t C) {
    if (err == 1) return tc_error("cross_entropy: out of memory");
    return tc_error("cross_entropy: target %lld is out of range for %lld classes (targets are 1-based)",
                    (long long)bad, (long long)C);
}

static void store_at(const tc_tensor *t, int64_t i, double v) {
    tc_store((char *)tc_data(t) + i * (int64_t)tc_dtype_size(t->dtype), t->dtype, v);
}

int tc_cpu_cross_entropy(tc_tensor *loss, tc_tensor *tw, const tc_tensor *logits, const tc_tensor *target,
                         const tc_tensor *weight, int64_t ignore_index, double smoothing) {
    ce_args c = {logits, target, weight, ignore_index, logits->shape[1], logits->shape[2], smoothing,
                 tc_dtype_is_float(target->dtype)};
    int64_t ns = logits->shape[0] * c.D, bad = 0;
    double *wrow = class_weights(weight, c.C);
    int err = wrow ? 0 : 1;
#pragma omp parallel reduction(max : err) if (!err && ns > 1 && ns * c.C >= PAR_MIN)
    {
        double *logp = malloc((size_t)(2 * c.C + 1) * sizeof *logp), *a = logp ? logp + c.C : NULL;
        if (!logp) err = 1;
#pragma omp for schedule(static)
        for (int64_t s = 0; s < ns; s++) {
            if (!logp || !wrow) continue;
            int64_t b = 0;
            double l = 0, w = 0;
            int st = ce_sample(&c, s / c.D, s % c.D, wrow, logp, a, &w, &b);
            if (st < 0) {
                err = 2;
#pragma omp critical(tc_ce_err)
                bad = b;
            }
            if (st == 0)
                for (int64_t k = 0; k < c.C; k++)
                    if (a[k] != 0) l -= a[k] * logp[k]; /* 0 * -inf terms do not count */
            store_at(loss, s, l);
            store_at(tw, s, st == 0 ? w : 0);
        }
        free(logp);
    }
    free(wrow);
    return err ? ce_error(err, bad, c.C) : TC_OK;
}

int tc_cpu_cross_entropy_backward(tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, double scale,
                                  const tc_tensor *logits, const tc_tensor *target, const tc_tensor *weight,
                                  int64_t ignore_index, double smoothing) {
    ce_args c = {logits, target, weight, ignore_index, logits->shape[1], logits->shape[2], smoothing,
                 tc_dtype_is_float(target->dtype)};
    int64_t ns = logits->shape[0] * c.D, bad = 0, C = c.C, D = c.D;
    double *wrow = class_weights(weight, C);
    int err = wrow ? 0 : 1;
#pragma omp parallel reduction(max : err) if (!err && ns > 1 && ns * C >= PAR_MIN)
    {
        double *logp = malloc((size_t)(3 * C + 1) * sizeof *logp), *a = logp ? logp + C : NULL, *g = a ? a + C : NULL;
        if (!logp) err = 1;
#pragma omp for schedule(static)
        for (int64_t s = 0; s < ns; s++) {
            if (!logp || !wrow) continue;
            int64_t n = s / D, d = s % D, b = 0;
            double w, gs = 0;
            int st = ce_sample(&c, n, d, wrow, logp, a, &w, &b);
            if (st < 0) {
                err = 2;
#pragma omp critical(tc_ce_err)
                bad = b;
                continue;
            }
            if (st == 0)
                gs = scale * tc_load((const char *)tc_data(gloss) + (n * gloss->stride[0] + d * gloss->stride[1]) *
                                     (int64_t)tc_dtype_size(gloss->dtype), gloss->dtype);
            int64_t off = n * C * D + d; /* [N, C, D] contiguous outputs: class stride D */
            if (glogits) {
                double sa = 0;
                for (int64_t k = 0; k < C && st == 0; k++) sa += a[k];
                for (int64_t k = 0; k < C; k++) g[k] = st ? 0 : gs * (sa * exp(logp[k]) - a[k]);
                tc_cpu_store_row((char *)tc_data(glogits) + off * (int64_t)tc_dtype_size(glogits->dtype), g, C, D,
                                 glogits->dtype);
            }
            if (gtarget) { /* d loss / d p_c = -(1 - eps) w_c logp_c */
                for (int64_t k = 0; k < C; k++) g[k] = st ? 0 : -gs * (1 - c.eps) * wrow[k] * logp[k];
                tc_cpu_store_row((char *)tc_data(gtarget) + off * (int64_t)tc_dtype_size(gtarget->dtype), g, C, D,
                                 gtarget->dtype);
            }
        }
        free(logp);
    }
    free(wrow);
    return err ? ce_error(err, bad, C) : TC_OK;
}
