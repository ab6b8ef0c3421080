/* cuda_bf16.h (cudaemu): __nv_bfloat16 as 16 stored bits (the top half of a float), with
 * CUDA's conversions rounding to nearest even (NaN becomes CUDA's canonical 0x7fff). As in
 * cuda_fp16.h: no arithmetic operators, no implicit conversions. */
#ifndef TCU_EMU_CUDA_BF16_H
#define TCU_EMU_CUDA_BF16_H

#include "cuda_fp16.h" /* tcu_emu_f64_to_f32_odd */

struct __nv_bfloat16_raw { unsigned short x; };
struct __nv_bfloat16 {
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(const __nv_bfloat16_raw &r) : __x(r.x) {}
    constexpr operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
protected:
    unsigned short __x;
};

static inline float tcu_emu_bf16_bits_to_f32(unsigned short h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline unsigned short tcu_emu_f32_to_bf16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return 0x7fff; /* NaN */
    return (unsigned short)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static inline float __bfloat162float(__nv_bfloat16 h) { return tcu_emu_bf16_bits_to_f32(((__nv_bfloat16_raw)h).x); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16_raw{tcu_emu_f32_to_bf16_bits(f)}; }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline __nv_bfloat16 __double2bfloat16(double d) { return __float2bfloat16_rn(tcu_emu_f64_to_f32_odd(d)); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return ((__nv_bfloat16_raw)h).x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { return __nv_bfloat16_raw{x}; }

#endif
