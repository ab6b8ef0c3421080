/* random.c (cpu): fills from Philox. Element i takes lane i % 4 of counter offset + i / 4;
 * normals pair lanes (0, 1) and (2, 3) through Box-Muller, so a CUDA kernel following the
 * same rule draws the same numbers. */
#include "cpu.h"

#include <math.h>

/* Box-Muller's uniforms must avoid 0: (w + 1/2) / 2^32 lies in (0, 1) */
static double u01_open(uint32_t w) { return ((double)w + 0.5) * (1.0 / 4294967296.0); }

/* a uniform in [0, 1) with as many random bits as the dtype's significand holds (32 at most
 * for f64: one Philox word per element), so that rounding to the dtype never gives 1 */
static double u01_for(uint32_t w, int bits) { return ldexp((double)(w >> (32 - bits)), -bits); }

static int significand_bits(tc_dtype dt) {
    switch (dt) {
    case TC_F16: return 11;
    case TC_BF16: return 8;
    case TC_F32: return 24;
    default: return 32;
    }
}

int tc_cpu_fill_uniform(tc_tensor *t, uint64_t seed, uint64_t offset, double lo, double hi) {
    int64_t n = tc_numel(t);
    char *p = tc_data(t);
    size_t es = tc_dtype_size(t->dtype);
    int bits = significand_bits(t->dtype);
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t blk = 0; blk < (n + 3) / 4; blk++) {
        uint32_t w[4];
        tc_philox(seed, offset + (uint64_t)blk, w);
        for (int l = 0; l < 4 && blk * 4 + l < n; l++) {
            double v = lo + (hi - lo) * u01_for(w[l], bits);
            if (t->dtype == TC_F32) ((float *)p)[blk * 4 + l] = (float)v;
            else tc_store(p + (blk * 4 + l) * (int64_t)es, t->dtype, v);
        }
    }
    return TC_OK;
}

int tc_cpu_fill_normal(tc_tensor *t, uint64_t seed, uint64_t offset, double mean, double std) {
    int64_t n = tc_numel(t);
    char *p = tc_data(t);
    size_t es = tc_dtype_size(t->dtype);
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t blk = 0; blk < (n + 3) / 4; blk++) {
        uint32_t w[4];
        tc_philox(seed, offset + (uint64_t)blk, w);
        double z[4];
        for (int h = 0; h < 2; h++) {
            double r = sqrt(-2.0 * log(u01_open(w[2 * h]))), th = 2.0 * M_PI * u01_open(w[2 * h + 1]);
            z[2 * h] = r * cos(th);
            z[2 * h + 1] = r * sin(th);
        }
        for (int l = 0; l < 4 && blk * 4 + l < n; l++) {
            double v = mean + std * z[l];
            if (t->dtype == TC_F32) ((float *)p)[blk * 4 + l] = (float)v;
            else tc_store(p + (blk * 4 + l) * (int64_t)es, t->dtype, v);
        }
    }
    return TC_OK;
}
