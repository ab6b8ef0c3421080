/* cpu.c: the CPU kernel table, and the device lookup. Adding a device means filling a
 * table like this one; ops never call a kernel except through tc_kern(). */
#include "cpu.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Tensor data comes from malloc. glibc serves blocks from 128 KiB up (a threshold it raises
 * as it goes, to 32 MiB at most) with fresh mmaps, and returns free memory at the top of
 * its heap to the kernel past twice that threshold; Lua frees a step's activations in bulk
 * at its collections, so every step page-faulted (the kernel zeroing each page) through
 * memory it had just given back. Blocks up to 32 MiB now stay on the heap, and up to 512 MiB
 * of free heap is kept: the demo's training step takes 2.3-2.5x fewer page faults and 9-16%
 * less CPU time (bench/t2i.lua at 1 thread under perf stat). Not done when the user tunes
 * malloc through GLIBC_TUNABLES. */
static void tune_malloc(void) {
#ifdef __GLIBC__
    if (getenv("GLIBC_TUNABLES")) return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

static pthread_once_t malloc_tuned = PTHREAD_ONCE_INIT;

/* 64-byte alignment keeps SIMD loads aligned for every dtype */
static void *cpu_alloc(size_t n) {
    pthread_once(&malloc_tuned, tune_malloc);
    return aligned_alloc(64, (n + 63) / 64 * 64);
}
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
