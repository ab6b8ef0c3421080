/* random.cu: uniform and normal fills and dropout from Philox 4x32-10, drawing exactly the
 * CPU's numbers (core/cpu/random.c, core/cpu/attention.c): element i takes lane i % 4 of
 * counter offset + i / 4, and every value is computed in double by the CPU's formulas. */
#include "cuda.h"

#include <math.h>

/* The values are computed in double by core/philox.h's conversions, as the CPU's. nvcc would
 * fuse a product and a sum into one fused multiply-add (one rounding instead of two), which the
 * CPU build never does, so the products that feed a sum are kept apart (tcu_mul_rn). */

/* ---- fills: one thread per counter (four elements) ------------------------------------------ */
__global__ void uniform_kernel(void *t, tc_dtype dt, int64_t n, uint64_t seed, uint64_t offset, double lo,
                               double span, int bits) {
    TCU_GRID_STRIDE(blk, (n + 3) / 4) {
        uint32_t w[4];
        tc_philox_words(seed, offset + (uint64_t)blk, w);
        for (int l = 0; l < 4 && blk * 4 + l < n; l++)
            tcu_store(t, dt, blk * 4 + l, lo + tcu_mul_rn(span, tc_philox_u01(w[l], bits)));
    }
}

/* Box-Muller on the lane pairs (0, 1) and (2, 3) */
__global__ void normal_kernel(void *t, tc_dtype dt, int64_t n, uint64_t seed, uint64_t offset, double mean,
                              double std) {
    TCU_GRID_STRIDE(blk, (n + 3) / 4) {
        uint32_t w[4];
        tc_philox_words(seed, offset + (uint64_t)blk, w);
        double z[4];
        tc_philox_normals(w, z);
        for (int l = 0; l < 4 && blk * 4 + l < n; l++) tcu_store(t, dt, blk * 4 + l, mean + tcu_mul_rn(std, z[l]));
    }
}

/* a CUDA graph replays a kernel's arguments as captured: a draw inside a capture would give
 * the same numbers at every replay */
static int no_capture(const char *op) {
    if (!tc_cuda_is_capturing()) return TC_OK;
    return tc_error("%s: random numbers during CUDA graph capture would repeat at every replay (the "
                    "generator's seed and offset are kernel arguments); draw them before the capture "
                    "into a tensor the captured work reads",
                    op);
}

static int check_fill(const tc_tensor *t, const char *op) {
    if (no_capture(op) != TC_OK) return TC_ERR;
    if (!tc_dtype_is_float(t->dtype))
        return tc_error("%s: dtype %s is not supported on cuda", op, tc_dtype_name(t->dtype));
    if (!tc_is_contiguous(t)) return tc_error("%s: the tensor must be contiguous", op);
    return TC_OK;
}

extern "C" int tc_cuda_fill_uniform(tc_tensor *t, uint64_t seed, uint64_t offset, double lo, double hi) {
    if (check_fill(t, "uniform_") != TC_OK) return TC_ERR;
    int64_t n = tc_numel(t);
    if (n == 0) return TC_OK;
    TCU_LAUNCH(uniform_kernel, tcu_blocks((n + 3) / 4), TCU_THREADS, 0, tcu_ptr(t), t->dtype, n, seed, offset, lo,
               hi - lo, tc_philox_bits(t->dtype));
    TCU_LAUNCHED("uniform_");
    return TC_OK;
}

extern "C" int tc_cuda_fill_normal(tc_tensor *t, uint64_t seed, uint64_t offset, double mean, double std) {
    if (check_fill(t, "normal_") != TC_OK) return TC_ERR;
    int64_t n = tc_numel(t);
    if (n == 0) return TC_OK;
    TCU_LAUNCH(normal_kernel, tcu_blocks((n + 3) / 4), TCU_THREADS, 0, tcu_ptr(t), t->dtype, n, seed, offset, mean,
               std);
    TCU_LAUNCHED("normal_");
    return TC_OK;
}

/* ---- dropout: y[i] = x[i] * scale where lane i % 4 of counter offset + i / 4 is >= p ------------
 * x any strides (row-major element i at tcu_offset), y contiguous; in double as the CPU's
 * rows are, so f32 rounds once, from the double product. */
__global__ void dropout_kernel(void *y, const void *x, tcu_layout lx, tc_dtype dt, int64_t n, double p, double scale,
                               uint64_t seed, uint64_t offset) {
    TCU_GRID_STRIDE(blk, (n + 3) / 4) {
        uint32_t w[4];
        tc_philox_words(seed, offset + (uint64_t)blk, w);
        for (int l = 0; l < 4 && blk * 4 + l < n; l++) {
            int64_t i = blk * 4 + l;
            tcu_store(y, dt, i, tc_philox_u01_open(w[l]) >= p ? tcu_load(x, dt, tcu_offset(lx, i)) * scale : 0.0);
        }
    }
}

extern "C" int tc_cuda_dropout(tc_tensor *y, const tc_tensor *x, double p, uint64_t seed, uint64_t offset) {
    if (no_capture("dropout") != TC_OK) return TC_ERR;
    if (!tc_dtype_is_float(x->dtype) || y->dtype != x->dtype)
        return tc_error("dropout: dtype %s is not supported on cuda", tc_dtype_name(x->dtype));
    int64_t n = tc_numel(x);
    if (n == 0) return TC_OK;
    double scale = p < 1 ? 1 / (1 - p) : 0;
    TCU_LAUNCH(dropout_kernel, tcu_blocks((n + 3) / 4), TCU_THREADS, 0, tcu_ptr(y), (const void *)tcu_ptr(x),
               tcu_layout_of(x), x->dtype, n, p, scale, seed, offset);
    TCU_LAUNCHED("dropout");
    return TC_OK;
}
