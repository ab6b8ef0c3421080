/* optim.c (cpu): the fused optimizer updates: one pass over a parameter tensor updates it and
 * its state (SGD momentum, Adam moments) in place from its gradient; plus the EMA blend and the
 * |x|^p sums of gradient clipping. The formulas follow PyTorch's CPU kernels op for op. */
#include "cpu.h"
#include "adam.h"

#include <math.h>

/* Below this many elements a loop runs on one thread: waking the team costs more. Threads
 * take blocks of BLOCK elements, in order (schedule static). */
#define PAR_MIN tc_cpu_par_min(TC_PAR_COMPUTE) /* parameters below which one thread runs (cpu.h) */
#define BLOCK 16384

/* -DTC_NO_SIMD builds only the portable loops (to test them on a machine with AVX2) */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(TC_NO_SIMD)
#define HAVE_AVX2 1
#include <immintrin.h>
#define AVX2_TARGET __attribute__((target("avx2,fma")))
static bool cpu_has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
#define HAVE_AVX2 0
#endif

/* GCC vectorizes a simd loop only after unswitching its loop-invariant options, which -O2
 * does not do by itself; clang vectorizes plain loops on its own but fails the build
 * (-Werror) on a simd loop it cannot vectorize, so it gets no simd pragma. */
#if defined(__GNUC__) && !defined(__clang__)
#define LOOP_OPTS __attribute__((optimize("unswitch-loops")))
#define SIMD _Pragma("omp simd")
#define SIMD_SUM _Pragma("omp simd reduction(+ : acc)")
#else
#define LOOP_OPTS
#define SIMD
#define SIMD_SUM
#endif

/* ---- the element loops over [lo, hi), one instance per dtype (and per target) ---------------
 * Each keeps the order of operations of PyTorch's single-tensor update as its CPU kernels
 * evaluate it: a + alpha * b, lerp and addcmul with one fused multiply-add, scalars rounded to
 * the tensor's dtype where PyTorch rounds them; so on a CPU with FMA the results agree bit for
 * bit (but for PyTorch's vectorized sqrt, which is not always correctly rounded). On x86-64 the
 * loops are also compiled for AVX2+FMA and picked at run time, and Adam's f32 loop there is
 * written with intrinsics: GCC does not vectorize sqrt unless errno is off for the whole build.
 * buf / vmax are NULL when the state is absent (no momentum, no amsgrad). */
#define OPTIM_LOOPS(T, FMA, SQRT, SUF, ATTR)                                                      \
    ATTR LOOP_OPTS static void sgd_##T##SUF(void *pv, const void *gv, void *bv, int64_t lo,       \
                                            int64_t hi, const tc_sgd_opts *o) {                   \
        T *restrict p = pv, *restrict buf = bv;                                                   \
        const T *restrict g = gv;                                                                 \
        const T wd = (T)o->weight_decay, mom = (T)o->momentum;                                    \
        const T damp1 = (T)(1 - o->dampening), neg_lr = (T)-o->lr;                                \
        const bool nesterov = o->nesterov;                                                        \
        if (!buf) {                                                                               \
            SIMD for (int64_t i = lo; i < hi; i++) p[i] = FMA(FMA(p[i], wd, g[i]), neg_lr, p[i]); \
        } else if (o->first) {                                   /* buf = clone(d) */             \
            SIMD for (int64_t i = lo; i < hi; i++) {                                              \
                T d = FMA(p[i], wd, g[i]);                       /* grad.add(p, alpha=wd) */      \
                buf[i] = d;                                                                       \
                p[i] = FMA(nesterov ? FMA(d, mom, d) : d, neg_lr, p[i]);                          \
            }                                                                                     \
        } else {                                                                                  \
            SIMD for (int64_t i = lo; i < hi; i++) {                                              \
                T d = FMA(p[i], wd, g[i]);                                                        \
                T b = FMA(d, damp1, buf[i] * mom);               /* buf.mul_(m).add_(d, 1-damp) */ \
                buf[i] = b;                                                                       \
                p[i] = FMA(nesterov ? FMA(b, mom, d) : b, neg_lr, p[i]); /* p.add_(d, -lr) */     \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* Adam and AdamW: core/adam.h's update */                                                 \
    ATTR LOOP_OPTS static void adam_##T##SUF(void *pv, const void *gv, void *mv, void *vv,      \
                                             void *xv, int64_t lo, int64_t hi, const tc_adam_scalars *k) { \
        T *restrict p = pv, *restrict m = mv, *restrict v = vv, *restrict vmax = xv;              \
        const T *restrict g = gv;                                                                 \
        const struct { TC_ADAM_FIELDS(T) } s = TC_ADAM_ROUND(T, *k);                             \
        for (int64_t i = lo; i < hi; i++) TC_ADAM_UPDATE(T, FMA, MUL_, SQRT, s, p, g, m, v, vmax, i); \
    }                                                                                             \
                                                                                                  \
    /* s.sub_((1 - decay) * (s - p)) */                                                           \
    ATTR static void ema_##T##SUF(void *sv, const void *pv, int64_t lo, int64_t hi, double decay) { \
        T *restrict s = sv;                                                                       \
        const T *restrict p = pv;                                                                 \
        const T w = (T)(1 - decay);                                                               \
        SIMD for (int64_t i = lo; i < hi; i++) s[i] = s[i] - w * (s[i] - p[i]);                   \
    }

#define MUL_(a, b) ((a) * (b)) /* C rounds each product: -std=c11 turns contraction off */
OPTIM_LOOPS(float, fmaf, sqrtf, , )
OPTIM_LOOPS(double, fma, sqrt, , )
#if HAVE_AVX2
OPTIM_LOOPS(float, fmaf, sqrtf, _avx2, AVX2_TARGET)
OPTIM_LOOPS(double, fma, sqrt, _avx2, AVX2_TARGET)

/* Adam's f32 loop, eight lanes at a time; the scalar loop above (same formulas) does the tail */
AVX2_TARGET static void adam_f32_simd(void *pv, const void *gv, void *mv, void *vv, void *xv, int64_t lo,
                                      int64_t hi, const tc_adam_scalars *k) {
    float *restrict p = pv, *restrict m = mv, *restrict v = vv, *restrict vmax = xv;
    const float *restrict g = gv;
    const __m256 shrink = _mm256_set1_ps((float)k->shrink), wd = _mm256_set1_ps((float)k->wd);
    const __m256 coef = _mm256_set1_ps((float)k->coef), b2 = _mm256_set1_ps((float)k->b2);
    const __m256 w2 = _mm256_set1_ps((float)k->w2), bc2_sqrt = _mm256_set1_ps((float)k->bc2_sqrt);
    const __m256 eps = _mm256_set1_ps((float)k->eps), neg_step = _mm256_set1_ps((float)k->neg_step);
    int64_t i = lo;
    for (; i + 8 <= hi; i += 8) {
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), shrink);
        __m256 gi = _mm256_fmadd_ps(pi, wd, _mm256_loadu_ps(g + i));
        __m256 mi = _mm256_loadu_ps(m + i);
        mi = _mm256_fmadd_ps(coef, _mm256_sub_ps(gi, mi), k->small ? mi : gi);
        __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(w2, gi), gi, _mm256_mul_ps(_mm256_loadu_ps(v + i), b2));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        if (vmax) {
            __m256 mx = _mm256_loadu_ps(vmax + i);
            __m256 take = _mm256_or_ps(_mm256_cmp_ps(mx, vi, _CMP_GT_OQ), _mm256_cmp_ps(mx, mx, _CMP_UNORD_Q));
            vi = _mm256_blendv_ps(vi, mx, take);
            _mm256_storeu_ps(vmax + i, vi);
        }
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2_sqrt), eps);
        _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(neg_step, mi), denom)));
    }
    adam_float_avx2(pv, gv, mv, vv, xv, i, hi, k);
}
#endif

/* ---- kernels: the loop for the dtype and this CPU, run by threads over blocks ------------------ */
typedef void (*sgd_fn)(void *p, const void *g, void *buf, int64_t lo, int64_t hi, const tc_sgd_opts *o);
typedef void (*adam_fn)(void *p, const void *g, void *m, void *v, void *vmax, int64_t lo, int64_t hi,
                        const tc_adam_scalars *k);
typedef void (*ema_fn)(void *s, const void *p, int64_t lo, int64_t hi, double decay);

#if HAVE_AVX2
#define PICK(dt, f32, f64, f32_avx2, f64_avx2)                                                    \
    (cpu_has_avx2() ? ((dt) == TC_F32 ? (f32_avx2) : (f64_avx2)) : (dt) == TC_F32 ? (f32) : (f64))
#else
#define PICK(dt, f32, f64, f32_avx2, f64_avx2) ((dt) == TC_F32 ? (f32) : (f64))
#endif

static int64_t nblocks(int64_t n) { return (n + BLOCK - 1) / BLOCK; }
static int64_t block_end(int64_t b, int64_t n) { return b * BLOCK + BLOCK < n ? b * BLOCK + BLOCK : n; }

static int check_float(const char *op, tc_dtype dt) {
    if (dt == TC_F32 || dt == TC_F64) return TC_OK;
    return tc_error("%s: unsupported dtype %s", op, tc_dtype_name(dt));
}

int tc_cpu_sgd_step(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o) {
    if (check_float("sgd", p->dtype) != TC_OK) return TC_ERR;
    sgd_fn fn = PICK(p->dtype, sgd_float, sgd_double, sgd_float_avx2, sgd_double_avx2);
    void *pd = tc_data(p), *bd = buf ? tc_data(buf) : NULL;
    const void *gd = tc_data(g);
    int64_t n = tc_numel(p);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nblocks(n); b++) fn(pd, gd, bd, b * BLOCK, block_end(b, n), o);
    return TC_OK;
}

int tc_cpu_adam_step(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                     const tc_adam_opts *o) {
    if (check_float("adam", p->dtype) != TC_OK) return TC_ERR;
    adam_fn fn = PICK(p->dtype, adam_float, adam_double, adam_f32_simd, adam_double_avx2);
    tc_adam_scalars k = tc_adam_scalars_of(o, p->dtype == TC_F32);
    void *pd = tc_data(p), *md = tc_data(m), *vd = tc_data(v), *xd = vmax ? tc_data(vmax) : NULL;
    const void *gd = tc_data(g);
    int64_t n = tc_numel(p);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nblocks(n); b++) fn(pd, gd, md, vd, xd, b * BLOCK, block_end(b, n), &k);
    return TC_OK;
}

int tc_cpu_ema_update(tc_tensor *shadow, const tc_tensor *p, double decay) {
    if (check_float("ema", shadow->dtype) != TC_OK) return TC_ERR;
    ema_fn fn = PICK(shadow->dtype, ema_float, ema_double, ema_float_avx2, ema_double_avx2);
    void *sd = tc_data(shadow);
    const void *pd = tc_data(p);
    int64_t n = tc_numel(shadow);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nblocks(n); b++) fn(sd, pd, b * BLOCK, block_end(b, n), decay);
    return TC_OK;
}

/* the multi-tensor forms: one tensor after another */
int tc_cpu_sgd_multi(int n, tc_tensor *const *p, const tc_tensor *const *g, tc_tensor *const *buf, const bool *first,
                     const tc_sgd_opts *o) {
    for (int i = 0; i < n; i++) {
        tc_sgd_opts oi = *o;
        oi.first = first[i];
        if (tc_cpu_sgd_step(p[i], g[i], buf ? buf[i] : NULL, &oi) != TC_OK) return TC_ERR;
    }
    return TC_OK;
}

int tc_cpu_adam_multi(int n, tc_tensor *const *p, const tc_tensor *const *g, tc_tensor *const *m, tc_tensor *const *v,
                      tc_tensor *const *vmax, const int64_t *steps, const tc_adam_opts *o) {
    for (int i = 0; i < n; i++) {
        tc_adam_opts oi = *o;
        oi.step = steps[i];
        if (tc_cpu_adam_step(p[i], g[i], m[i], v[i], vmax ? vmax[i] : NULL, &oi) != TC_OK) return TC_ERR;
    }
    return TC_OK;
}

int tc_cpu_ema_multi(int n, tc_tensor *const *shadow, const tc_tensor *const *p, double decay) {
    for (int i = 0; i < n; i++)
        if (tc_cpu_ema_update(shadow[i], p[i], decay) != TC_OK) return TC_ERR;
    return TC_OK;
}

/* ---- sum of |x|^p -----------------------------------------------------------------------------
 * Fixed blocks added in a fixed order: the result does not depend on the number of threads, so
 * a resumed run clips exactly like the uninterrupted one. */
static double block_pow_sum(const char *x, tc_dtype dt, int64_t n, double pw) {
    double acc = 0;
#define ELEM(i) (dt == TC_F32 ? (double)((const float *)x)[i] : ((const double *)x)[i])
    if (pw == 2) {
        if (dt == TC_F32) { SIMD_SUM for (int64_t i = 0; i < n; i++) acc += (double)((const float *)x)[i] * ((const float *)x)[i]; }
        else { SIMD_SUM for (int64_t i = 0; i < n; i++) acc += ((const double *)x)[i] * ((const double *)x)[i]; }
    } else if (pw == 1) {
        for (int64_t i = 0; i < n; i++) acc += fabs(ELEM(i));
    } else if (isinf(pw)) {
        for (int64_t i = 0; i < n && acc == acc; i++) {
            double a = fabs(ELEM(i));
            if (a > acc || a != a) acc = a;
        }
    } else {
        for (int64_t i = 0; i < n; i++) acc += pow(fabs(ELEM(i)), pw);
    }
#undef ELEM
    return acc;
}

int tc_cpu_pow_sum(const tc_tensor *x, double pw, double *out) {
    if (check_float("total_norm", x->dtype) != TC_OK) return TC_ERR;
    int64_t n = tc_numel(x), nb = nblocks(n);
    double *part = malloc((size_t)(nb ? nb : 1) * sizeof *part);
    if (!part) return tc_error("total_norm: out of memory");
    const char *base = tc_data(x);
    size_t es = tc_dtype_size(x->dtype);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t b = 0; b < nb; b++)
        part[b] = block_pow_sum(base + (size_t)(b * BLOCK) * es, x->dtype, block_end(b, n) - b * BLOCK, pw);
    double acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        if (isinf(pw)) acc = part[b] > acc || part[b] != part[b] ? part[b] : acc;
        else acc += part[b];
    }
    free(part);
    *out = acc;
    return TC_OK;
}
