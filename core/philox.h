/* philox.h: Philox 4x32 with 10 rounds (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3"), the one generator behind every random number in tocha, and the conversions of its
 * words into uniforms and normals, as inline functions that both the CPU (core/ops/random.c's
 * tc_philox, core/cpu/random.c, attention.c) and the CUDA kernels (kernels/random.cu,
 * attention.cu) compile, so the two devices draw the same numbers by construction. */
#ifndef TOCHA_PHILOX_H
#define TOCHA_PHILOX_H

#include "tocha.h"

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TC_PHILOX_FN __host__ __device__ static inline
#else
#define TC_PHILOX_FN static inline
#endif

/* the four 32-bit words for (seed, counter): key = seed, counter = (counter, 0) */
TC_PHILOX_FN void tc_philox_words(uint64_t seed, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* (w + 1/2) / 2^32: in (0, 1), never 0 (Box-Muller's log; dropout keeps an element when this
 * is >= p) */
TC_PHILOX_FN double tc_philox_u01_open(uint32_t w) { return ((double)w + 0.5) * (1.0 / 4294967296.0); }

/* the random bits of a uniform of dtype dt: its significand's (for f64, one word: 32) */
TC_PHILOX_FN int tc_philox_bits(tc_dtype dt) {
    switch (dt) {
    case TC_F16: return 11;
    case TC_BF16: return 8;
    case TC_F32: return 24;
    default: return 32;
    }
}

/* [0, 1) from the top `bits` bits of w (a dtype's significand, 32 at most): exact in double,
 * so rounding to that dtype never gives 1 */
TC_PHILOX_FN double tc_philox_u01(uint32_t w, int bits) {
    return (double)(w >> (32 - bits)) * (1.0 / (double)(1ull << bits));
}

/* four standard normals from four words: Box-Muller on the lane pairs (0, 1) and (2, 3). The
 * angle's product is rounded on its own on the GPU too (nvcc would fuse it otherwise). */
TC_PHILOX_FN void tc_philox_normals(const uint32_t w[4], double z[4]) {
    for (int h = 0; h < 2; h++) {
        double r = sqrt(-2.0 * log(tc_philox_u01_open(w[2 * h])));
        double u = tc_philox_u01_open(w[2 * h + 1]);
#ifdef __CUDA_ARCH__
        double th = __dmul_rn(2.0 * 3.14159265358979323846, u);
#else
        double th = 2.0 * 3.14159265358979323846 * u;
#endif
        z[2 * h] = r * cos(th);
        z[2 * h + 1] = r * sin(th);
    }
}

#endif
