/* table.c: the CUDA kernel table, generated like the CPU's (core/cpu/cpu.c) from the list in
 * core/kernels.h: entry `name` is tc_cuda_<name> (declared here too: kernels/cuda.h, which
 * declares them for the kernel files, is C++). */
#include "../core/internal.h"

TC_KERNELS(TC_KERNEL_CUDA)

#ifdef TCU_EMU
/* Under the CPU emulation of CUDA (TCU_EMU, tests/cudaemu/) "device" memory is host memory:
 * the GEMM, a cuBLASLt call on a GPU (gemm.cu, not built there), takes the CPU's kernel
 * (queued on the stream by tests/cudaemu/gemm.cpp, so a graph capture records it), and
 * everything else runs as it would on the GPU (conv.cu on the emulator's cuDNN). The override
 * renames the entry's function before the table below is expanded. */
int tcu_emu_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta);
#define tc_cuda_gemm tcu_emu_gemm
#endif

const tc_kernels tc_cuda_kernels = {TC_KERNELS(TC_KERNEL_CUDA_ENTRY)};
