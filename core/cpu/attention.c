/* attention.c (cpu): dropout, and scaled dot-product attention with its fused backward, never
 * with an [L, S] buffer. The forward walks blocks of FWD_BR queries against tiles of BC keys
 * with an online softmax (a running max and sum per row; the output rows rescaled when the max grows)
 * and saves each row's logsumexp; the backward recomputes the probabilities of a block's row
 * strip [BR, S] from q, k and that logsumexp. Products are OpenBLAS GEMMs on tiles and strips;
 * the row arithmetic is built once per compute dtype (f32 vectorised, f64 for the gradient
 * checks). Both passes and the dropout op share the Philox dropout rule. */
#include "cpu.h"
#include "philox.h"
#include "vecmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#define PAR_MIN tc_cpu_par_min(TC_PAR_COMPUTE) /* elements below which one thread runs (cpu.h) */
#define BR 64         /* query rows per block in the backward */
/* the forward's blocks of queries and tiles of keys: each tile's GEMMs pack k and v again for
 * each block, and at SD's 4,096 tokens with heads of 40 (one thread, CPU time, the machine
 * shared) 64 x 512 took 416 ms, 128 x 256 371, 256 x 256 350, 512 x 256 346 */
#define FWD_BR 256
#define BC 256

/* ---- the row arithmetic, once per compute dtype ----------------------------------------------
 * r is a row of scores or probabilities. drop: dropout's rule on elements first.. of the Philox
 * stream at (seed, offset): kept ones times 1 / (1 - p), the rest 0. online: folds a tile's
 * masked scores into the row's running max m and sum l, leaves exp(score - m) in r and returns
 * what the row's output so far must be multiplied by. probs: exp(score - lse), 0 where the row
 * attends nothing. dscores: dS = P * (dP - rowsum(P dP)) in place of dP. */
/* a row's max and sum through LANES partial results, folded in halves: gcc's own reduction
 * epilogues (lane by lane through memory) cost more than the row itself at 32 to 64 keys. The
 * folds are unrolled so that they stay in registers: looped, each step went through memory,
 * and the causal 4 x 32 x 16 forward (batch 24, one thread) took 0.40 instead of 0.34 ms */
#define LANES 16
static inline float maxf(const float *r, int64_t n) {
    float acc[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] = r[i + j] > acc[j] ? r[i + j] : acc[j];
    for (; i < n; i++) acc[0] = r[i] > acc[0] ? r[i] : acc[0];
#pragma GCC unroll 4
    for (int w = LANES / 2; w > 0; w /= 2)
#pragma GCC unroll 8
        for (int j = 0; j < w; j++) acc[j] = acc[j + w] > acc[j] ? acc[j + w] : acc[j];
    return acc[0];
}
static inline double sumf(const float *r, int64_t n) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += r[i + j];
    for (; i < n; i++) acc[0] += r[i];
#pragma GCC unroll 4
    for (int w = LANES / 2; w > 0; w /= 2)
#pragma GCC unroll 8
        for (int j = 0; j < w; j++) acc[j] += acc[j + w];
    return acc[0];
}
static double maxd(const double *r, int64_t n) {
    double m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = r[i] > m ? r[i] : m;
    return m;
}
static double sumd(const double *r, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += r[i];
    return s;
}

#define ROW_MATH(T, SFX, EXP, MAX, SUM, CLONES)                                                            \
    static void drop_##SFX(T *r, int64_t n, uint64_t first, double p, uint64_t seed, uint64_t offset) { \
        T scale = p < 1 ? (T)(1 / (1 - p)) : 0;                                                       \
        uint32_t w[4];                                                                                \
        for (int64_t j = 0; j < n; j++) {                                                             \
            uint64_t i = first + (uint64_t)j;                                                         \
            if (j == 0 || i % 4 == 0) tc_philox(seed, offset + i / 4, w);                             \
            r[j] = tc_philox_u01_open(w[i % 4]) >= p ? r[j] * scale : 0;                              \
        }                                                                                             \
    }                                                                                                 \
    CLONES static double online_##SFX(T *restrict r, int64_t n, double *m, double *l) {               \
        T mx = MAX(r, n), mn = mx > (T)*m ? mx : (T)*m;                                               \
        if (mn == -INFINITY) {                                                                        \
            for (int64_t i = 0; i < n; i++) r[i] = 0;                                                 \
            return 1;                                                                                 \
        }                                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) r[i] = EXP(r[i] - mn);                    \
        double s = SUM(r, n), alpha = *m == -INFINITY ? 0 : *m == (double)mn ? 1 : exp(*m - (double)mn); \
        *m = mn;                                                                                      \
        *l = *l * alpha + s;                                                                          \
        return alpha;                                                                                 \
    }                                                                                                 \
    CLONES static void scale_##SFX(T *restrict r, int64_t n, double f) {                              \
        T ft = (T)f;                                                                                  \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) r[i] *= ft;                               \
    }                                                                                                 \
    CLONES static void probs_##SFX(T *restrict r, int64_t n, double lse) {                            \
        T m = (T)lse;                                                                                 \
        if (lse == -INFINITY) {                                                                       \
            for (int64_t i = 0; i < n; i++) r[i] = 0;                                                 \
            return;                                                                                   \
        }                                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) r[i] = EXP(r[i] - m);                     \
    }                                                                                                 \
    CLONES static void dscores_##SFX(T *restrict dp, const T *restrict pr, int64_t n) {               \
        double d = 0;                                                                                 \
        _Pragma("omp simd reduction(+ : d)") for (int64_t i = 0; i < n; i++) d += (double)(pr[i] * dp[i]); \
        T dt = (T)d;                                                                                  \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) dp[i] = pr[i] * (dp[i] - dt);             \
    }

ROW_MATH(float, f32, tc_expf, maxf, sumf, TC_SIMD_CLONES)
ROW_MATH(double, f64, exp, maxd, sumd, )

typedef struct {
    void (*drop)(void *r, int64_t n, uint64_t first, double p, uint64_t seed, uint64_t offset);
    double (*online)(void *r, int64_t n, double *m, double *l);
    void (*scale)(void *r, int64_t n, double f);
    void (*probs)(void *r, int64_t n, double lse);
    void (*dscores)(void *dp, const void *pr, int64_t n);
} row_math;

#define ROW_TABLE(SFX)                                                                                 \
    {(void (*)(void *, int64_t, uint64_t, double, uint64_t, uint64_t))drop_##SFX,                      \
     (double (*)(void *, int64_t, double *, double *))online_##SFX, (void (*)(void *, int64_t, double))scale_##SFX, \
     (void (*)(void *, int64_t, double))probs_##SFX, (void (*)(void *, const void *, int64_t))dscores_##SFX}
static const row_math ROWS_F32 = ROW_TABLE(f32), ROWS_F64 = ROW_TABLE(f64);

/* ---- dropout -------------------------------------------------------------------------------- */

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
            drop_f64(r, n, (uint64_t)first, p, seed, offset);
            tc_cpu_store_row((char *)tc_data(y) + first * (int64_t)tc_dtype_size(y->dtype), r, n, 1, y->dtype);
        }
        free(r);
    }
    return err ? tc_error("dropout: out of memory") : TC_OK;
}

/* ---- GEMM on tiles -------------------------------------------------------------------------- */
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

/* m from its row r0 on */
static mat from_row(mat m, int64_t r0, size_t es) {
    m.p += (m.t ? r0 : r0 * m.ld) * (int64_t)es;
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

/* ---- the problem ---------------------------------------------------------------------------- */
typedef struct {
    int nb;                /* batch dims */
    int64_t B, L, S, E, Ev;
    tc_dtype dt;           /* compute dtype: f32 or f64 */
    size_t es;
    const row_math *rm;
    const tc_tensor *mask;
    const tc_sdpa_params *p;
} attn;

static attn attn_of(const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                    const tc_sdpa_params *p) {
    int nb = q->ndim - 2;
    attn a = {nb, tc_shape_numel(nb, q->shape), q->shape[nb], k->shape[nb], q->shape[nb + 1], v->shape[nb + 1],
              q->dtype, tc_dtype_size(q->dtype), q->dtype == TC_F32 ? &ROWS_F32 : &ROWS_F64, mask, p};
    return a;
}

static char *at(void *buf, size_t es, int64_t i) { return (char *)buf + i * (int64_t)es; }

/* the keys rows [i0, i0 + nr) can attend: all S, or under causal those up to the last row */
static int64_t keys_of(const attn *a, int64_t i0, int64_t nr) {
    return a->p->causal && i0 + nr < a->S ? i0 + nr : a->S;
}

/* row l of slice b's scores at keys c0 .. c0 + n - 1 (r, in the compute dtype), masked in
 * place: -inf where causal or a bool mask hides a key, plus a float mask */
static void mask_row(const attn *a, int64_t b, int64_t l, int64_t c0, void *r, int64_t n) {
    bool f32 = a->dt == TC_F32;
    if (a->p->causal) {
        int64_t first = l + 1 > c0 ? l + 1 - c0 : 0;
        if (f32) for (int64_t s = first; s < n; s++) ((float *)r)[s] = -INFINITY;
        else for (int64_t s = first; s < n; s++) ((double *)r)[s] = -INFINITY;
    }
    const tc_tensor *m = a->mask;
    if (!m) return;
    int nb = a->nb;
    int64_t ms = m->stride[nb + 1];
    const char *mp = at(tc_data(m), tc_dtype_size(m->dtype),
                        tc_cpu_offset_of(b, nb, m->shape, m->stride) + l * m->stride[nb] + c0 * ms);
    if (m->dtype == TC_BOOL) {
        for (int64_t s = 0; s < n; s++)
            if (!mp[s * ms]) {
                if (f32) ((float *)r)[s] = -INFINITY;
                else ((double *)r)[s] = -INFINITY;
            }
    } else if (m->dtype == TC_F32 && f32) {
        for (int64_t s = 0; s < n; s++) ((float *)r)[s] += ((const float *)mp)[s * ms];
    } else {
        int64_t mes = (int64_t)tc_dtype_size(m->dtype);
        for (int64_t s = 0; s < n; s++) {
            double x = tc_load(mp + s * ms * mes, m->dtype);
            if (f32) ((float *)r)[s] += (float)x;
            else ((double *)r)[s] += x;
        }
    }
}

/* work split over the threads when there is enough of it */
static bool threaded(const attn *a) { return a->B * a->L * a->S >= PAR_MIN && omp_get_max_threads() > 1; }

/* ---- forward -------------------------------------------------------------------------------- */

/* rows [i0, i0 + nr) of slice b: o [nr, Ev] (the output's rows) and the rows' logsumexp;
 * sc: a [FWD_BR, min(S, BC)] tile, m and l: FWD_BR running maxima and sums */
static void forward_block(const attn *a, int64_t b, int64_t i0, int64_t nr, mat q, mat k, mat v, char *o,
                          tc_tensor *lse, char *sc, double *m, double *l) {
    const row_math *rm = a->rm;
    const tc_sdpa_params *p = a->p;
    size_t es = a->es;
    int64_t Ev = a->Ev, keys = keys_of(a, i0, nr);
    if (keys == 0) memset(o, 0, (size_t)(nr * Ev) * es); /* else the first tile's product sets o */
    for (int64_t r = 0; r < nr; r++) m[r] = -INFINITY, l[r] = 0;
    for (int64_t c0 = 0; c0 < keys; c0 += BC) {
        int64_t nc = keys - c0 < BC ? keys - c0 : BC;
        gemm(a->dt, nr, nc, a->E, p->scale, from_row(q, i0, es), transposed(from_row(k, c0, es)), 0, sc);
        for (int64_t r = 0; r < nr; r++) {
            char *row = at(sc, es, r * nc);
            mask_row(a, b, i0 + r, c0, row, nc);
            double alpha = rm->online(row, nc, &m[r], &l[r]);
            if (alpha != 1 && c0 > 0) rm->scale(at(o, es, r * Ev), Ev, alpha); /* o is 0 before the first */
            if (p->dropout_p > 0)
                rm->drop(row, nc, (uint64_t)((b * a->L + i0 + r) * a->S + c0), p->dropout_p, p->seed, p->offset);
        }
        gemm(a->dt, nr, Ev, nc, 1, dense(sc, nc), from_row(v, c0, es), c0 > 0, o);
    }
    for (int64_t r = 0; r < nr; r++) { /* lse has the compute dtype */
        rm->scale(at(o, es, r * Ev), Ev, l[r] > 0 ? 1 / l[r] : 0);
        double x = l[r] > 0 ? m[r] + log(l[r]) : -INFINITY;
        if (a->dt == TC_F32) ((float *)tc_data(lse))[b * a->L + i0 + r] = (float)x;
        else ((double *)tc_data(lse))[b * a->L + i0 + r] = x;
    }
}

static int sdpa_forward(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                        const tc_tensor *mask, const tc_sdpa_params *p) {
    attn a = attn_of(q, k, v, mask, p);
    int64_t nblk = (a.L + FWD_BR - 1) / FWD_BR, Ev = a.Ev, tile = a.S < BC ? a.S : BC;
    int err = 0;
#pragma omp parallel reduction(max : err) if (threaded(&a))
    {
        char *sc = malloc((size_t)(FWD_BR * tile + 1) * a.es);
        double *m = malloc(2 * FWD_BR * sizeof *m);
        if (!sc || !m) err = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < a.B * nblk; t++) {
            if (!sc || !m) continue;
            int64_t b = t / nblk, i0 = t % nblk * FWD_BR, nr = a.L - i0 < FWD_BR ? a.L - i0 : FWD_BR;
            forward_block(&a, b, i0, nr, mat_of(q, b), mat_of(k, b), mat_of(v, b),
                          at(tc_data(out), a.es, (b * a.L + i0) * Ev), lse, sc, m, m + FWD_BR);
        }
        free(sc);
        free(m);
    }
    return err ? tc_error("scaled_dot_product_attention: out of memory") : TC_OK;
}

/* ---- backward ------------------------------------------------------------------------------- */
typedef struct {
    tc_tensor *gq, *gk, *gv, *gmask;
    const tc_tensor *gout, *q, *k, *v, *lse;
} grads;

/* Rows [i0, i0 + nr) of slice b, with P their probabilities, Pd = P after dropout, and the
 * strips pb, db [nr, keys]:
 *   gv += Pd^T gout;  dP = (gout v^T) * dropout mask;  dS = P * (dP - rowsum(P dP));
 *   gq = scale dS k;  gk += scale dS^T q;  gmask = dS
 * gk and gv point at the slice's accumulators [S, E] and [S, Ev]; gq at its rows of the output */
static void backward_block(const attn *a, const grads *g, int64_t b, int64_t i0, int64_t nr, char *gq, char *gk,
                           char *gv, char *pb, char *db) {
    const row_math *rm = a->rm;
    const tc_sdpa_params *p = a->p;
    size_t es = a->es;
    int64_t keys = keys_of(a, i0, nr);
    bool drop = p->dropout_p > 0;
    mat q = mat_of(g->q, b), k = mat_of(g->k, b), v = mat_of(g->v, b), go = from_row(mat_of(g->gout, b), i0, es);
    gemm(a->dt, nr, keys, a->E, p->scale, from_row(q, i0, es), transposed(k), 0, pb);
    for (int64_t r = 0; r < nr; r++) {
        char *row = at(pb, es, r * keys);
        mask_row(a, b, i0 + r, 0, row, keys);
        rm->probs(row, keys, tc_load(at(tc_data(g->lse), tc_dtype_size(g->lse->dtype), b * a->L + i0 + r), g->lse->dtype));
    }
    if (gv) {
        if (drop) {
            memcpy(db, pb, (size_t)(nr * keys) * es);
            for (int64_t r = 0; r < nr; r++)
                rm->drop(at(db, es, r * keys), keys, (uint64_t)((b * a->L + i0 + r) * a->S), p->dropout_p, p->seed, p->offset);
        }
        gemm(a->dt, keys, a->Ev, nr, 1, transposed(dense(drop ? db : pb, keys)), go, 1, gv);
    }
    if (!gq && !gk && !g->gmask) return;
    gemm(a->dt, nr, keys, a->Ev, 1, go, transposed(v), 0, db);
    for (int64_t r = 0; r < nr; r++) {
        char *row = at(db, es, r * keys);
        if (drop) rm->drop(row, keys, (uint64_t)((b * a->L + i0 + r) * a->S), p->dropout_p, p->seed, p->offset);
        rm->dscores(row, at(pb, es, r * keys), keys);
        if (!g->gmask) continue;
        tc_dtype mdt = g->gmask->dtype;
        char *gm = at(tc_data(g->gmask), tc_dtype_size(mdt), (b * a->L + i0 + r) * a->S);
        for (int64_t s = 0; s < a->S; s++) /* keys == S: a float mask excludes causal */
            tc_store(at(gm, tc_dtype_size(mdt), s), mdt, a->dt == TC_F32 ? ((float *)row)[s] : ((double *)row)[s]);
    }
    if (gq) gemm(a->dt, nr, a->E, keys, p->scale, dense(db, keys), k, 0, gq);
    if (gk) gemm(a->dt, keys, a->E, nr, p->scale, transposed(dense(db, keys)), from_row(q, i0, es), 1, gk);
}

/* Slices go to the threads whole when there are enough of them (gk and gv summed in place);
 * otherwise each slice's row blocks are shared out, every thread summing gk and gv into buffers
 * of its own, added up in thread order afterwards (the same sums on every run) */
static int sdpa_backward(const grads *g, const tc_tensor *mask, const tc_sdpa_params *p) {
    attn a = attn_of(g->q, g->k, g->v, mask, p);
    int64_t nblk = (a.L + BR - 1) / BR, S = a.S, E = a.E, Ev = a.Ev, nacc = S * (E + Ev);
    size_t es = a.es, strip = (size_t)(BR * S + 1) * es;
    int nt = threaded(&a) ? omp_get_max_threads() : 1;
    bool whole = nt == 1 || a.B >= nt;
    char *accs = whole ? NULL : malloc((size_t)nt * (size_t)nacc * es);
    int err = !whole && !accs;
    for (int64_t b0 = 0; b0 < a.B && !err; b0 += whole ? a.B : 1) {
#pragma omp parallel num_threads(nt) reduction(max : err) if (nt > 1)
        {
            char *pb = malloc(2 * strip), *mine = whole ? NULL : at(accs, es, omp_get_thread_num() * nacc);
            if (!pb) err = 1;
            if (mine) memset(mine, 0, (size_t)nacc * es);
            int64_t ntask = whole ? a.B : nblk;
#pragma omp for schedule(static) /* static: each thread's sums the same blocks on every run */
            for (int64_t t = 0; t < ntask; t++) { /* whole: slice b0 + t; else block t of slice b0 */
                int64_t b = b0 + (whole ? t : 0);
                char *gk = g->gk ? at(tc_data(g->gk), es, b * S * E) : NULL;
                char *gv = g->gv ? at(tc_data(g->gv), es, b * S * Ev) : NULL;
                if (mine) {
                    gk = g->gk ? mine : NULL;
                    gv = g->gv ? at(mine, es, S * E) : NULL;
                } else {
                    if (gk) memset(gk, 0, (size_t)(S * E) * es);
                    if (gv) memset(gv, 0, (size_t)(S * Ev) * es);
                }
                for (int64_t ib = whole ? 0 : t; pb && ib < (whole ? nblk : t + 1); ib++) {
                    int64_t i0 = ib * BR, nr = a.L - i0 < BR ? a.L - i0 : BR;
                    char *gq = g->gq ? at(tc_data(g->gq), es, (b * a.L + i0) * E) : NULL;
                    backward_block(&a, g, b, i0, nr, gq, gk, gv, pb, pb + strip);
                }
            }
            if (mine) { /* gk and gv of slice b0: the threads' sums, in thread order */
#pragma omp for schedule(static)
                for (int64_t s = 0; s < S; s++)
                    for (int part = 0; part < 2; part++) {
                        tc_tensor *dst = part == 0 ? g->gk : g->gv;
                        int64_t w = part == 0 ? E : Ev, first = part == 0 ? s * E : S * E + s * Ev;
                        if (!dst) continue;
                        char *d = at(tc_data(dst), es, b0 * S * w + s * w);
                        for (int64_t j = 0; j < w; j++) {
                            double sum = 0;
                            for (int th = 0; th < nt; th++) sum += tc_load(at(accs, es, th * nacc + first + j), a.dt);
                            tc_store(at(d, es, j), a.dt, sum);
                        }
                    }
            }
            free(pb);
        }
    }
    free(accs);
    return err ? tc_error("scaled_dot_product_attention backward: out of memory") : TC_OK;
}

/* ---- entry points: f32 and f64 directly, f16 and bf16 through f32 copies ------------------- */
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
    if (!narrow_float(q->dtype)) return sdpa_forward(out, lse, q, k, v, mask, p);
    tc_tensor *qf = f32_copy(q), *kf = f32_copy(k), *vf = f32_copy(v), *of = f32_out(out);
    int rc = qf && kf && vf && of ? sdpa_forward(of, lse, qf, kf, vf, mask, p) : TC_ERR;
    if (rc == TC_OK) rc = tc_cpu_copy(out, of);
    tc_tensor *tmp[] = {qf, kf, vf, of};
    for (int i = 0; i < 4; i++) tc_tensor_release(tmp[i]);
    return rc;
}

int tc_cpu_sdpa_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *gout,
                         const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                         const tc_tensor *lse, const tc_sdpa_params *p) {
    if (!narrow_float(q->dtype)) {
        grads g = {gq, gk, gv, gmask, gout, q, k, v, lse};
        return sdpa_backward(&g, mask, p);
    }
    tc_tensor *qf = f32_copy(q), *kf = f32_copy(k), *vf = f32_copy(v), *gof = f32_copy(gout);
    tc_tensor *gqf = f32_out(gq), *gkf = f32_out(gk), *gvf = f32_out(gv);
    grads g = {gqf, gkf, gvf, gmask, gof, qf, kf, vf, lse};
    int rc = qf && kf && vf && gof && (gqf || !gq) && (gkf || !gk) && (gvf || !gv) ? sdpa_backward(&g, mask, p) : TC_ERR;
    if (rc == TC_OK && gq) rc = tc_cpu_copy(gq, gqf);
    if (rc == TC_OK && gk) rc = tc_cpu_copy(gk, gkf);
    if (rc == TC_OK && gv) rc = tc_cpu_copy(gv, gvf);
    tc_tensor *tmp[] = {qf, kf, vf, gof, gqf, gkf, gvf};
    for (int i = 0; i < 7; i++) tc_tensor_release(tmp[i]);
    return rc;
}
