/* mma.h: the tensor-core building blocks of the flash-attention kernels (flash.cu): the warp-wide
 * matrix product mma.sync m16n8k16 on f16/bf16 fragments with f32 accumulators, ldmatrix (four
 * 8x8 matrices of 16-bit elements from shared memory into fragments, plain or transposed), and
 * cp.async (16-byte copies from global to shared memory that complete in groups). Under nvcc
 * these are the PTX instructions (sm_80 and newer); under the CPU emulation of CUDA (TCU_EMU)
 * each is the same warp-wide operation computed from every lane's operands, exchanged through
 * tcu_emu_warp_exchange, with the PTX fragment layouts. So a kernel built on these runs, layouts
 * and all, on the emulator; what the emulator cannot say is how fast.
 *
 * Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), lane = 4 g + t:
 *   A (16 x 16, row-major), a[0..3]: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
 *   B (16 x 8, "col"), b[0..1]: (k = 2t..2t+1, n = g), (k = 2t+8..2t+9, n = g)
 *   C, D (16 x 8, f32), c[0..3]: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
 * Each 32-bit register holds two 16-bit elements, the lower index in the lower half. */
#ifndef TOCHA_KERNELS_MMA_H
#define TOCHA_KERNELS_MMA_H

#include "cuda.h"

/* ---- 16-bit elements as bits ------------------------------------------------------------------ */
__device__ static inline uint16_t tcu_bits(__half h) { return __half_as_ushort(h); }
__device__ static inline uint16_t tcu_bits(__nv_bfloat16 h) { return __bfloat16_as_ushort(h); }
template <typename T> __device__ static inline float tcu_from_bits(uint16_t b);
template <> __device__ inline float tcu_from_bits<__half>(uint16_t b) { return __half2float(__ushort_as_half(b)); }
template <> __device__ inline float tcu_from_bits<__nv_bfloat16>(uint16_t b) {
    return __bfloat162float(__ushort_as_bfloat16(b));
}
/* two floats rounded to T, packed: lo in the lower half */
template <typename T> __device__ static inline uint32_t tcu_pack2(float lo, float hi) {
    return (uint32_t)tcu_bits(tcu_from_float<T>(lo)) | (uint32_t)tcu_bits(tcu_from_float<T>(hi)) << 16;
}

#ifndef TCU_EMU
/* ---- the PTX instructions ------------------------------------------------------------------------ */
__device__ static inline uint32_t tcu_smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* d += a b on one m16n8k16 tile */
template <typename T> __device__ static inline void tcu_mma(float d[4], const uint32_t a[4], const uint32_t b[2]);
template <> __device__ inline void tcu_mma<__half>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ inline void tcu_mma<__nv_bfloat16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* four 8x8 matrices: lanes 8j..8j+7 give the addresses of matrix j's rows (16 bytes each, in shared
 * memory); r[j] gets this lane's elements of matrix j: (g, 2t..2t+1), or transposed (2t..2t+1, g) */
__device__ static inline void tcu_ldmatrix_x4(uint32_t r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tcu_smem_addr(row)));
}
__device__ static inline void tcu_ldmatrix_x4_trans(uint32_t r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tcu_smem_addr(row)));
}
/* two matrices: lanes 0..15 give the addresses (the others' are not read) */
__device__ static inline void tcu_ldmatrix_x2(uint32_t r[2], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(tcu_smem_addr(row)));
}
__device__ static inline void tcu_ldmatrix_x2_trans(uint32_t r[2], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(tcu_smem_addr(row)));
}

/* 16 bytes from global src to shared dst, or 16 zero bytes when !valid (src is then not read);
 * complete after tcu_cp_async_commit and a tcu_cp_async_wait<N> that leaves at most N newer
 * groups pending, followed by a barrier for the other threads' copies */
__device__ static inline void tcu_cp_async16(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(tcu_smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ static inline void tcu_cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ static inline void tcu_cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#else
/* ---- the emulation: the same operations from every lane's operands ---------------------------- */
template <typename T> __device__ static inline float tcu_half_of(uint32_t r, int hi) {
    return tcu_from_bits<T>((uint16_t)(hi ? r >> 16 : r & 0xffff));
}

template <typename T> __device__ static inline void tcu_mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]}, all[32][6];
    tcu_emu_warp_exchange(mine, sizeof mine, all);
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        int r = i < 2 ? g : g + 8, n = 2 * t + (i & 1);
        float s = 0;
        for (int k = 0; k < 16; k++) {
            /* A(r, k): lane 4 (r % 8) + (k % 8) / 2, register (k >= 8) * 2 + (r >= 8) */
            float av = tcu_half_of<T>(all[4 * (r % 8) + (k % 8) / 2][(k >= 8) * 2 + (r >= 8)], k & 1);
            /* B(k, n): lane 4 n + (k % 8) / 2, register 4 + (k >= 8) */
            float bv = tcu_half_of<T>(all[4 * n + (k % 8) / 2][4 + (k >= 8)], k & 1);
            s += av * bv; /* the products of 16-bit floats are exact in float */
        }
        d[i] += s;
    }
}

__device__ static inline uint16_t tcu_emu_h(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* nmat matrices: lane 8j + r gives matrix j's row r (16-byte aligned, as on the GPU) */
__device__ static inline void tcu_ldmatrix_emu(uint32_t *r, int nmat, bool trans, const void *row) {
    const void *all[32];
    if ((uintptr_t)row & 15) tcu_emu_misaligned("ldmatrix", row);
    tcu_emu_warp_exchange(&row, sizeof row, all);
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int j = 0; j < nmat; j++) {
        if (!trans) memcpy(&r[j], (const char *)all[8 * j + g] + 4 * t, 4);
        else
            r[j] = (uint32_t)tcu_emu_h((const char *)all[8 * j + 2 * t] + 2 * g) |
                   (uint32_t)tcu_emu_h((const char *)all[8 * j + 2 * t + 1] + 2 * g) << 16;
    }
}
__device__ static inline void tcu_ldmatrix_x4(uint32_t r[4], const void *row) { tcu_ldmatrix_emu(r, 4, false, row); }
__device__ static inline void tcu_ldmatrix_x4_trans(uint32_t r[4], const void *row) {
    tcu_ldmatrix_emu(r, 4, true, row);
}
__device__ static inline void tcu_ldmatrix_x2(uint32_t r[2], const void *row) { tcu_ldmatrix_emu(r, 2, false, row); }
__device__ static inline void tcu_ldmatrix_x2_trans(uint32_t r[2], const void *row) {
    tcu_ldmatrix_emu(r, 2, true, row);
}

/* copies complete at once here, which satisfies every later wait; both ends 16-byte aligned */
__device__ static inline void tcu_cp_async16(void *dst, const void *src, bool valid) {
    if ((uintptr_t)dst & 15) tcu_emu_misaligned("cp.async to shared memory", dst);
    if (valid && ((uintptr_t)src & 15)) tcu_emu_misaligned("cp.async from global memory", src);
    if (valid) memcpy(dst, src, 16);
    else memset(dst, 0, 16);
}
__device__ static inline void tcu_cp_async_commit(void) {}
template <int N> __device__ static inline void tcu_cp_async_wait(void) {}
#endif

#endif
