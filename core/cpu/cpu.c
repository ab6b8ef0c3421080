/* cpu.c: the CPU kernel table, every entry tc_cpu_<name> (core/kernels.h); its allocator
 * (alloc and free) is alloc.c. Ops never call a kernel except through tc_kern() (core/device.c). */
#include "cpu.h"

const tc_kernels tc_cpu_kernels = {TC_KERNELS(TC_KERNEL_CPU_ENTRY)};
