/* vecmath.h (cpu): f32 exp, log, log1p, tanh, sigmoid, erf, pow, sin and cos with no libm call and no
 * branch, so that the loops calling them vectorise under `#pragma omp simd` (libm's scalar
 * expf was most of the time of silu, gelu and softmax; the selects below become vector blends
 * because the build says -fno-trapping-math), and TC_SIMD_CLONES, which builds a hot loop for AVX-512,
 * AVX2 + FMA and baseline x86-64 and picks one at load time, letting it fuse multiply-adds
 * (-std=c11 turns contraction off elsewhere; the polynomials run 15% faster fused). f64
 * never comes here: it keeps libm's correctly rounded functions for the gradient checks. */
#ifndef TOCHA_VECMATH_H
#define TOCHA_VECMATH_H

#include <math.h>
#include <stdint.h>

/* -DTC_SIMD_NO_AVX512 leaves the AVX-512 clones out: an AVX-512 machine then runs the AVX2
 * ones, to measure what an AVX2 machine gets */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) && defined(TC_SIMD_NO_AVX512)
#define TC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("fp-contract=fast")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define TC_SIMD_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("fp-contract=fast")))
#else
#define TC_SIMD_CLONES
#endif

/* the float with bits i (a union, not memcpy: an addressable temporary keeps gcc from
 * vectorising the reductions that call tc_expf) */
static inline float tc_bits_f32(int32_t i) {
    union { int32_t i; float f; } u = {.i = i};
    return u.f;
}

/* the bits of f (as tc_bits_f32) */
static inline int32_t tc_f32_bits(float f) {
    union { float f; int32_t i; } u = {.f = f};
    return u.i;
}

/* exp(x) within about 1 ulp (Cephes' polynomial on [-ln2/2, ln2/2] after x = k ln2 + r):
 * 0 below -104, inf above 88.72, NaN stays NaN. x is clamped to [-104, 88.73] first, which
 * the vector code does with a min and a max (clamping k afterwards took a blend for every
 * value computed from it); 2^k is applied as two halves so that subnormal results come out
 * right and k = 128 (x in [88.38, 88.73]) does not overflow too early. */
static inline float tc_expf(float x) {
    float xc = x > -104.0f ? x : -104.0f; /* NaN becomes -104 here (k stays an integer) */
    xc = xc < 88.73f ? xc : 88.73f;
    float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = xc - k * 0.693359375f;
    r = r + k * 2.12194440e-4f; /* ln2 = 0.693359375 - 2.12194440e-4, split for exactness */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t ki = (int32_t)k, k1 = ki >> 1, k2 = ki - k1; /* k in [-150, 128] */
    float e = p * tc_bits_f32((k1 + 127) << 23) * tc_bits_f32((k2 + 127) << 23);
    return x == x ? e : x;
}

static inline float tc_sigmoidf(float x) { return 1.0f / (1.0f + tc_expf(-x)); }

/* erf(x) to 1.8e-7 (absolute), with no exp and no division: an odd polynomial below 1.25 and a
 * polynomial in |x| - 2.585 on [1.25, 3.92] (above, erf is 1 in f32), both fitted near minimax
 * for tocha (Lawson's iteration on Chebyshev points) and blended; NaN stays NaN. The
 * Abramowitz-Stegun formula it replaces cost an exp and a division per element. */
static inline float tc_erff(float x) {
    float a = x < 0 ? -x : x, s = x * x;
    float p = 5.966941535e-05f;
    p = p * s - 7.304823375e-04f;
    p = p * s + 5.085906480e-03f;
    p = p * s - 2.678185515e-02f;
    p = p * s + 1.128111482e-01f;
    p = p * s - 3.761226237e-01f;
    p = p * s + 1.128378987e+00f;
    float small = p * x;
    float t = (a < 3.92f ? a : 3.92f) - 2.585f;
    float q = -8.509617146e-06f;
    q = q * t + 1.109273035e-05f;
    q = q * t + 7.403158816e-05f;
    q = q * t - 2.161614248e-04f;
    q = q * t + 1.012283246e-04f;
    q = q * t + 6.924749468e-04f;
    q = q * t - 2.439739648e-03f;
    q = q * t + 4.764289595e-03f;
    q = q * t - 6.311717909e-03f;
    q = q * t + 5.830409471e-03f;
    q = q * t - 3.654986853e-03f;
    q = q * t + 1.413646038e-03f;
    q = q * t + 9.997435808e-01f;
    q = a < 3.92f ? q : 1.0f;
    q = x < 0 ? -q : q;
    float e = a < 1.25f ? small : q;
    return x == x ? e : x;
}

/* log(x) within about 1 ulp (Cephes' polynomial for log(1 + f), f in [sqrt(1/2) - 1,
 * sqrt(2) - 1], after x = 2^e (1 + f)): subnormals are scaled up first; 0 gives -inf,
 * below 0 NaN, inf inf, NaN NaN */
static inline float tc_logf(float x) {
    int sub = x < 1.17549435e-38f;                          /* subnormal (or 0, or < 0) */
    float xs = sub ? x * 8388608.0f : x;                    /* times 2^23 */
    int32_t i = tc_f32_bits(xs) & 0x7fffffff, d = i - 0x3f3504f3; /* bits of sqrt(1/2); x < 0 is NaN below */
    int32_t e = d >> 23;                                    /* the exponent, rounding to [sqrt(1/2), sqrt(2)) */
    float f = tc_bits_f32(i - e * (1 << 23)) - 1.0f;
    float ef = (float)e - (sub ? 23.0f : 0.0f);
    float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = f * z * p + ef * -2.12194440e-4f - 0.5f * z;
    float r = (f + y) + ef * 0.693359375f;
    r = x == 0 ? -INFINITY : r;
    r = x < 0 ? NAN : r;
    return x == INFINITY || x != x ? x + x : r;
}

/* log(1 + x) within about 2 ulp: log(u) with u = 1 + x rounded, corrected by x / (u - 1)
 * (the rounding of u, which matters when x is small); x itself where u rounds to 1 */
static inline float tc_log1pf(float x) {
    float u = 1.0f + x, um = u - 1.0f;
    float r = tc_logf(u) * (x / (um == 0 ? 1.0f : um));
    r = um == 0 ? x : r;
    return u == INFINITY ? u : r;
}

/* tanh(x) within about 2 ulp (Cephes): an odd polynomial below 0.625, 1 - 2 / (e^2|x| + 1)
 * above, with x's sign; NaN stays NaN */
static inline float tc_tanhf(float x) {
    float a = x < 0 ? -x : x, z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float t = 1.0f - 2.0f / (tc_expf(2.0f * (a < 10.0f ? a : 10.0f)) + 1.0f); /* 1 in f32 from 9.01 */
    t = x < 0 ? -t : t;
    return a > 0.625f ? t : small;
}

/* x^y within about 1 ulp, as 2^(y log2|x|) with the logarithm and the power of 2 in double:
 * in f32, log's half-ulp error times y log|x| (up to 88) would be that many half-ulps of the
 * result. |x| = 2^e m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1),
 * |s| < 0.172, by atanh's series to s^13; 2^r, r = t - round(t) in [-1/2, 1/2], by its Taylor
 * series to r^9 (each within 1e-11), rounded to f32 and scaled by 2^round(t) in two halves (as
 * tc_expf). The special cases are C's pow's: x^0 = 1^y = 1; a finite x < 0 only to an integer
 * y (all are from 2^23 up; odd ones keep x's sign); 0 and inf by the sign of y; else NaN in,
 * NaN out. */
static inline __attribute__((always_inline)) float tc_powf(float x, float y) { /* inlined: a call stops the vectoriser */
    float ax = x < 0 ? -x : x, ay = y < 0 ? -y : y;
    float yr = ay < 8388608.0f ? ay : 0.0f;                   /* from 2^23 up, every float is an integer */
    int32_t frac = (yr + 8388608.0f) - 8388608.0f != yr;      /* y is no integer (rounds to nearest) */
    int32_t odd = (int32_t)(ay < 16777216.0f ? ay : 0.0f) & 1 & (1 - frac); /* from 2^24 up, all even */
    int32_t sign = tc_f32_bits(x) & -odd & INT32_MIN;         /* an odd power keeps x's sign, -0's too */
    int32_t sub = ax < 1.17549435e-38f;                       /* subnormal (or 0) */
    int32_t i = tc_f32_bits(sub ? ax * 8388608.0f : ax) & INT32_MAX; /* -0, -NaN: no sign */
    int32_t e = (i - 0x3f3504f3) >> 23;
    double m = (double)tc_bits_f32(i - e * (1 << 23)), s = (m - 1) / (m + 1), s2 = s * s;
    double p = 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    p = p * s2 + 1.0;
    double t = (double)y * ((double)(sub ? e - 23 : e) + 2.8853900817779268 * s * p); /* 2 / ln 2 */
    t = t == t ? t : 0.0; /* NaN (0 * inf: |x| = 1, y infinite): the result is set below */
    t = t > -160.0 ? t : -160.0;
    t = t < 130.0 ? t : 130.0;
    double k = (t + 6755399441055744.0) - 6755399441055744.0, r = t - k; /* 1.5 2^52: rounds */
    double q = 1.0178086009239696e-07;                                /* ln2^9 / 9! */
    q = q * r + 1.3215486790144305e-06;
    q = q * r + 1.5252733804059838e-05;
    q = q * r + 1.5403530393381606e-04;
    q = q * r + 1.3333558146428441e-03;
    q = q * r + 9.6181291076284770e-03;
    q = q * r + 5.5504108664821576e-02;
    q = q * r + 2.4022650695910070e-01;
    q = q * r + 6.9314718055994530e-01;
    q = q * r + 1.0;
    int32_t ki = (int32_t)k, k1 = ki >> 1, k2 = ki - k1; /* k in [-160, 130] */
    float v = (float)q * tc_bits_f32((k1 + 127) << 23) * tc_bits_f32((k2 + 127) << 23);
    float ys = ax == INFINITY ? y : -y, edge = ys > 0 ? INFINITY : 0.0f; /* x = 0 or inf */
    v = ax == 0 ? edge : v;
    v = ax == INFINITY ? edge : v;
    v = tc_bits_f32(tc_f32_bits(v) | sign);
    float xn = frac ? x : 0.0f; /* (one select per line: gcc vectorises these, not their || and ?: nests) */
    xn = xn > -INFINITY ? xn : 0.0f;
    v = xn < 0 ? NAN : v; /* a finite x < 0 to a fractional y */
    v = x != x ? x : v;
    v = y != y ? y : v;
    v = y == 0 ? 1.0f : v;
    return x == 1 ? 1.0f : v;
}

/* sin(x + shift pi/2) for |x| < TC_TRIG_MAX (Cephes' polynomials on [-pi/4, pi/4]): x = j pi/2 +
 * r, j rounded to nearest, pi/2 in four parts of which the first two times j are exact while
 * |j| < 2^13; the other two keep the results near the zeros accurate only with fused
 * multiply-adds (6 ulps rounded apart), so all four are fmaf: one instruction in the AVX2 and
 * AVX-512 clones, libm's exact fmaf elsewhere. Then sin(r) or cos(r) by the quadrant j + shift.
 * Beyond the bound (and for inf and NaN) the result is meaningless: the kernels give those
 * arguments, rare, to libm. */
#define TC_TRIG_MAX 8192.0f
static inline float tc_sin_shifted(float x, int32_t shift) {
    float xc = x > -TC_TRIG_MAX && x < TC_TRIG_MAX ? x : 0.0f; /* keeps j an integer */
    float j = (xc * 0.636619772f + 12582912.0f) - 12582912.0f;
    float r = fmaf(-j, 1.5703125f, xc);
    r = fmaf(-j, 4.837512969970703125e-4f, r);
    r = fmaf(-j, 7.549790126e-8f, r);
    r = fmaf(-j, -1.715124510e-15f, r);
    int32_t q = (int32_t)j + shift;
    float z = r * r;
    float sn = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
    float cs = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
    float v = (q & 1) ? cs : sn;
    return (q & 2) ? -v : v;
}
static inline float tc_sinf(float x) { return tc_sin_shifted(x, 0); }
static inline float tc_cosf(float x) { return tc_sin_shifted(x, 1); }

/* these inline as vector instructions (-fno-math-errno) */
static inline float tc_sqrtf(float x) { return sqrtf(x); }
static inline float tc_fabsf(float x) { return fabsf(x); }

/* these functions as the M of core/unary.h's formulas: TC_VECMATH(exp) is tc_expf */
#define TC_VECMATH(fn) tc_##fn##f

/* the largest of x[0..n), -inf when n is 0 or all are -inf (NaNs are passed over). The simd
 * max is gcc's alone: clang will not vectorise it without fast-math, and warns. */
static inline float tc_maxf(const float *restrict x, int64_t n) {
    float m = -INFINITY;
#ifndef __clang__
#pragma omp simd reduction(max : m)
#endif
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

#endif
