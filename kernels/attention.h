/* attention.h: what the attention kernels share (attention.cu: the tiled float kernel, flash.cu:
 * the tensor-core kernel for f16 and bf16): the problem as kernel arguments, each score from its
 * dot product (scale, causal, mask), the dropout rule, and the probabilities from the logsumexp. */
#ifndef TOCHA_KERNELS_ATTENTION_H
#define TOCHA_KERNELS_ATTENTION_H

#include "cuda.h"

/* ---- the problem ----------------------------------------------------------------------------------
 * Every operand has the batch dims B.. (stride 0 where broadcast) and an inner matrix. */
typedef struct {
    const void *p;            /* NULL: absent */
    int64_t rs, cs;           /* the inner matrix's strides */
    int64_t bs[TC_MAX_DIMS];  /* the batch dims' strides */
} operand;

typedef struct {
    int nb;
    int64_t bshape[TC_MAX_DIMS];
    int64_t B, L, S, E, Ev;
    operand q, k, v, m, go; /* m: the mask (or absent), go: gout (backward) */
    tc_dtype mdt;
    double scale, p; /* p: dropout */
    bool causal;
    uint64_t seed, offset;
} attn;

static inline operand operand_of(const tc_tensor *t, int nb) {
    operand o;
    memset(&o, 0, sizeof o);
    if (!t) return o;
    o.p = tcu_ptr(t);
    o.rs = t->stride[nb];
    o.cs = t->stride[nb + 1];
    for (int d = 0; d < nb; d++) o.bs[d] = t->stride[d];
    return o;
}

static inline attn attn_of(const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                    const tc_tensor *gout, const tc_sdpa_params *p) {
    attn a;
    memset(&a, 0, sizeof a);
    a.nb = q->ndim - 2;
    for (int d = 0; d < a.nb; d++) a.bshape[d] = q->shape[d];
    a.B = tc_shape_numel(a.nb, q->shape);
    a.L = q->shape[a.nb];
    a.S = k->shape[a.nb];
    a.E = q->shape[a.nb + 1];
    a.Ev = v->shape[a.nb + 1];
    a.q = operand_of(q, a.nb);
    a.k = operand_of(k, a.nb);
    a.v = operand_of(v, a.nb);
    a.m = operand_of(mask, a.nb);
    a.go = operand_of(gout, a.nb);
    a.mdt = mask ? mask->dtype : TC_BOOL;
    a.scale = p->scale;
    a.p = p->dropout_p;
    a.causal = p->causal;
    a.seed = p->seed;
    a.offset = p->offset;
    return a;
}

/* the element offset of batch slice b in an operand */
__device__ static inline int64_t batch_off(const attn &a, const operand &o, int64_t b) {
    int64_t off = 0;
    for (int d = a.nb - 1; d >= 0; d--) {
        off += b % a.bshape[d] * o.bs[d];
        b /= a.bshape[d];
    }
    return off;
}

/* the score of (l, s) from its dot product: scaled, -inf outside [L, S], where causal hides it
 * or a bool mask is false, plus a float mask. moff: the mask's batch offset */
template <typename A> __device__ static A score(const attn &a, int64_t moff, int64_t l, int64_t s, A dot) {
    if (l >= a.L || s >= a.S || (a.causal && s > l)) return -INFINITY;
    A v = a.E > 0 ? dot * (A)a.scale : (A)0; /* E = 0: scale is inf, the scores 0 (the CPU's GEMM) */
    if (!a.m.p) return v;
    double mv = tcu_load(a.m.p, a.mdt, moff + l * a.m.rs + s * a.m.cs);
    if (a.mdt == TC_BOOL) return mv != 0 ? v : (A)-INFINITY;
    return v + (A)mv;
}

/* what dropout multiplies probability (b, l, s) by: 1 / (1 - p) where lane i % 4 of counter
 * offset + i / 4, i = (b L + l) S + s, as a uniform in (0, 1), is >= p; else 0 */
template <typename A> __device__ static A drop_mul(const attn &a, int64_t b, int64_t l, int64_t s) {
    if (a.p <= 0) return 1;
    uint64_t i = (uint64_t)((b * a.L + l) * a.S + s);
    uint32_t w[4];
    tc_philox_words(a.seed, a.offset + i / 4, w);
    uint32_t x = i % 4 == 0 ? w[0] : i % 4 == 1 ? w[1] : i % 4 == 2 ? w[2] : w[3]; /* w stays in registers */
    bool keep = tc_philox_u01_open(x) >= a.p;
    return keep && a.p < 1 ? (A)(1 / (1 - a.p)) : (A)0;
}

/* slice b's operands */
template <typename T> struct slice {
    const T *q, *k, *v, *go;
    int64_t b, moff; /* moff: the mask's batch offset */
};
template <typename T> __device__ static slice<T> slice_at(const attn &a, int64_t b) {
    slice<T> sl;
    sl.q = (const T *)a.q.p + batch_off(a, a.q, b);
    sl.k = (const T *)a.k.p + batch_off(a, a.k, b);
    sl.v = (const T *)a.v.p + batch_off(a, a.v, b);
    sl.go = a.go.p ? (const T *)a.go.p + batch_off(a, a.go, b) : NULL;
    sl.b = b;
    sl.moff = a.m.p ? batch_off(a, a.m, b) : 0;
    return sl;
}

/* the probability of a score given its row's logsumexp (0 for a row with nothing to attend) */
template <typename A> __device__ static inline A prob(A s, A lse) { return lse == -INFINITY ? 0 : tcu_exp(s - lse); }

/* ---- the tensor-core kernels (flash.cu) --------------------------------------------------------------
 * For f16 and bf16 q, k, v with head dims E and Ev multiples of 8 up to 256: tcu_flash_fits says
 * whether they take a problem (never when the mask's gradient is wanted: the tiled kernel
 * computes that); the forward writes out and lse as sdpa_forward does, the backward gq, gk, gv
 * (each may be NULL) from the forward's lse, with dsum a workspace of B L floats. */
#define TCU_FLASH_MAX_DIM 256
bool tcu_flash_fits(tc_dtype dt, const attn &a, bool gmask);
int tcu_flash_forward(tc_tensor *out, tc_tensor *lse, tc_dtype dt, const attn &a);
int tcu_flash_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_dtype dt, const attn &a, const tc_tensor *lse,
                       float *dsum);

/* ---- cuDNN's fused attention (cudnn_attention.cu) ---------------------------------------------------
 * For f16 and bf16: TC_OK where cuDNN ran the problem, TCU_DECLINED where it did not (why in
 * *reason, a static string or one a cached plan keeps; the caller runs flash.cu): cuDNN refusing
 * the graph, failing a call, or the memory it needs missing is never an error. The backward needs the forward's output (out) for rowsum(dO * O), and dsum: B L floats of
 * workspace; gq, gk, gv may be NULL. Plans are cached per problem; _release frees them (their
 * descriptors name the cuDNN handle, which tcu_cudnn_release destroys after calling it). */
#define TCU_DECLINED 1
int tcu_cudnn_sdpa_forward(tc_tensor *out, tc_tensor *lse, tc_dtype dt, const attn &a, const char **reason);
int tcu_cudnn_sdpa_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_dtype dt, const attn &a,
                            const tc_tensor *out, const tc_tensor *lse, float *dsum, const char **reason);

#endif
