/* device.c: the registry of devices: which kernel table serves a device. It belongs to no
 * backend: the CPU's table is core/cpu/cpu.c, the CUDA table kernels/table.c (built in when
 * nvcc is found; kernels/cuda_none.c stands in for the CUDA runtime otherwise). Adding a
 * device means a table like those and a case here. */
#include "internal.h"

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
