/* random.c (cpu): fills from Philox. Element i takes lane i % 4 of counter offset + i / 4;
 * normals pair lanes (0, 1) and (2, 3) through Box-Muller, so a CUDA kernel following the
 * same rule draws the same numbers. */
#include "cpu.h"
#include "philox.h"

#include <math.h>

int tc_cpu_fill_uniform(tc_tensor *t, uint64_t seed, uint64_t offset, double lo, double hi) {
    int64_t n = tc_numel(t);
    char *p = tc_data(t);
    size_t es = tc_dtype_size(t->dtype);
    int bits = tc_philox_bits(t->dtype);
#pragma omp parallel for schedule(static) if (tc_cpu_parallel(n, TC_PAR_COMPUTE))
    for (int64_t blk = 0; blk < (n + 3) / 4; blk++) {
        uint32_t w[4];
        tc_philox(seed, offset + (uint64_t)blk, w);
        for (int l = 0; l < 4 && blk * 4 + l < n; l++) {
            double v = lo + (hi - lo) * tc_philox_u01(w[l], bits);
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
#pragma omp parallel for schedule(static) if (tc_cpu_parallel(n, TC_PAR_COMPUTE))
    for (int64_t blk = 0; blk < (n + 3) / 4; blk++) {
        uint32_t w[4];
        tc_philox(seed, offset + (uint64_t)blk, w);
        double z[4];
        tc_philox_normals(w, z);
        for (int l = 0; l < 4 && blk * 4 + l < n; l++) {
            double v = mean + std * z[l];
            if (t->dtype == TC_F32) ((float *)p)[blk * 4 + l] = (float)v;
            else tc_store(p + (blk * 4 + l) * (int64_t)es, t->dtype, v);
        }
    }
    return TC_OK;
}
