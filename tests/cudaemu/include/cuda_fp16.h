/* cuda_fp16.h (cudaemu): __half as 16 stored bits, with CUDA's conversions, rounding to
 * nearest even exactly as the GPU's cvt.rn does (NaN becomes CUDA's canonical 0x7fff).
 * No arithmetic operators and no implicit conversions from float: kernels convert with
 * __half2float / __float2half_rn, so code that compiles here keeps to tocha's kernel rules. */
#ifndef TCU_EMU_CUDA_FP16_H
#define TCU_EMU_CUDA_FP16_H

#include <math.h>
#include <stdint.h>
#include <string.h>

struct __half_raw { unsigned short x; };
struct __half {
    __half() = default;
    constexpr __half(const __half_raw &r) : __x(r.x) {}
    constexpr operator __half_raw() const { return __half_raw{__x}; }
protected:
    unsigned short __x;
};

/* ---- bit-level conversions, shared with cuda_bf16.h ------------------------------------- */
static inline float tcu_emu_f16_bits_to_f32(unsigned short h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0x1f) bits = sign | 0x7f800000 | (m << 13);      /* inf, NaN */
    else if (e != 0) bits = sign | ((e + 112) << 23) | (m << 13); /* normal */
    else if (m == 0) bits = sign;                               /* zero */
    else {                                                      /* subnormal: normalize */
        e = 113;
        while (!(m & 0x400)) { m <<= 1; e--; }
        bits = sign | (e << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline unsigned short tcu_emu_f32_to_f16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return 0x7fff;                         /* NaN */
    if (ax >= 0x477ff000) return (unsigned short)(sign | 0x7c00); /* from 65520 up: inf */
    if (ax >= 0x38800000) {                                     /* normal half */
        uint32_t r = ax + 0xfff + ((ax >> 13) & 1);
        return (unsigned short)(sign | ((r - 0x38000000) >> 13));
    }
    if (ax < 0x33000000) return (unsigned short)sign;           /* below 2^-25: zero */
    /* subnormal half: the mantissa in units of 2^-24, rounded to nearest even */
    uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000, shift = 126 - e;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1))) q++;
    return (unsigned short)(sign | q);
}
/* double to float rounding to odd: a later round to nearest even to 16 bits then equals
 * rounding the double once, as the GPU's cvt.rn.f16.f64 does */
static inline float tcu_emu_f64_to_f32_odd(double d) {
    float f = (float)d;
    if (d == d && (double)f != d) {
        uint32_t b;
        memcpy(&b, &f, 4);
        if (fabs((double)f) > fabs(d)) b -= 1; /* rounded away from zero: step back */
        b |= 1;
        memcpy(&f, &b, 4);
    }
    return f;
}

/* ---- CUDA's functions ------------------------------------------------------------------ */
static inline float __half2float(__half h) { return tcu_emu_f16_bits_to_f32(((__half_raw)h).x); }
static inline __half __float2half_rn(float f) { return __half_raw{tcu_emu_f32_to_f16_bits(f)}; }
static inline __half __float2half(float f) { return __float2half_rn(f); }
static inline __half __double2half(double d) { return __float2half_rn(tcu_emu_f64_to_f32_odd(d)); }
static inline unsigned short __half_as_ushort(__half h) { return ((__half_raw)h).x; }
static inline __half __ushort_as_half(unsigned short x) { return __half_raw{x}; }

#endif
