/* table.c: the CUDA kernel table, filled like the CPU's (core/cpu/cpu.c). Under the CPU
 * emulation (TCU_EMU, tests/cudaemu/) "device" memory is host memory, so the entries that
 * are library calls on a GPU (cuBLASLt, cuDNN) point at the CPU kernels there, and every
 * hand-written kernel runs as it would on the GPU. */
#include "../core/internal.h"
#include "table.h"

#ifdef TCU_EMU
#include "../core/cpu/cpu.h"
#define LIB(cuda, cpu) cpu
#else
#define LIB(cuda, cpu) cuda
#endif

const tc_kernels tc_cuda_kernels = {
    .alloc = tc_cuda_alloc,
    .free = tc_cuda_free,
    .copy = tc_cuda_copy,
    .fill = tc_cuda_fill,
    .unary = tc_cuda_unary,
    .unary_backward = tc_cuda_unary_backward,
    .binary = tc_cuda_binary,
    .where = tc_cuda_where,
    .reduce = tc_cuda_reduce,
    .arg_reduce = tc_cuda_arg_reduce,
    .gemm = LIB(tc_cuda_gemm, tc_cpu_gemm),
    .fill_uniform = tc_cuda_fill_uniform,
    .fill_normal = tc_cuda_fill_normal,
    .conv2d = LIB(tc_cuda_conv2d, tc_cpu_conv2d),
    .conv2d_backward = LIB(tc_cuda_conv2d_backward, tc_cpu_conv2d_backward),
    .avg_pool2d = tc_cuda_avg_pool2d,
    .avg_pool2d_backward = tc_cuda_avg_pool2d_backward,
    .max_pool2d = tc_cuda_max_pool2d,
    .max_pool2d_backward = tc_cuda_max_pool2d_backward,
    .interpolate = tc_cuda_interpolate,
    .interpolate_backward = tc_cuda_interpolate_backward,
    .pad = tc_cuda_pad,
    .pad_backward = tc_cuda_pad_backward,
    .softmax = tc_cuda_softmax,
    .softmax_backward = tc_cuda_softmax_backward,
    .cross_entropy = tc_cuda_cross_entropy,
    .cross_entropy_backward = tc_cuda_cross_entropy_backward,
    .layer_norm = tc_cuda_layer_norm,
    .layer_norm_backward = tc_cuda_layer_norm_backward,
    .group_norm = tc_cuda_group_norm,
    .group_norm_backward = tc_cuda_group_norm_backward,
    .dropout = tc_cuda_dropout,
    .sdpa = tc_cuda_sdpa,
    .sdpa_backward = tc_cuda_sdpa_backward,
    .index_select = tc_cuda_index_select,
    .index_add = tc_cuda_index_add,
    .gather = tc_cuda_gather,
    .scatter_add = tc_cuda_scatter_add,
    .sgd_step = tc_cuda_sgd_step,
    .adam_step = tc_cuda_adam_step,
    .ema_update = tc_cuda_ema_update,
    .pow_sum = tc_cuda_pow_sum,
};
