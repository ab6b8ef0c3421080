/* internal.h: what core/ files share and no one else sees: the autograd node, the
 * helpers every op uses to record itself on the tape, and (kernels.h) the device kernel
 * table. Ops in core/ops/ validate and shape, record autograd, then call tc_kern(dev)->... */
#ifndef TOCHA_INTERNAL_H
#define TOCHA_INTERNAL_H

#include "kernels.h"
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
/* elements of a shape of non-negative sizes, or -1 when the sizes multiply past int64;
 * zeros count as 1 there, since strides are products of the other sizes */
int64_t tc_checked_numel(int ndim, const int64_t *shape);

/* an element of dtype dt at p, through double (tc_store converts as a C cast, but total:
 * NaN gives 0 and integers saturate, u8 wrapping modulo 256) */
double tc_load(const void *p, tc_dtype dt);
void tc_store(void *p, tc_dtype dt, double v);

#ifdef __cplusplus
}
#endif

#endif
