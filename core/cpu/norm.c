/* norm.c (cpu): layer norm over the rows of [M, N] and group norm over the groups of
 * [N, C, HW] (with silu fused in on request), forward and fused backward. f32 with unit-stride
 * rows (what models run) takes vectorised float loops with double sums; every other dtype and
 * stride goes through double rows loaded by tc_cpu_load_row (f64 stays exact for the gradient
 * checks). */
#include "cpu.h"
#include "unary.h"
#include "vecmath.h"

#include <math.h>

#define PAR_MIN tc_cpu_par_min(TC_PAR_COMPUTE) /* elements below which one thread runs (cpu.h) */

static const char *at(const tc_tensor *t, int64_t off) {
    return (const char *)tc_data(t) + off * (int64_t)tc_dtype_size(t->dtype);
}

/* an optional per-feature vector as doubles (fill when t is NULL); NULL when out of memory */
static double *vec(const tc_tensor *t, int64_t n, double fill) {
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    if (t) tc_cpu_load_row(v, tc_data(t), n, t->stride[0], t->dtype);
    else for (int64_t i = 0; i < n; i++) v[i] = fill;
    return v;
}

/* ---- layer norm --------------------------------------------------------------------------- */
static int layer_norm_any(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                          const tc_tensor *w, const tc_tensor *b, double eps) {
    int64_t M = x->shape[0], N = x->shape[1];
    double *wv = vec(w, N, 1), *bv = vec(b, N, 0);
    int err = wv && bv ? 0 : 1;
#pragma omp parallel reduction(max : err) if (!err && M > 1 && M * N >= PAR_MIN)
    {
        double *r = malloc((size_t)(N ? N : 1) * sizeof *r);
        if (!r) err = 1;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            if (!r ) continue;
            tc_cpu_load_row(r, at(x, m * x->stride[0]), N, x->stride[1], x->dtype);
            double mu = 0, var = 0;
            for (int64_t i = 0; i < N; i++) mu += r[i];
            mu /= (double)N;
            for (int64_t i = 0; i < N; i++) var += (r[i] - mu) * (r[i] - mu);
            double rs = 1 / sqrt(var / (double)N + eps);
            for (int64_t i = 0; i < N; i++) r[i] = (r[i] - mu) * rs * wv[i] + bv[i];
            tc_cpu_store_row((char *)at(y, m * N), r, N, 1, y->dtype);
            tc_store((char *)at(mean, m), mean->dtype, mu);
            tc_store((char *)at(rstd, m), rstd->dtype, rs);
        }
        free(r);
    }
    free(wv);
    free(bv);
    return err ? tc_error("layer_norm: out of memory") : TC_OK;
}

/* with xh = (x - mean) rstd and gh = gy w: gx = rstd (gh - mean(gh) - xh mean(gh xh)),
 * gw = sum over rows of gy xh, gb = sum over rows of gy */
static int layer_norm_backward_any(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                   const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                   const tc_tensor *w) {
    int64_t M = x->shape[0], N = x->shape[1];
    double *wv = vec(w, N, 1), *accw = calloc((size_t)N + 1, sizeof *accw), *accb = calloc((size_t)N + 1, sizeof *accb);
    int err = wv && accw && accb ? 0 : 1;
#pragma omp parallel reduction(max : err) if (!err && M > 1 && M * N >= PAR_MIN)
    {
        double *xr = malloc((size_t)(4 * N + 1) * sizeof *xr), *g = xr ? xr + N : NULL;
        double *lw = xr ? g + N : NULL, *lb = xr ? lw + N : NULL; /* this thread's sums */
        if (!xr) err = 1;
        else for (int64_t i = 0; i < 2 * N; i++) lw[i] = 0;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            if (!xr ) continue;
            tc_cpu_load_row(xr, at(x, m * x->stride[0]), N, x->stride[1], x->dtype);
            tc_cpu_load_row(g, at(gy, m * gy->stride[0]), N, gy->stride[1], gy->dtype);
            double mu = tc_load(at(mean, m), mean->dtype), rs = tc_load(at(rstd, m), rstd->dtype);
            double s1 = 0, s2 = 0;
            for (int64_t i = 0; i < N; i++) {
                xr[i] = (xr[i] - mu) * rs;
                lw[i] += g[i] * xr[i];
                lb[i] += g[i];
                g[i] *= wv[i];
                s1 += g[i];
                s2 += g[i] * xr[i];
            }
            if (!gx) continue;
            s1 /= (double)N;
            s2 /= (double)N;
            for (int64_t i = 0; i < N; i++) g[i] = rs * (g[i] - s1 - xr[i] * s2);
            tc_cpu_store_row((char *)at(gx, m * N), g, N, 1, gx->dtype);
        }
        if (xr) {
#pragma omp critical(tc_ln_sums)
            for (int64_t i = 0; i < N; i++) { accw[i] += lw[i]; accb[i] += lb[i]; }
        }
        free(xr);
    }
    if (!err && gw) tc_cpu_store_row(tc_data(gw), accw, N, 1, gw->dtype);
    if (!err && gb) tc_cpu_store_row(tc_data(gb), accb, N, 1, gb->dtype);
    free(wv);
    free(accw);
    free(accb);
    return err ? tc_error("layer_norm backward: out of memory") : TC_OK;
}

/* ---- group norm ------------------------------------------------------------------------------
 * Group (n, g) holds channels g * C / G .. (g + 1) * C / G - 1 of sample n, each a row of HW. */
static int group_norm_any(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                          const tc_tensor *w, const tc_tensor *b, int groups, double eps, bool silu) {
    int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2], cg = C / groups, G = groups;
    double *wv = vec(w, C, 1), *bv = vec(b, C, 0), cnt = (double)(cg * HW);
    int err = wv && bv ? 0 : 1;
#pragma omp parallel reduction(max : err) if (!err && N * G > 1 && N * C * HW >= PAR_MIN)
    {
        double *r = malloc((size_t)(HW ? HW : 1) * sizeof *r);
        if (!r) err = 1;
#pragma omp for schedule(static)
        for (int64_t ng = 0; ng < N * G; ng++) {
            if (!r ) continue;
            int64_t n = ng / G, c0 = ng % G * cg;
            /* sums shifted by the group's first element keep the variance exact in double */
            double shift = cnt > 0 ? tc_load(at(x, n * x->stride[0] + c0 * x->stride[1]), x->dtype) : 0;
            double s1 = 0, s2 = 0;
            for (int64_t c = c0; c < c0 + cg; c++) {
                tc_cpu_load_row(r, at(x, n * x->stride[0] + c * x->stride[1]), HW, x->stride[2], x->dtype);
                for (int64_t i = 0; i < HW; i++) { double d = r[i] - shift; s1 += d; s2 += d * d; }
            }
            double m1 = s1 / cnt, var = s2 / cnt - m1 * m1, mu = shift + m1;
            double rs = 1 / sqrt((var > 0 ? var : 0) + eps);
            for (int64_t c = c0; c < c0 + cg; c++) {
                tc_cpu_load_row(r, at(x, n * x->stride[0] + c * x->stride[1]), HW, x->stride[2], x->dtype);
                double a = rs * wv[c], o = bv[c] - mu * a;
                for (int64_t i = 0; i < HW; i++) r[i] = r[i] * a + o;
                if (silu)
                    for (int64_t i = 0; i < HW; i++) r[i] = TC_SILU(TC_LIBM_F64, r[i]);
                tc_cpu_store_row((char *)at(y, n * y->stride[0] + c * y->stride[1]), r, HW, y->stride[2], y->dtype);
            }
            tc_store((char *)at(mean, ng), mean->dtype, mu);
            tc_store((char *)at(rstd, ng), rstd->dtype, rs);
        }
        free(r);
    }
    free(wv);
    free(bv);
    return err ? tc_error("group_norm: out of memory") : TC_OK;
}

/* g = gy silu'(h) for the row of channel c, where h = x a + o is what the forward activated */
static void silu_grad_row(double *g, const double *xr, int64_t n, double a, double o) {
    for (int64_t i = 0; i < n; i++) {
        double h = xr[i] * a + o;
        g[i] *= TC_SILU_GRAD(TC_LIBM_F64, h);
    }
}

/* as layer norm, over each group; gw and gb sum per (n, c) partials over n. With silu, gy
 * first goes through the activation's derivative. */
static int group_norm_backward_any(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                   const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                   const tc_tensor *w, const tc_tensor *b, int groups, bool silu) {
    int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2], cg = C / groups, G = groups;
    double *wv = vec(w, C, 1), *bv = vec(b, C, 0), cnt = (double)(cg * HW);
    double *pw = calloc((size_t)(N * C) + 1, sizeof *pw), *pb = calloc((size_t)(N * C) + 1, sizeof *pb);
    int err = wv && bv && pw && pb ? 0 : 1;
#pragma omp parallel reduction(max : err) if (!err && N * G > 1 && N * C * HW >= PAR_MIN)
    {
        double *xr = malloc((size_t)(2 * HW + 1) * sizeof *xr), *g = xr ? xr + HW : NULL;
        if (!xr) err = 1;
#pragma omp for schedule(static)
        for (int64_t ng = 0; ng < N * G; ng++) {
            if (!xr ) continue;
            int64_t n = ng / G, c0 = ng % G * cg;
            double mu = tc_load(at(mean, ng), mean->dtype), rs = tc_load(at(rstd, ng), rstd->dtype);
            double s1 = 0, s2 = 0; /* sums of gh and gh * xh over the group */
            for (int64_t c = c0; c < c0 + cg; c++) {
                tc_cpu_load_row(xr, at(x, n * x->stride[0] + c * x->stride[1]), HW, x->stride[2], x->dtype);
                tc_cpu_load_row(g, at(gy, n * gy->stride[0] + c * gy->stride[1]), HW, gy->stride[2], gy->dtype);
                if (silu) silu_grad_row(g, xr, HW, rs * wv[c], bv[c] - mu * (rs * wv[c]));
                double sw = 0, sb = 0;
                for (int64_t i = 0; i < HW; i++) {
                    sw += g[i] * (xr[i] - mu) * rs;
                    sb += g[i];
                }
                pw[n * C + c] = sw;
                pb[n * C + c] = sb;
                s1 += sb * wv[c];
                s2 += sw * wv[c];
            }
            if (!gx) continue;
            s1 /= cnt;
            s2 /= cnt;
            for (int64_t c = c0; c < c0 + cg; c++) {
                tc_cpu_load_row(xr, at(x, n * x->stride[0] + c * x->stride[1]), HW, x->stride[2], x->dtype);
                tc_cpu_load_row(g, at(gy, n * gy->stride[0] + c * gy->stride[1]), HW, gy->stride[2], gy->dtype);
                if (silu) silu_grad_row(g, xr, HW, rs * wv[c], bv[c] - mu * (rs * wv[c]));
                for (int64_t i = 0; i < HW; i++) g[i] = rs * (g[i] * wv[c] - s1 - (xr[i] - mu) * rs * s2);
                tc_cpu_store_row((char *)at(gx, n * gx->stride[0] + c * gx->stride[1]), g, HW, gx->stride[2], gx->dtype);
            }
        }
        free(xr);
    }
    for (int64_t c = 0; !err && c < C; c++) {
        double sw = 0, sb = 0;
        for (int64_t n = 0; n < N; n++) { sw += pw[n * C + c]; sb += pb[n * C + c]; }
        if (gw) tc_store((char *)at(gw, c), gw->dtype, sw);
        if (gb) tc_store((char *)at(gb, c), gb->dtype, sb);
    }
    free(wv);
    free(bv);
    free(pw);
    free(pb);
    return err ? tc_error("group_norm backward: out of memory") : TC_OK;
}

/* ---- f32 with unit-stride rows: vectorised ------------------------------------------------
 * Sums run in double, shifted by a value of the row (a group's or row's first element) so
 * that inputs far from 0 keep their variance; the elementwise parts run in float. */
static bool unit_rows(const tc_tensor *t) { return t->dtype == TC_F32 && t->stride[t->ndim - 1] == 1; }

/* s1 += sum of (x - shift), s2 += sum of (x - shift)^2 */
static inline __attribute__((always_inline)) void moments(const float *restrict x, int64_t n, double shift,
                                                          double *s1, double *s2) {
    double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - shift;
        a += d;
        b += d * d;
    }
    *s1 += a;
    *s2 += b;
}
TC_SIMD_CLONES
static void row_moments(const float *restrict x, int64_t n, double shift, double *s1, double *s2) {
    moments(x, n, shift, s1, s2);
}

/* a double mean as two floats: x - hi is exact for x near hi, and - lo restores the bits a
 * float mean would lose (inputs far from 0, such as 1000 + noise, need them) */
typedef struct { float hi, lo; } split_mean;
static split_mean split(double mu) { float hi = (float)mu; return (split_mean){hi, (float)(mu - hi)}; }

/* y = (x - mu) * a + o, and with silu y = silu of that: one read of x, one write of y */
static inline __attribute__((always_inline)) void normalize(float *restrict y, const float *restrict x, int64_t n,
                                                            split_mean mu, float a, float o, bool silu) {
    if (silu) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float h = ((x[i] - mu.hi) - mu.lo) * a + o;
            y[i] = TC_SILU(TC_VECMATH, h);
        }
        return;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = ((x[i] - mu.hi) - mu.lo) * a + o;
}

/* one group of group norm: cg channels of HW elements (x's sx apart, y's HW apart), its mean
 * and 1 / std into *mu and *rs, then y = (x - mu) rs w[c] + b[c], silu'd on request. One call
 * per group: a call per channel for the sums and another for the output (each through the
 * clones' dispatch, each ending in a horizontal sum) took half of group norm's time at 8x8. */
TC_SIMD_CLONES
static void group_forward(float *restrict y, const float *restrict x, int64_t cg, int64_t HW, int64_t sx,
                          const double *w, const double *b, double eps, bool silu, double *mu, double *rs) {
    double cnt = (double)(cg * HW), shift = cnt > 0 ? x[0] : 0, s1 = 0, s2 = 0;
    if (sx == HW) moments(x, cg * HW, shift, &s1, &s2); /* the group is one run */
    else
        for (int64_t c = 0; c < cg; c++) moments(x + c * sx, HW, shift, &s1, &s2);
    double m1 = cnt > 0 ? s1 / cnt : 0, var = cnt > 0 ? s2 / cnt - m1 * m1 : 0;
    *mu = shift + m1;
    *rs = 1 / sqrt((var > 0 ? var : 0) + eps);
    for (int64_t c = 0; c < cg; c++)
        normalize(y + c * HW, x + c * sx, HW, split(*mu), (float)(*rs * w[c]), (float)b[c], silu);
}

/* gh = g * silu'(h) with h = (x - mu) * a + o, as normalize activated it: the gradient that
 * reaches the norm through the silu */
static inline __attribute__((always_inline)) void silu_grad(float *restrict gh, const float *restrict g,
                                                            const float *restrict x, int64_t n, split_mean mu,
                                                            float a, float o) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float h = ((x[i] - mu.hi) - mu.lo) * a + o;
        gh[i] = g[i] * TC_SILU_GRAD(TC_VECMATH, h);
    }
}

/* y = (x - mu) * rs * w + b */
TC_SIMD_CLONES
static void row_normalize_affine(float *restrict y, const float *restrict x, int64_t n, split_mean mu, float rs,
                                 const float *restrict w, const float *restrict b) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = ((x[i] - mu.hi) - mu.lo) * rs * w[i] + b[i];
}

/* *sg = sum of g, *sgx = sum of g (x - mu) */
static inline __attribute__((always_inline)) void grad_sums(const float *restrict g, const float *restrict x,
                                                            int64_t n, double mu, double *sg, double *sgx) {
    double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
        a += g[i];
        b += (double)g[i] * ((double)x[i] - mu);
    }
    *sg = a;
    *sgx = b;
}

/* gx = g * a + (x - mu) * b + c */
static inline __attribute__((always_inline)) void grad_row(float *restrict gx, const float *restrict g,
                                                           const float *restrict x, int64_t n, split_mean mu,
                                                           float a, float b, float c) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) gx[i] = g[i] * a + ((x[i] - mu.hi) - mu.lo) * b + c;
}

/* one group of group norm's backward, as group_forward: cg channels of HW (x's and gy's sx and
 * sy apart, gx's HW apart; gh a scratch of cg HW floats, with silu); pw[c] and pb[c] get each
 * channel's share of gw and gb, gx (unless NULL) the input's gradient */
TC_SIMD_CLONES
static void group_backward(float *restrict gx, const float *restrict gy, const float *restrict x, float *restrict gh,
                           int64_t cg, int64_t HW, int64_t sx, int64_t sy, double mu, double rs, const double *w,
                           const double *b, bool silu, double *pw, double *pb) {
    double s1 = 0, s2 = 0; /* sums of gh and gh * xh over the group */
    for (int64_t c = 0; c < cg; c++) {
        const float *g = gy + c * sy;
        if (silu) {
            silu_grad(gh + c * HW, g, x + c * sx, HW, split(mu), (float)(rs * w[c]), (float)b[c]);
            g = gh + c * HW;
        }
        double sg, sgx;
        grad_sums(g, x + c * sx, HW, mu, &sg, &sgx);
        pw[c] = sgx * rs;
        pb[c] = sg;
        s1 += sg * w[c];
        s2 += sgx * rs * w[c];
    }
    if (!gx) return;
    double cnt = (double)(cg * HW);
    s1 /= cnt;
    s2 /= cnt;
    for (int64_t c = 0; c < cg; c++)
        grad_row(gx + c * HW, silu ? gh + c * HW : gy + c * sy, x + c * sx, HW, split(mu), (float)(rs * w[c]),
                 (float)(-rs * rs * s2), (float)(-rs * s1));
}

/* w and b as floats (1 and 0 where absent); NULL when out of memory */
static float *floats(const double *v, int64_t n) {
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    for (int64_t i = 0; f && i < n; i++) f[i] = (float)v[i];
    return f;
}

static int layer_norm_f32(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x, const double *wv,
                          const double *bv, double eps) {
    int64_t M = x->shape[0], N = x->shape[1];
    float *w = floats(wv, N), *b = floats(bv, N);
    if (!w || !b) { free(w); free(b); return tc_error("layer_norm: out of memory"); }
    const float *xp = tc_data(x);
    float *yp = tc_data(y), *mp = tc_data(mean), *rp = tc_data(rstd);
#pragma omp parallel for schedule(static) if (M > 1 && M * N >= PAR_MIN)
    for (int64_t m = 0; m < M; m++) {
        const float *r = xp + m * x->stride[0];
        double shift = N ? r[0] : 0, s1 = 0, s2 = 0;
        row_moments(r, N, shift, &s1, &s2);
        double m1 = N ? s1 / (double)N : 0, var = N ? s2 / (double)N - m1 * m1 : 0;
        double mu = shift + m1;
        float rs = (float)(1 / sqrt((var > 0 ? var : 0) + eps));
        row_normalize_affine(yp + m * N, r, N, split(mu), rs, w, b);
        mp[m] = (float)mu;
        rp[m] = rs;
    }
    free(w);
    free(b);
    return TC_OK;
}

/* one row of the layer norm backward: adds g xh and g to this thread's sums for gw and gb;
 * gx (may be NULL) = rs (g w - mean(g w) - xh mean(g w xh)); xh: scratch for the row */
TC_SIMD_CLONES
static void ln_row_backward(float *restrict gx, const float *restrict g, const float *restrict x,
                            const float *restrict w, int64_t n, float mu, float rs, double *restrict aw,
                            double *restrict ab, float *restrict xh) {
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < n; i++) {
        float h = (x[i] - mu) * rs, gh = g[i] * w[i];
        xh[i] = h;
        aw[i] += (double)(g[i] * h);
        ab[i] += g[i];
        s1 += gh;
        s2 += (double)(gh * h);
    }
    if (!gx) return;
    float a = (float)(s1 / (double)n), b = (float)(s2 / (double)n);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) gx[i] = rs * (g[i] * w[i] - a - xh[i] * b);
}

static int layer_norm_backward_f32(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                   const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd, const double *wv) {
    int64_t M = x->shape[0], N = x->shape[1];
    float *w = floats(wv, N);
    double *accw = calloc((size_t)(2 * N + 1), sizeof *accw), *accb = accw ? accw + N : NULL;
    int err = w && accw ? 0 : 1;
    const float *xp = tc_data(x), *gp = tc_data(gy), *mp = tc_data(mean), *rp = tc_data(rstd);
#pragma omp parallel reduction(max : err) if (!err && M > 1 && M * N >= PAR_MIN)
    {
        double *aw = calloc((size_t)(2 * N + 1), sizeof *aw), *ab = aw ? aw + N : NULL; /* this thread's sums */
        float *xh = malloc((size_t)(N + 1) * sizeof *xh);
        bool ok = aw && xh; /* err itself starts at INT_MIN here, max's identity */
        if (!ok) err = 1;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            if (!ok) continue;
            ln_row_backward(gx ? (float *)tc_data(gx) + m * N : NULL, gp + m * gy->stride[0], xp + m * x->stride[0],
                            w, N, mp[m], rp[m], aw, ab, xh);
        }
        if (ok) {
#pragma omp critical(tc_ln_sums_f32)
            for (int64_t i = 0; i < N; i++) { accw[i] += aw[i]; accb[i] += ab[i]; }
        }
        free(aw);
        free(xh);
    }
    if (!err && gw) tc_cpu_store_row(tc_data(gw), accw, N, 1, gw->dtype);
    if (!err && gb) tc_cpu_store_row(tc_data(gb), accb, N, 1, gb->dtype);
    free(w);
    free(accw);
    return err ? tc_error("layer_norm backward: out of memory") : TC_OK;
}

static int group_norm_f32(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x, const double *wv,
                          const double *bv, int64_t G, double eps, bool silu) {
    int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2], cg = C / G, s0 = x->stride[0], s1c = x->stride[1];
    const float *xp = tc_data(x);
    float *yp = tc_data(y), *mp = tc_data(mean), *rp = tc_data(rstd);
#pragma omp parallel for schedule(static) if (N * G > 1 && N * C * HW >= PAR_MIN)
    for (int64_t ng = 0; ng < N * G; ng++) {
        int64_t n = ng / G, c0 = ng % G * cg;
        double mu, rs;
        group_forward(yp + (n * C + c0) * HW, xp + n * s0 + c0 * s1c, cg, HW, s1c, wv + c0, bv + c0, eps, silu, &mu,
                      &rs);
        mp[ng] = (float)mu;
        rp[ng] = (float)rs;
    }
    return TC_OK;
}

/* as group_norm_backward_any: pw, pb [N, C] get each (n, c)'s share of gw and gb. With silu,
 * gy goes through the activation's derivative first, into a scratch copy of the group that
 * both passes read (the derivative's exp once per element). */
static int group_norm_backward_f32(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x, const tc_tensor *mean,
                                   const tc_tensor *rstd, const double *wv, const double *bv, int64_t G, bool silu,
                                   double *pw, double *pb) {
    int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2], cg = C / G;
    const float *xp = tc_data(x), *gp = tc_data(gy), *mp = tc_data(mean), *rp = tc_data(rstd);
    int err = 0;
#pragma omp parallel reduction(max : err) if (N * G > 1 && N * C * HW >= PAR_MIN)
    {
        float *gh = silu ? malloc((size_t)(cg * HW + 1) * sizeof *gh) : NULL;
        bool ok = !silu || gh; /* err itself starts at INT_MIN here, max's identity */
        if (!ok) err = 1;
#pragma omp for schedule(static)
        for (int64_t ng = 0; ng < N * G; ng++) {
            if (!ok) continue;
            int64_t n = ng / G, c0 = ng % G * cg;
            group_backward(gx ? (float *)tc_data(gx) + (n * C + c0) * HW : NULL,
                           gp + n * gy->stride[0] + c0 * gy->stride[1], xp + n * x->stride[0] + c0 * x->stride[1], gh,
                           cg, HW, x->stride[1], gy->stride[1], mp[ng], rp[ng], wv + c0, bv + c0, silu,
                           pw + n * C + c0, pb + n * C + c0);
        }
        free(gh);
    }
    return err ? tc_error("group_norm backward: out of memory") : TC_OK;
}

/* ---- entry points: the f32 paths where they apply -------------------------------------- */
int tc_cpu_layer_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                      const tc_tensor *w, const tc_tensor *b, double eps) {
    if (!unit_rows(x) || y->dtype != TC_F32 || mean->dtype != TC_F32) return layer_norm_any(y, mean, rstd, x, w, b, eps);
    int64_t N = x->shape[1];
    double *wv = vec(w, N, 1), *bv = vec(b, N, 0);
    int rc = wv && bv ? layer_norm_f32(y, mean, rstd, x, wv, bv, eps) : tc_error("layer_norm: out of memory");
    free(wv);
    free(bv);
    return rc;
}

int tc_cpu_layer_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                               const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                               const tc_tensor *w) {
    if (!unit_rows(x) || !unit_rows(gy) || (gx && gx->dtype != TC_F32) || mean->dtype != TC_F32)
        return layer_norm_backward_any(gx, gw, gb, gy, x, mean, rstd, w);
    double *wv = vec(w, x->shape[1], 1);
    int rc = wv ? layer_norm_backward_f32(gx, gw, gb, gy, x, mean, rstd, wv) : tc_error("layer_norm backward: out of memory");
    free(wv);
    return rc;
}

int tc_cpu_group_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                      const tc_tensor *w, const tc_tensor *b, int groups, double eps, bool silu) {
    if (!unit_rows(x) || !tc_is_contiguous(y) || y->dtype != TC_F32 || mean->dtype != TC_F32)
        return group_norm_any(y, mean, rstd, x, w, b, groups, eps, silu);
    int64_t C = x->shape[1];
    double *wv = vec(w, C, 1), *bv = vec(b, C, 0);
    int rc = wv && bv ? group_norm_f32(y, mean, rstd, x, wv, bv, groups, eps, silu)
                      : tc_error("group_norm: out of memory");
    free(wv);
    free(bv);
    return rc;
}

int tc_cpu_group_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                               const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                               const tc_tensor *w, const tc_tensor *b, int groups, bool silu) {
    if (!unit_rows(x) || !unit_rows(gy) || (gx && (gx->dtype != TC_F32 || !tc_is_contiguous(gx))) ||
        mean->dtype != TC_F32)
        return group_norm_backward_any(gx, gw, gb, gy, x, mean, rstd, w, b, groups, silu);
    int64_t N = x->shape[0], C = x->shape[1];
    double *wv = vec(w, C, 1), *bv = vec(b, C, 0), *pw = calloc((size_t)(2 * N * C) + 1, sizeof *pw);
    int rc = wv && bv && pw ? TC_OK : tc_error("group_norm backward: out of memory");
    double *pb = pw ? pw + N * C : NULL;
    if (rc == TC_OK) rc = group_norm_backward_f32(gx, gy, x, mean, rstd, wv, bv, groups, silu, pw, pb);
    for (int64_t c = 0; rc == TC_OK && c < C; c++) { /* gw and gb: the (n, c) shares summed over n */
        double sw = 0, sb = 0;
        for (int64_t n = 0; n < N; n++) { sw += pw[n * C + c]; sb += pb[n * C + c]; }
        if (gw) tc_store((char *)tc_data(gw) + c * (int64_t)tc_dtype_size(gw->dtype), gw->dtype, sw);
        if (gb) tc_store((char *)tc_data(gb) + c * (int64_t)tc_dtype_size(gb->dtype), gb->dtype, sb);
    }
    free(wv);
    free(bv);
    free(pw);
    return rc;
}
