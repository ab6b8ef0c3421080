/* cpu.c: the CPU kernel table, and the device lookup. Adding a device means filling a
 * table like this one; ops never call a kernel except through tc_kern(). */
#include "cpu.h"

#include <stdio.h>

/* 64-byte alignment keeps SIMD loads aligned for every dtype */
static void *cpu_alloc(size_t n) { return aligned_alloc(64, (n + 63) / 64 * 64); }
static void cpu_free(void *p) { free(p); }

const tc_kernels tc_cpu_kernels = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = tc_cpu_copy,
    .fill = tc_cpu_fill,
    .unary = tc_cpu_unary,
    .unary_backward = tc_cpu_unary_backward,
    .binary = tc_cpu_binary,
    .where = tc_cpu_where,
    .reduce = tc_cpu_reduce,
    .arg_reduce = tc_cpu_arg_reduce,
    .gemm = tc_cpu_gemm,
    .fill_uniform = tc_cpu_fill_uniform,
    .fill_normal = tc_cpu_fill_normal,
    .conv2d = tc_cpu_conv2d,
    .conv2d_backward = tc_cpu_conv2d_backward,
    .avg_pool2d = tc_cpu_avg_pool2d,
    .avg_pool2d_backward = tc_cpu_avg_pool2d_backward,
    .max_pool2d = tc_cpu_max_pool2d,
    .max_pool2d_backward = tc_cpu_max_pool2d_backward,
    .interpolate = tc_cpu_interpolate,
    .interpolate_backward = tc_cpu_interpolate_backward,
    .pad = tc_cpu_pad,
    .pad_backward = tc_cpu_pad_backward,
    .softmax = tc_cpu_softmax,
    .softmax_backward = tc_cpu_softmax_backward,
    .cross_entropy = tc_cpu_cross_entropy,
    .cross_entropy_backward = tc_cpu_cross_entropy_backward,
    .layer_norm = tc_cpu_layer_norm,
    .layer_norm_backward = tc_cpu_layer_norm_backward,
    .group_norm = tc_cpu_group_norm,
    .group_norm_backward = tc_cpu_group_norm_backward,
    .dropout = tc_cpu_dropout,
    .sdpa = tc_cpu_sdpa,
    .sdpa_backward = tc_cpu_sdpa_backward,
    .index_select = tc_cpu_index_select,
    .index_add = tc_cpu_index_add,
    .gather = tc_cpu_gather,
    .scatter_add = tc_cpu_scatter_add,
    .sgd_step = tc_cpu_sgd_step,
    .adam_step = tc_cpu_adam_step,
    .ema_update = tc_cpu_ema_update,
    .pow_sum = tc_cpu_pow_sum,
};

#ifdef TC_HAVE_CUDA
#include "../../kernels/table.h"
#endif

const tc_kernels *tc_kern(tc_device dev) {
    if (dev.type == TC_CPU) return &tc_cpu_kernels;
#ifdef TC_HAVE_CUDA
    if (dev.index == 0 && tc_cuda_is_available()) return &tc_cuda_kernels;
    if (dev.index != 0) {
        tc_error("device cuda:%d: only cuda:0 is supported", dev.index);
        return NULL;
    }
    tc_error("device cuda:0 is not available (%s)", tc_cuda_unavailable_reason());
#else
    tc_error("device cuda:%d is not available (tocha was built without CUDA)", dev.index);
#endif
    return NULL;
}
