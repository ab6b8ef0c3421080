/* half.c (cpu): f32 <-> f16 / bf16 runs, the casts autocast makes around every lowered op and
 * the half kernels' row loads. bf16 is the top half of an f32 (rounded to nearest even; NaN
 * kept, made quiet); its contiguous loops are built per instruction set (16 lanes on AVX-512).
 * f16 goes through the F16C instructions where the CPU has them, else tensor.c's scalar
 * conversions. */
#include "cpu.h"
#include "vecmath.h"

static inline uint16_t bf16_of(uint32_t x) {
    uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    return (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? (x >> 16) | 0x40u : r);
}

TC_SIMD_CLONES
static void bf16_from_f32_dense(uint16_t *restrict d, const uint32_t *restrict s, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) d[i] = bf16_of(s[i]);
}

TC_SIMD_CLONES
static void f32_from_bf16_dense(uint32_t *restrict d, const uint16_t *restrict s, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) d[i] = (uint32_t)s[i] << 16;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_F16C_PATH 1
__attribute__((target("avx,f16c"))) static void f16_from_f32_f16c(uint16_t *d, const float *s, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = tc_f32_to_f16(s[i]);
}

__attribute__((target("avx,f16c"))) static void f32_from_f16_f16c(float *d, const uint16_t *s, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) d[i] = tc_f16_to_f32(s[i]);
}

static bool has_f16c(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    return known;
}
#endif

void tc_cpu_half_from_f32(uint16_t *d, int64_t sd, const float *s, int64_t ss, int64_t n, tc_dtype dt) {
    if (dt == TC_BF16) {
        if (sd == 1 && ss == 1) { bf16_from_f32_dense(d, (const uint32_t *)s, n); return; }
        const uint32_t *u = (const uint32_t *)s;
        for (int64_t i = 0; i < n; i++) d[i * sd] = bf16_of(u[i * ss]);
        return;
    }
#ifdef HAVE_F16C_PATH
    if (sd == 1 && ss == 1 && has_f16c()) { f16_from_f32_f16c(d, s, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) d[i * sd] = tc_f32_to_f16(s[i * ss]);
}

void tc_cpu_f32_from_half(float *d, int64_t sd, const uint16_t *s, int64_t ss, int64_t n, tc_dtype dt) {
    if (dt == TC_BF16) {
        if (sd == 1 && ss == 1) { f32_from_bf16_dense((uint32_t *)d, s, n); return; }
        uint32_t *u = (uint32_t *)d;
        for (int64_t i = 0; i < n; i++) u[i * sd] = (uint32_t)s[i * ss] << 16;
        return;
    }
#ifdef HAVE_F16C_PATH
    if (sd == 1 && ss == 1 && has_f16c()) { f32_from_f16_f16c(d, s, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) d[i * sd] = tc_f16_to_f32(s[i * ss]);
}
