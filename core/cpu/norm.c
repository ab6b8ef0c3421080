/* norm.c (cpu): layer norm over the rows of [M, N] and group norm over the groups of
 * [N, C, HW], forward and fused backward. Statistics are computed in double from rows
 * loaded by tc_cpu_load_row, so every float dtype and stride takes the same path. */
#include "cpu.h"

#include <math.h>

#define PAR_MIN 32768 /* elements below which threads cost more than they save */

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
int tc_cpu_layer_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
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
int tc_cpu_layer_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
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
int tc_cpu_group_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                      const tc_tensor *w, const tc_tensor *b, int groups, double eps) {
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
                tc_cpu_store_row((char *)at(y, (n * C + c) * HW), r, HW, 1, y->dtype);
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

/* as layer norm, over each group; gw and gb sum per (n, c) partials over n */
int tc_cpu_group_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                               const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                               const tc_tensor *w, int groups) {
    int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2], cg = C / groups, G = groups;
    double *wv = vec(w, C, 1), cnt = (double)(cg * HW);
    double *pw = calloc((size_t)(N * C) + 1, sizeof *pw), *pb = calloc((size_t)(N * C) + 1, sizeof *pb);
    int err = wv && pw && pb ? 0 : 1;
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
                for (int64_t i = 0; i < HW; i++) g[i] = rs * (g[i] * wv[c] - s1 - (xr[i] - mu) * rs * s2);
                tc_cpu_store_row((char *)at(gx, (n * C + c) * HW), g, HW, 1, gx->dtype);
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
    free(pw);
    free(pb);
    return err ? tc_error("group_norm backward: out of memory") : TC_OK;
}
