/* internal.h: what core/ files share and no one else sees: the autograd node, the
 * helpers every op uses to record itself on the tape, and the device kernel table.
 * Ops in core/ops/ validate and shape, record autograd, then call tc_kern(dev)->... */
#ifndef TOCHA_INTERNAL_H
#define TOCHA_INTERNAL_H

#include "tocha.h"

#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" { /* the kernel files are C++ */
#endif

/* ---- autograd nodes ------------------------------------------------------------ */
#define TC_MAX_SAVED 6

/* gy: gradient of the node's output; gx[i]: fill with a new reference (or leave NULL)
 * for each input i with tc_needs_grad(n, i). Gradients may have the broadcast shape:
 * the engine sums them down to the input's shape and casts to its dtype. */
typedef int (*tc_backward_fn)(tc_node *n, tc_tensor *gy, tc_tensor **gx);

typedef struct {
    tc_node *node;     /* input's grad_fn (non-leaf) */
    tc_tensor *leaf;   /* or the input itself, a leaf that requires grad */
    int ndim;
    int64_t shape[TC_MAX_DIMS];
    tc_dtype dtype;
} tc_edge;

struct tc_node {
    int refcount;
    tc_op op;
    uint64_t seq;              /* creation order: reverse seq order is a topological order */
    tc_backward_fn backward;
    int nin;
    tc_edge *next;             /* nin entries; node and leaf both NULL: no grad needed */
    int nsaved;
    tc_tensor *saved[TC_MAX_SAVED];   /* detached aliases */
    uint32_t saved_version[TC_MAX_SAVED];
    double d[6];               /* op parameters */
    int64_t i[2 * TC_MAX_DIMS];
    void *ctx;
    void (*free_ctx)(void *);
    bool released;             /* saved state freed by a backward without retain_graph */
    tc_tensor *pending;        /* gradient being accumulated during a backward pass */
};

/* A node for op over ins, or NULL when grad mode is off or no input requires grad
 * (then the op records nothing). ins may hold NULLs (optional inputs). */
tc_node *tc_node_new(tc_op op, int nin, tc_tensor **ins, tc_backward_fn fn);
static inline bool tc_needs_grad(const tc_node *n, int i) { return n->next[i].node || n->next[i].leaf; }
void tc_node_save(tc_node *n, tc_tensor *t);      /* t may be NULL; saved[k] stays NULL */
tc_tensor *tc_saved(tc_node *n, int k);           /* borrowed; NULL */
void tc_node_retain(tc_node *n);
void tc_node_release(tc_node *n);
/* makes out the output of n (consumes the reference to n); returns out */
tc_tensor *tc_attach(tc_tensor *out, tc_node *n);
/* sums g over broadcast dims down to the given shape (new reference) */
tc_tensor *tc_sum_to(tc_tensor *g, int ndim, const int64_t *shape);
/* checks that an in-place write to t is allowed under autograd, and bumps its version */
int tc_check_inplace(tc_tensor *t, const char *op);

/* ---- autocast (ops/autocast.c): an op under the scope calls tc_autocast_inputs on its
 * tensor arguments and runs on the results (new references, NULL kept), then releases them.
 * LOWER: f32 inputs go to the scope's f16 / bf16; UPPER: f16 / bf16 inputs go to f32. Off
 * the scope both keep every dtype. */
typedef enum { TC_CAST_LOWER, TC_CAST_UPPER } tc_cast_kind;
int tc_autocast_inputs(tc_cast_kind kind, int n, tc_tensor *const *in, tc_tensor **out);
void tc_autocast_release(int n, tc_tensor **t);

/* an alias of x sharing its storage with no autograd history */
tc_tensor *tc_alias(tc_tensor *x);
bool tc_same_shape(const tc_tensor *a, const tc_tensor *b);
int tc_check_same_device(const char *op, tc_tensor *a, tc_tensor *b);
/* a tensor shaped like x (contiguous, same device), of dtype dt */
tc_tensor *tc_empty_like(const tc_tensor *x, tc_dtype dt);

/* ---- device kernels ----------------------------------------------------------------
 * A kernel computes; it never allocates autograd state and never sees Lua. Unless a
 * signature says otherwise, outputs are contiguous and inputs may be any strided view
 * of the output's shape (broadcast inputs have stride 0). */
/* attention's scalar arguments (kern_norm): dropout on the probabilities uses the rule of
 * kernels->dropout over the [B.., L, S] probabilities, from (seed, offset) */
typedef struct {
    double scale, dropout_p;
    bool causal; /* top-left aligned: row l attends to columns s <= l */
    uint64_t seed, offset;
} tc_sdpa_params;

typedef struct tc_kernels {
    /* storage */
    void *(*alloc)(size_t nbytes);
    void (*free)(void *p);
    /* elementwise (kern_elem) */
    int (*copy)(tc_tensor *dst, const tc_tensor *src);          /* dst any strides, dtypes may differ */
    int (*fill)(tc_tensor *dst, double v);                      /* dst any strides */
    int (*unary)(tc_tensor *out, const tc_tensor *x, tc_op op, double a, double b);
    int (*unary_backward)(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x,
                          const tc_tensor *y, tc_op op, double a, double b);
    int (*binary)(tc_tensor *out, const tc_tensor *a, const tc_tensor *b, tc_op op);
    int (*where)(tc_tensor *out, const tc_tensor *c, const tc_tensor *a, const tc_tensor *b);
    /* reductions: x's last nred dims are reduced; out has x's leading dims */
    int (*reduce)(tc_tensor *out, const tc_tensor *x, tc_op op, int nred);
    /* along x's last dim: values (x's dtype) and 1-based i64 indices, either may be NULL */
    int (*arg_reduce)(tc_tensor *values, tc_tensor *indices, const tc_tensor *x, tc_op op);
    /* c[b] = alpha * a[b] @ b[b] + beta * c[b]; a [B, M, K], b [B, K, N], c [B, M, N]
     * contiguous; a and b: each inner matrix has a unit stride in one of its dims */
    int (*gemm)(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta);
    /* random: t contiguous; element i takes lane i % 4 of counter offset + i / 4 */
    int (*fill_uniform)(tc_tensor *t, uint64_t seed, uint64_t offset, double lo, double hi);
    int (*fill_normal)(tc_tensor *t, uint64_t seed, uint64_t offset, double mean, double std);

    /* indexing (kern_index): index values are 1-based, i64 or i32; a kernel checks them all
     * before writing and fails naming one out of range. index_add and scatter_add add into out */
    int (*index_select)(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx);
    int (*index_add)(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src);
    int (*gather)(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx);
    int (*scatter_add)(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src);

    /* neural-net ops (kern_nn): NCHW, contiguous tensors (pad's constant mode: any strides).
     * conv2d: y [N, O, OH, OW] = x [N, C, H, W] * w [O, C / groups, kh, kw] + b (may be NULL);
     * conv2d_backward: gx, gw, gb each NULL when not wanted (gx needs w, gw needs x), sizes
     * taken from the tensors given (conv_transpose2d's forward is its gx path). max_pool2d's
     * argmax: i64, 1-based offsets within each H x W plane. pads: a (before, after) pair for
     * every dim, from the last dim back. Gradient outputs are overwritten, not accumulated. */
    int (*conv2d)(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,
                  const tc_conv_params *p);
    int (*conv2d_backward)(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                           const tc_tensor *x, const tc_tensor *w, const tc_conv_params *p);
    int (*avg_pool2d)(tc_tensor *y, const tc_tensor *x, const tc_pool_params *p);
    int (*avg_pool2d_backward)(tc_tensor *gx, const tc_tensor *gy, const tc_pool_params *p);
    int (*max_pool2d)(tc_tensor *y, tc_tensor *argmax, const tc_tensor *x, const tc_pool_params *p);
    int (*max_pool2d_backward)(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *argmax);
    int (*interpolate)(tc_tensor *y, const tc_tensor *x, tc_interp_mode mode, bool align_corners);
    int (*interpolate_backward)(tc_tensor *gx, const tc_tensor *gy, tc_interp_mode mode, bool align_corners);
    int (*pad)(tc_tensor *y, const tc_tensor *x, const int64_t *pads, tc_pad_mode mode, double value);
    int (*pad_backward)(tc_tensor *gx, const tc_tensor *gy, const int64_t *pads, tc_pad_mode mode);

    /* norms, softmax, losses, dropout, attention (kern_norm). Inputs may be strided views
     * of any float dtype (w, b, weight may differ from x's); outputs are contiguous.
     * Statistics (mean, rstd, lse) are f64 for f64 inputs, else f32. Gradient outputs
     * passed as NULL are not needed. */
    int (*softmax)(tc_tensor *y, const tc_tensor *x, int dim, bool log);       /* along dim */
    int (*softmax_backward)(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool log);
    /* logits [N, C, D]; target [N, D] integer 1-based classes or [N, C, D] probabilities;
     * weight [C] or NULL; loss [N, D]: each sample's loss; tw [N, D]: its weight in a mean
     * (the target class's weight, 0 where ignored; 1 for probability targets) */
    int (*cross_entropy)(tc_tensor *loss, tc_tensor *tw, const tc_tensor *logits, const tc_tensor *target,
                         const tc_tensor *weight, int64_t ignore_index, double smoothing);
    /* glogits [N, C, D], gtarget [N, C, D] (probability targets) from gloss [N, D] * scale */
    int (*cross_entropy_backward)(tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, double scale,
                                  const tc_tensor *logits, const tc_tensor *target, const tc_tensor *weight,
                                  int64_t ignore_index, double smoothing);
    /* x [M, N] normalised along rows; mean, rstd [M]; w, b [N] or NULL */
    int (*layer_norm)(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                      const tc_tensor *w, const tc_tensor *b, double eps);
    int (*layer_norm_backward)(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                               const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                               const tc_tensor *w);
    /* x [N, C, HW]; mean, rstd [N, groups]; w, b [C] or NULL */
    int (*group_norm)(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                      const tc_tensor *w, const tc_tensor *b, int groups, double eps);
    int (*group_norm_backward)(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                               const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                               const tc_tensor *w, int groups);
    /* y = x * keep / (1 - p): element i (row-major) is kept when lane i % 4 of Philox counter
     * offset + i / 4, as a uniform in (0, 1), is >= p. The same call with gy gives gx. */
    int (*dropout)(tc_tensor *y, const tc_tensor *x, double p, uint64_t seed, uint64_t offset);
    /* attention, one batch slice at a time. q [B.., L, E], k [B.., S, E], v [B.., S, Ev] and
     * mask [B.., L, S] (bool: true attends; float: added; or NULL) share the batch dims B..
     * (stride 0 where broadcast); each inner matrix has a unit stride in one of its dims.
     * out [B.., L, Ev], lse [B.., L] (the rows' logsumexp; -inf where fully masked). */
    int (*sdpa)(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                const tc_tensor *mask, const tc_sdpa_params *p);
    /* gq, gk, gv, gmask shaped like q, k, v, mask with the full batch dims; gout as out */
    int (*sdpa_backward)(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *gout,
                         const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                         const tc_tensor *lse, const tc_sdpa_params *p);

    /* optimizers (kern_optim): every tensor contiguous, one float dtype; g never written */
    int (*sgd_step)(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o);
    int (*adam_step)(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                     const tc_adam_opts *o);
    int (*ema_update)(tc_tensor *shadow, const tc_tensor *p, double decay);
    /* sum of |x|^p over x (p = INFINITY: max |x|), in double */
    int (*pow_sum)(const tc_tensor *x, double p, double *out);
} tc_kernels;

const tc_kernels *tc_kern(tc_device dev); /* NULL (with an error set) if the device is not built in */
extern const tc_kernels tc_cpu_kernels;

#ifdef __cplusplus
}
#endif

#endif
