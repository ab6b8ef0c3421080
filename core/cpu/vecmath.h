/* vecmath.h (cpu): f32 exp, sigmoid and erf with no libm call and no branch, so that the
 * loops calling them vectorise under `#pragma omp simd` (libm's scalar expf was most of the
 * time of silu, gelu and softmax), and TC_SIMD_CLONES, which builds a hot loop for AVX-512,
 * AVX2 + FMA and baseline x86-64 and picks one at load time, letting it fuse multiply-adds
 * (-std=c11 turns contraction off elsewhere; the polynomials run 15% faster fused). f64
 * never comes here: it keeps libm's correctly rounded functions for the gradient checks. */
#ifndef TOCHA_VECMATH_H
#define TOCHA_VECMATH_H

#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
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

/* exp(x) within about 1 ulp (Cephes' polynomial on [-ln2/2, ln2/2] after x = k ln2 + r);
 * 0 below -104, inf above 88.72, NaN stays NaN. k is clamped rather than x: a clamped x
 * makes the compiler duplicate everything after it for the constant case (two divisions
 * in silu instead of one). 2^k is applied as two halves so that subnormal results come
 * out right. */
static inline float tc_expf(float x) {
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    k = k > -150.0f ? k : -150.0f;                                     /* (NaN becomes -150) */
    k = k < 128.0f ? k : 128.0f;
    float r = x - k * 0.693359375f;
    r = r + k * 2.12194440e-4f; /* ln2 = 0.693359375 - 2.12194440e-4, split for exactness */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t ki = (int32_t)k, k1 = ki / 2, k2 = ki - k1;
    float e = p * tc_bits_f32((k1 + 127) << 23) * tc_bits_f32((k2 + 127) << 23);
    return x < -104.0f ? 0.0f : e;
}

static inline float tc_sigmoidf(float x) { return 1.0f / (1.0f + tc_expf(-x)); }

/* erf(x) to 1.5e-7 (Abramowitz and Stegun 7.1.26, the formula PyTorch's vectorised erf uses) */
static inline float tc_erff(float x) {
    float a = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
    float e = 1.0f - r * tc_expf(-a * a);
    return x < 0 ? -e : e;
}

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
