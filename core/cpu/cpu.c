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
};

const tc_kernels *tc_kern(tc_device dev) {
    if (dev.type == TC_CPU) return &tc_cpu_kernels;
    tc_error("device cuda:%d is not available (tocha was built without CUDA or no GPU is present)", dev.index);
    return NULL;
}
