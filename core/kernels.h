/* kernels.h: the device kernel table, each kernel declared once. TC_KERNELS(X) lists every
 * kernel as X(return type, name, (arguments)) with its contract; from it come the fields of
 * tc_kernels, the prototypes of each backend's kernels (tc_cpu_<name> in core/cpu/cpu.h,
 * tc_cuda_<name> in kernels/cuda.h) and both tables (core/cpu/cpu.c, kernels/table.c).
 * Adding a kernel: one line here, one function per backend. Ops in core/ops/ validate and
 * shape, record autograd, then call tc_kern(dev)->name(...); tc_kern is core/device.c. */
#ifndef TOCHA_KERNELS_H
#define TOCHA_KERNELS_H

#include "tocha.h"

#ifdef __cplusplus
extern "C" { /* the kernel files are C++ */
#endif

/* attention's scalar arguments: dropout on the probabilities uses the rule of the dropout
 * kernel over the [B.., L, S] probabilities, from (seed, offset) */
typedef struct {
    double scale, dropout_p;
    bool causal; /* top-left aligned: row l attends to columns s <= l */
    uint64_t seed, offset;
    const tc_tensor *out; /* backward: the forward's output where kept (CUDA f16/bf16), else NULL */
} tc_sdpa_params;

/* A kernel computes; it never allocates autograd state and never sees Lua. Unless a contract
 * says otherwise, outputs are contiguous and inputs may be any strided view of the output's
 * shape (broadcast inputs have stride 0). Kernels return TC_OK, or TC_ERR with tc_error set. */
#define TC_KERNELS(X)                                                                              \
    /* ---- storage: a block of nbytes on the device (NULL with an error set when out of         \
     * memory), and its release */                                                                 \
    X(void *, alloc, (size_t nbytes))                                                              \
    X(void, free, (void *p))                                                                       \
                                                                                                   \
    /* ---- elementwise. copy: dst any strides, dtypes may differ, and on the CUDA device either   \
     * side may be in host memory; fill: dst any strides. unary and unary_backward: the ops of    \
     * core/unary.h, forward out = f(x) and gx = gy f'(x) given x and y = f(x) (either may be    \
     * NULL where f' needs only the other) */                                                     \
    X(int, copy, (tc_tensor *dst, const tc_tensor *src))                                           \
    X(int, fill, (tc_tensor *dst, double v))                                                       \
    X(int, unary, (tc_tensor *out, const tc_tensor *x, tc_op op, double a, double b))              \
    X(int, unary_backward, (tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x,                \
                            const tc_tensor *y, tc_op op, double a, double b))                     \
    X(int, binary, (tc_tensor *out, const tc_tensor *a, const tc_tensor *b, tc_op op))             \
    X(int, where, (tc_tensor *out, const tc_tensor *c, const tc_tensor *a, const tc_tensor *b))    \
                                                                                                   \
    /* ---- reductions: x's last nred dims are reduced; out has x's leading dims. arg_reduce:     \
     * along x's last dim, values (x's dtype) and 1-based i64 indices, either may be NULL.        \
     * pow_sum: the sum of |x|^p over x (p = INFINITY: max |x|), in double */                      \
    X(int, reduce, (tc_tensor *out, const tc_tensor *x, tc_op op, int nred))                       \
    X(int, arg_reduce, (tc_tensor *values, tc_tensor *indices, const tc_tensor *x, tc_op op))      \
    X(int, pow_sum, (const tc_tensor *x, double p, double *out))                                   \
                                                                                                   \
    /* ---- c[b] = alpha * a[b] @ b[b] + beta * c[b]; a [B, M, K], b [B, K, N], c [B, M, N]       \
     * contiguous; a and b: each inner matrix has a unit stride in one of its dims */             \
    X(int, gemm, (tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta)) \
                                                                                                   \
    /* ---- random: t contiguous; element i takes lane i % 4 of Philox counter offset + i / 4.    \
     * dropout: y = x * keep / (1 - p), element i (row-major) kept when that lane, as a uniform   \
     * in (0, 1), is >= p; the same call with gy gives gx */                                      \
    X(int, fill_uniform, (tc_tensor *t, uint64_t seed, uint64_t offset, double lo, double hi))     \
    X(int, fill_normal, (tc_tensor *t, uint64_t seed, uint64_t offset, double mean, double std))   \
    X(int, dropout, (tc_tensor *y, const tc_tensor *x, double p, uint64_t seed, uint64_t offset))  \
                                                                                                   \
    /* ---- indexing: index values are 1-based, i64 or i32; a kernel checks them all before      \
     * writing and fails naming one out of range. index_add and scatter_add add into out */       \
    X(int, index_select, (tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx))      \
    X(int, index_add, (tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src))       \
    X(int, gather, (tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx))            \
    X(int, scatter_add, (tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src))     \
                                                                                                   \
    /* ---- convolution, pooling, resampling, padding: NCHW, contiguous tensors (pad's constant   \
     * mode: any strides). conv2d: y [N, O, OH, OW] = x [N, C, H, W] * w [O, C / groups, kh, kw]   \
     * + b (may be NULL); conv2d_backward: gx, gw, gb each NULL when not wanted (gx needs w, gw    \
     * needs x), sizes taken from the tensors given (conv_transpose2d's forward is its gx path).  \
     * max_pool2d's argmax: i64, 1-based offsets within each H x W plane. pads: a (before, after) \
     * pair for every dim, from the last dim back. Gradient outputs are overwritten, not added. */ \
    X(int, conv2d, (tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,      \
                    const tc_conv_params *p))                                                      \
    X(int, conv2d_backward, (tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,     \
                             const tc_tensor *x, const tc_tensor *w, const tc_conv_params *p))     \
    X(int, avg_pool2d, (tc_tensor *y, const tc_tensor *x, const tc_pool_params *p))                \
    X(int, avg_pool2d_backward, (tc_tensor *gx, const tc_tensor *gy, const tc_pool_params *p))     \
    X(int, max_pool2d, (tc_tensor *y, tc_tensor *argmax, const tc_tensor *x, const tc_pool_params *p)) \
    X(int, max_pool2d_backward, (tc_tensor *gx, const tc_tensor *gy, const tc_tensor *argmax))     \
    X(int, interpolate, (tc_tensor *y, const tc_tensor *x, tc_interp_mode mode, bool align_corners)) \
    X(int, interpolate_backward, (tc_tensor *gx, const tc_tensor *gy, tc_interp_mode mode,         \
                                  bool align_corners))                                             \
    X(int, pad, (tc_tensor *y, const tc_tensor *x, const int64_t *pads, tc_pad_mode mode, double value)) \
    X(int, pad_backward, (tc_tensor *gx, const tc_tensor *gy, const int64_t *pads, tc_pad_mode mode)) \
                                                                                                   \
    /* ---- softmax, losses, norms, attention. Inputs may be strided views of any float dtype     \
     * (w, b, weight may differ from x's); outputs are contiguous. Statistics (mean, rstd, lse)  \
     * are f64 for f64 inputs, else f32. Gradient outputs passed as NULL are not needed. */       \
    X(int, softmax, (tc_tensor *y, const tc_tensor *x, int dim, bool log)) /* along dim */         \
    X(int, softmax_backward, (tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool log)) \
    /* logits [N, C, D]; target [N, D] integer 1-based classes or [N, C, D] probabilities;        \
     * weight [C] or NULL; loss [N, D]: each sample's loss; tw [N, D]: its weight in a mean       \
     * (the target class's weight, 0 where ignored; 1 for probability targets). The backward:    \
     * glogits [N, C, D], gtarget [N, C, D] (probability targets) from gloss [N, D] * scale */    \
    X(int, cross_entropy, (tc_tensor *loss, tc_tensor *tw, const tc_tensor *logits,                \
                           const tc_tensor *target, const tc_tensor *weight, int64_t ignore_index, \
                           double smoothing))                                                      \
    X(int, cross_entropy_backward, (tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, \
                                    double scale, const tc_tensor *logits, const tc_tensor *target, \
                                    const tc_tensor *weight, int64_t ignore_index, double smoothing)) \
    /* x [M, N] normalised along rows; mean, rstd [M]; w, b [N] or NULL */                        \
    X(int, layer_norm, (tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,        \
                        const tc_tensor *w, const tc_tensor *b, double eps))                       \
    X(int, layer_norm_backward, (tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, \
                                 const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd, \
                                 const tc_tensor *w))                                              \
    /* x [N, C, HW]; mean, rstd [N, groups]; w, b [C] or NULL. silu: y = silu(the normalised   \
     * x) in the pass that writes y, and the backward recomputes the normalised x from x, the    \
     * statistics, w and b (read by the backward only then) */                                  \
    X(int, group_norm, (tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,        \
                        const tc_tensor *w, const tc_tensor *b, int groups, double eps, bool silu)) \
    X(int, group_norm_backward, (tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, \
                                 const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd, \
                                 const tc_tensor *w, const tc_tensor *b, int groups, bool silu))   \
    /* bias and activation: x [M, K] and y, gy, gx contiguous, b [K] contiguous or NULL, one    \
     * dtype; act a differentiable op of core/unary.h without scalar arguments. glu false:     \
     * y [M, K] = act(x + b); glu true: K = 2C, y [M, C] = (x[:, :C] + b[:C]) act(x[:, C:] +      \
     * b[C:]). The backward gives gx [M, K] and gb [K] (NULL when not wanted) from gy, y's shape */ \
    X(int, bias_act, (tc_tensor *y, const tc_tensor *x, const tc_tensor *b, tc_op act, bool glu)) \
    X(int, bias_act_backward, (tc_tensor *gx, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x, \
                               const tc_tensor *b, tc_op act, bool glu))                           \
    /* attention, one batch slice at a time. q [B.., L, E], k [B.., S, E], v [B.., S, Ev] and     \
     * mask [B.., L, S] (bool: true attends; float: added; or NULL) share the batch dims B..      \
     * (stride 0 where broadcast); each inner matrix has a unit stride in one of its dims.        \
     * out [B.., L, Ev], lse [B.., L] (the rows' logsumexp; -inf where fully masked). The        \
     * backward: gq, gk, gv, gmask shaped like q, k, v, mask with the full batch dims; gout as out */ \
    X(int, sdpa, (tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k,          \
                  const tc_tensor *v, const tc_tensor *mask, const tc_sdpa_params *p))             \
    X(int, sdpa_backward, (tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask,          \
                           const tc_tensor *gout, const tc_tensor *q, const tc_tensor *k,          \
                           const tc_tensor *v, const tc_tensor *mask, const tc_tensor *lse,        \
                           const tc_sdpa_params *p))                                               \
                                                                                                   \
    /* ---- optimizers: every tensor contiguous, one float dtype; g never written */               \
    X(int, sgd_step, (tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o))     \
    X(int, adam_step, (tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v,               \
                       tc_tensor *vmax, const tc_adam_opts *o))                                    \
    X(int, ema_update, (tc_tensor *shadow, const tc_tensor *p, double decay))                      \
    /* the same over n tensors, one dtype (CUDA: many tensors per launch). vmax, buf: NULL       \
     * arrays without amsgrad / momentum; steps[i] is tensor i's step (o->step is ignored);       \
     * first[i]: tensor i's momentum buffer starts on this step */                               \
    X(int, sgd_multi, (int n, tc_tensor *const *p, const tc_tensor *const *g, tc_tensor *const *buf, \
                       const bool *first, const tc_sgd_opts *o))                                   \
    X(int, adam_multi, (int n, tc_tensor *const *p, const tc_tensor *const *g, tc_tensor *const *m, \
                        tc_tensor *const *v, tc_tensor *const *vmax, const int64_t *steps,         \
                        const tc_adam_opts *o))                                                    \
    X(int, ema_multi, (int n, tc_tensor *const *shadow, const tc_tensor *const *p, double decay))

#define TC_KERNEL_FIELD_(ret, name, args) ret(*name) args;
typedef struct tc_kernels { TC_KERNELS(TC_KERNEL_FIELD_) } tc_kernels;
#undef TC_KERNEL_FIELD_

/* each backend's kernels are named tc_<backend>_<name>: a backend header declares them all
 * with TC_KERNELS(TC_KERNEL_CPU) or TC_KERNELS(TC_KERNEL_CUDA), and its table fills every
 * field with TC_KERNELS(TC_KERNEL_CPU_ENTRY) or TC_KERNELS(TC_KERNEL_CUDA_ENTRY) */
#define TC_KERNEL_CPU(ret, name, args) ret tc_cpu_##name args;
#define TC_KERNEL_CUDA(ret, name, args) ret tc_cuda_##name args;
#define TC_KERNEL_CPU_ENTRY(ret, name, args) .name = tc_cpu_##name,
#define TC_KERNEL_CUDA_ENTRY(ret, name, args) .name = tc_cuda_##name,

extern const tc_kernels tc_cpu_kernels;  /* core/cpu/cpu.c */
extern const tc_kernels tc_cuda_kernels; /* kernels/table.c, when built with CUDA */

/* the table of a device (core/device.c): NULL, with an error set, if the device is not
 * built in or not present */
const tc_kernels *tc_kern(tc_device dev);

#ifdef __cplusplus
}
#endif

#endif
