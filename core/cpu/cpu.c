/* cpu.c: the CPU kernel table, every entry tc_cpu_<name> (core/kernels.h), and the CPU's
 * storage allocator. Ops never call a kernel except through tc_kern() (core/device.c). */
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
void *tc_cpu_alloc(size_t n) {
    pthread_once(&malloc_tuned, tune_malloc);
    return aligned_alloc(64, (n + 63) / 64 * 64);
}
void tc_cpu_free(void *p) { free(p); }

const tc_kernels tc_cpu_kernels = {TC_KERNELS(TC_KERNEL_CPU_ENTRY)};
