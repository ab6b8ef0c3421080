/* pad.h: the geometry of reflect and replicate padding, written once for both devices: the
 * CPU kernel (core/cpu/pool.c) and the CUDA kernels (kernels/pool.cu) compile it, so an output
 * element reads the same input element on either. */
#ifndef TOCHA_PAD_H
#define TOCHA_PAD_H

#include "tocha.h"

#ifdef __CUDACC__
#define TC_PAD_FN __host__ __device__ static inline
#else
#define TC_PAD_FN static inline
#endif

/* contiguous x seen as [B, H, W] over its last two dims (H = 1 for a 1-d pad), y as
 * [B, OH, OW]; top and left: the padding before H and W */
typedef struct {
    int64_t B, H, W, OH, OW, top, left;
    tc_pad_mode mode;
} tc_pad_geom;

/* pads: (before, after) pairs from the last dim back, as the kernels take them */
static inline tc_pad_geom tc_pad_geom_of(const tc_tensor *x, const tc_tensor *y, const int64_t *pads,
                                         tc_pad_mode mode) {
    int nd = x->ndim;
    tc_pad_geom g = {1, nd >= 2 ? x->shape[nd - 2] : 1, x->shape[nd - 1], nd >= 2 ? y->shape[nd - 2] : 1,
                     y->shape[nd - 1], nd >= 2 ? pads[2] : 0, pads[0], mode};
    for (int d = 0; d < nd - 2; d++) g.B *= x->shape[d];
    return g;
}

/* the input coordinate that output coordinate o reads along a dim of n with `before` padding:
 * reflect mirrors without repeating the edge, replicate repeats the edge */
TC_PAD_FN int64_t tc_pad_src(int64_t o, int64_t before, int64_t n, tc_pad_mode mode) {
    int64_t i = o - before;
    if (mode == TC_PAD_REPLICATE) return i < 0 ? 0 : i >= n ? n - 1 : i;
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return i;
}

#endif
