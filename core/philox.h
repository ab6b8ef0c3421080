/* philox.h: Philox 4x32 with 10 rounds (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3"), the one generator behind every random number in tocha, as an inline function
 * that both the CPU (core/ops/random.c's tc_philox) and the CUDA kernels (kernels/cuda.h)
 * compile, so the two devices draw the same numbers by construction. */
#ifndef TOCHA_PHILOX_H
#define TOCHA_PHILOX_H

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

#endif
