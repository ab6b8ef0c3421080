/* table.c: the CUDA kernel table, generated like the CPU's (core/cpu/cpu.c) from the list in
 * core/kernels.h: entry `name` is tc_cuda_<name> (declared here too: kernels/cuda.h, which
 * declares them for the kernel files, is C++). */
#include "../core/internal.h"

TC_KERNELS(TC_KERNEL_CUDA)

#ifdef TCU_EMU
/* Under the CPU emulation of CUDA (TCU_EMU, tests/cudaemu/) "device" memory is host memory:
 * the entries that are library calls on a GPU (cuBLASLt in gemm.cu, cuDNN in conv.cu, files
 * not built there) take the CPU's kernels, and every hand-written kernel runs as it would on
 * the GPU. Each override renames an entry's function before the table below is expanded. */
TC_KERNELS(TC_KERNEL_CPU)
#define tc_cuda_gemm tc_cpu_gemm
#define tc_cuda_conv2d tc_cpu_conv2d
#define tc_cuda_conv2d_backward tc_cpu_conv2d_backward
#endif

const tc_kernels tc_cuda_kernels = {TC_KERNELS(TC_KERNEL_CUDA_ENTRY)};
