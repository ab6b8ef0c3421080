/* autograd.c: the define-by-run tape. Each differentiable op's output carries a node
 * (grad_fn) with edges to its inputs' nodes or to leaf tensors; backward walks nodes in
 * reverse creation order, which is a reverse topological order, accumulating gradients. */
#include "internal.h"

#include <stdio.h>

static _Thread_local bool grad_disabled;
static uint64_t node_seq;

bool tc_grad_enabled(void) { return !grad_disabled; }

bool tc_set_grad_enabled(bool on) {
    bool prev = !grad_disabled;
    grad_disabled = !on;
    return prev;
}

int tc_requires_grad_(tc_tensor *t, bool on) {
    if (t->grad_fn && !on)
        return tc_error("requires_grad_: cannot turn off requires_grad on a non-leaf tensor; use detach()");
    if (on && !tc_dtype_is_float(t->dtype))
        return tc_error("requires_grad_: only floating point tensors can require gradients (got %s)",
                        tc_dtype_name(t->dtype));
    t->requires_grad = on;
    return TC_OK;
}

/* ---- nodes ------------------------------------------------------------------------ */
tc_node *tc_node_new(tc_op op, int nin, tc_tensor **ins, tc_backward_fn fn) {
    if (grad_disabled) return NULL;
    bool any = false;
    for (int i = 0; i < nin; i++)
        if (ins[i] && ins[i]->requires_grad) any = true;
    if (!any) return NULL;
    tc_node *n = calloc(1, sizeof *n);
    tc_edge *e = calloc((size_t)nin, sizeof *e);
    if (!n || !e) {
        free(n);
        free(e);
        return NULL; /* out of memory: the op proceeds without history */
    }
    n->refcount = 1;
    n->op = op;
    n->seq = ++node_seq;
    n->backward = fn;
    n->nin = nin;
    n->next = e;
    for (int i = 0; i < nin; i++) {
        tc_tensor *x = ins[i];
        if (!x || !x->requires_grad) continue;
        if (x->grad_fn) { e[i].node = x->grad_fn; tc_node_retain(x->grad_fn); }
        else e[i].leaf = tc_tensor_retain(x);
        e[i].ndim = x->ndim;
        memcpy(e[i].shape, x->shape, sizeof x->shape);
        e[i].dtype = x->dtype;
    }
    return n;
}

void tc_node_save(tc_node *n, tc_tensor *t) {
    int k = n->nsaved++;
    if (!t) return;
    n->saved[k] = tc_alias(t);
    n->saved_version[k] = t->storage->version;
}

tc_tensor *tc_saved(tc_node *n, int k) { return n->saved[k]; }

void tc_node_retain(tc_node *n) { __atomic_add_fetch(&n->refcount, 1, __ATOMIC_RELAXED); }

static void node_free_state(tc_node *n) {
    for (int i = 0; i < n->nsaved; i++) {
        tc_tensor_release(n->saved[i]);
        n->saved[i] = NULL;
    }
    for (int i = 0; i < n->nin; i++) {
        tc_node *child = n->next[i].node;
        n->next[i].node = NULL;
        tc_node_release(child);
        tc_tensor_release(n->next[i].leaf);
        n->next[i].leaf = NULL;
    }
    if (n->free_ctx) n->free_ctx(n->ctx);
    n->free_ctx = NULL;
    n->ctx = NULL;
    n->released = true;
}

/* Releasing a long chain recursively could overflow the C stack (a 100,000-op graph), so
 * nodes whose count drops to zero are freed from an explicit work list. */
void tc_node_release(tc_node *n) {
    if (!n || __atomic_sub_fetch(&n->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    size_t cap = 16, len = 0;
    tc_node **stack = malloc(cap * sizeof *stack);
    tc_node *cur = n;
    for (;;) {
        for (int i = 0; i < cur->nin; i++) {
            tc_node *c = cur->next[i].node;
            if (c && __atomic_sub_fetch(&c->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
                if (len == cap) {
                    tc_node **s2 = stack ? realloc(stack, 2 * cap * sizeof *stack) : NULL;
                    if (s2) { stack = s2; cap *= 2; }
                }
                if (stack && len < cap) stack[len++] = c;
            }
            cur->next[i].node = NULL;
        }
        node_free_state(cur);
        tc_tensor_release(cur->pending);
        free(cur->next);
        free(cur);
        if (!len) break;
        cur = stack[--len];
    }
    free(stack);
}

tc_tensor *tc_attach(tc_tensor *out, tc_node *n) {
    if (!n) return out;
    tc_node_release(out->grad_fn);
    out->grad_fn = n;
    out->requires_grad = true;
    return out;
}

/* "mul" -> "MulBackward", "log_softmax" -> "LogSoftmaxBackward", "CustomFunction" -> "CustomFunctionBackward" */
const char *tc_grad_fn_name(const tc_tensor *t) {
    static _Thread_local char buf[64];
    if (!t->grad_fn) return NULL;
    size_t j = 0;
    bool up = true;
    for (const char *s = tc_op_name(t->grad_fn->op); *s && j < sizeof buf - 10; s++) {
        if (*s == '_') { up = true; continue; }
        buf[j++] = up && *s >= 'a' && *s <= 'z' ? (char)(*s - 32) : *s;
        up = false;
    }
    snprintf(buf + j, sizeof buf - j, "Backward");
    return buf;
}

/* ---- helpers ops use ------------------------------------------------------------- */
tc_tensor *tc_sum_to(tc_tensor *g, int ndim, const int64_t *shape) {
    int lead = g->ndim - ndim;
    bool fits = lead >= 0;
    int dims[TC_MAX_DIMS], nd = 0;
    for (int i = 0; i < g->ndim && fits; i++) {
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) dims[nd++] = i;
        else fits = g->shape[i] == shape[i - lead];
    }
    if (!fits) {
        char a[128], b[128];
        tc_shape_str(g->ndim, g->shape, a, sizeof a);
        tc_shape_str(ndim, shape, b, sizeof b);
        tc_error("a gradient of shape %s does not fit a tensor of shape %s", a, b);
        return NULL;
    }
    if (nd == 0) return tc_tensor_retain(g);
    tc_tensor *s = tc_reduce(TC_OP_SUM, g, nd, dims, true);
    if (!s || lead == 0) return s;
    tc_tensor *v = tc_view(s, ndim, shape);
    tc_tensor_release(s);
    return v;
}

int tc_check_inplace(tc_tensor *t, const char *op) {
    if (!grad_disabled && t->requires_grad && !t->grad_fn)
        return tc_error("%s: a leaf tensor that requires grad is used in an in-place operation "
                        "(wrap the update in T.no_grad)", op);
    for (int i = 0; i < t->ndim && tc_numel(t) > 0; i++) /* an empty tensor shares nothing */
        if (t->stride[i] == 0 && t->shape[i] > 1)
            return tc_error("%s: the destination is an expanded tensor (several of its elements share one "
                            "memory location); clone() it first", op);
    t->storage->version++;
    return TC_OK;
}

/* ---- custom functions ----------------------------------------------------------------- */
typedef struct { tc_custom_backward fn; void *ctx; void (*free_ctx)(void *); } custom_ctx;

static int custom_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    custom_ctx *c = n->ctx;
    return c->fn(c->ctx, gy, n->nin, gx);
}

static void custom_free(void *p) {
    custom_ctx *c = p;
    if (c->free_ctx) c->free_ctx(c->ctx);
    free(c);
}

tc_tensor *tc_custom_attach(tc_tensor *out, int nin, tc_tensor **ins, tc_custom_backward fn,
                            void *ctx, void (*free_ctx)(void *)) {
    tc_tensor *r = tc_alias(out);
    if (!r) return NULL;
    tc_node *n = tc_node_new(TC_OP_CUSTOM, nin, ins, custom_backward);
    custom_ctx *c = n ? malloc(sizeof *c) : NULL;
    if (!c) {
        tc_node_release(n);
        if (free_ctx) free_ctx(ctx);
        return r; /* nothing requires grad: a plain result */
    }
    c->fn = fn;
    c->ctx = ctx;
    c->free_ctx = free_ctx;
    n->ctx = c;
    n->free_ctx = custom_free;
    return tc_attach(r, n);
}

/* ---- the engine ---------------------------------------------------------------------- */
typedef struct { tc_node **v; size_t len, cap; } node_list;

static int list_push(node_list *l, tc_node *n) {
    if (l->len == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        tc_node **v = realloc(l->v, cap * sizeof *v);
        if (!v) return tc_error("backward: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->len++] = n;
    return TC_OK;
}

static int by_seq_desc(const void *a, const void *b) {
    uint64_t x = (*(tc_node *const *)a)->seq, y = (*(tc_node *const *)b)->seq;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* every node reachable from the roots, each once, in reverse creation order */
static int collect(int nroots, tc_node **roots, node_list *out) {
    node_list stack = {0};
    int rc = TC_OK;
    for (int r = 0; r < nroots && rc == TC_OK; r++)
        if (roots[r] && roots[r]->seq) {
            roots[r]->seq |= 1ull << 63; /* mark visited; cleared below */
            rc = list_push(&stack, roots[r]);
        }
    while (rc == TC_OK && stack.len) {
        tc_node *n = stack.v[--stack.len];
        tc_node_retain(n);
        if ((rc = list_push(out, n)) != TC_OK) { tc_node_release(n); break; }
        for (int i = 0; i < n->nin; i++) {
            tc_node *c = n->next[i].node;
            if (c && !(c->seq >> 63)) {
                c->seq |= 1ull << 63;
                if ((rc = list_push(&stack, c)) != TC_OK) break;
            }
        }
    }
    free(stack.v);
    for (size_t i = 0; i < out->len; i++) out->v[i]->seq &= ~(1ull << 63);
    if (out->len > 1) qsort(out->v, out->len, sizeof *out->v, by_seq_desc); /* v is NULL when empty */
    return rc;
}

/* the sum goes into the pending gradient itself when nothing else can see it (a new
 * tensor per residual and skip connection would cost an allocation and its page faults) */
static int accumulate(tc_tensor **slot, tc_tensor *g) {
    if (!*slot) { *slot = tc_tensor_retain(g); return TC_OK; }
    tc_tensor *t = *slot;
    if (t->refcount == 1 && t->storage->refcount == 1 && !t->storage->release && tc_is_contiguous(t) &&
        tc_same_shape(t, g) && t->dtype == g->dtype)
        return tc_binary_(TC_OP_ADD, t, g);
    tc_tensor *s = tc_binary(TC_OP_ADD, *slot, g);
    if (!s) return TC_ERR;
    tc_tensor_release(*slot);
    *slot = s;
    return TC_OK;
}

/* A leaf's .grad is the user's to update in place (optimizers do), so it never shares
 * memory with a gradient that the graph or the caller still holds: the first gradient is
 * kept only when nothing else refers to it, later ones are added into it in place. */
static int accumulate_grad(tc_tensor *leaf, tc_tensor *g) {
    if (leaf->grad) return tc_binary_(TC_OP_ADD, leaf->grad, g);
    /* the gradient takes the leaf's memory format, as PyTorch's layout contract for .grad */
    tc_memory_format f = tc_suggest_format(leaf);
    bool dense = tc_is_contiguous_format(g, f);
    bool owned = g->refcount == 1 && g->storage->refcount == 1 && dense;
    leaf->grad = owned ? tc_tensor_retain(g) : dense ? tc_clone(g) : tc_contiguous_format(g, f);
    return leaf->grad ? TC_OK : TC_ERR;
}

static int check_versions(tc_node *n) {
    for (int k = 0; k < n->nsaved; k++) {
        tc_tensor *s = n->saved[k];
        if (s && s->storage->version != n->saved_version[k])
            return tc_error("backward: a tensor saved by %s was modified by an in-place operation "
                            "after it was used (version %u, expected %u); use an out-of-place op or clone() it",
                            tc_op_name(n->op), s->storage->version, n->saved_version[k]);
    }
    return TC_OK;
}

/* Runs the graph from the roots. With capture (autograd.grad), gradients reaching the
 * capture tensors are stored in result instead of .grad, and no .grad is touched. */
static int run_backward(int nroots, tc_tensor **roots, tc_tensor **grads, bool retain,
                        int ncap, tc_tensor **cap, tc_tensor **result) {
    node_list order = {0};
    tc_node *rn[64];
    if (nroots > 64) return tc_error("backward: at most 64 outputs at once");
    for (int r = 0; r < nroots; r++) rn[r] = roots[r]->grad_fn;
    bool prev = tc_set_grad_enabled(false);
    bool amp = tc_autocast_enabled(); /* backward ops follow the dtypes their forward saw */
    tc_dtype amp_dt = tc_autocast_dtype();
    tc_set_autocast(false, amp_dt);
    int rc = collect(nroots, rn, &order);
    for (int r = 0; r < nroots && rc == TC_OK; r++) {
        if (!rn[r]) { /* a leaf root */
            if (cap) {
                for (int c = 0; c < ncap; c++)
                    if (cap[c] == roots[r]) rc = accumulate(&result[c], grads[r]);
            } else rc = accumulate_grad(roots[r], grads[r]);
        } else rc = accumulate(&rn[r]->pending, grads[r]);
    }
    for (size_t k = 0; k < order.len && rc == TC_OK; k++) {
        tc_node *n = order.v[k];
        tc_tensor *gy = n->pending;
        n->pending = NULL;
        if (!gy) continue;
        if (cap)
            for (int c = 0; c < ncap; c++)
                if (cap[c]->grad_fn == n && (rc = accumulate(&result[c], gy)) != TC_OK) break;
        if (rc == TC_OK && n->released)
            rc = tc_error("backward: trying to run backward through the graph a second time "
                          "(its saved tensors were freed; pass retain_graph = true the first time)");
        if (rc == TC_OK) rc = check_versions(n);
        tc_tensor *gx_small[8] = {0}, **gx = n->nin <= 8 ? gx_small : calloc((size_t)n->nin, sizeof *gx);
        if (rc == TC_OK && !gx) rc = tc_error("backward: out of memory");
        if (rc == TC_OK && n->backward(n, gy, gx) != TC_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", tc_last_error());
            rc = tc_error("backward of %s: %s", tc_op_name(n->op), msg);
        }
        for (int i = 0; gx && i < n->nin; i++) {
            tc_edge *e = &n->next[i];
            tc_tensor *g = gx[i];
            if (!g || rc != TC_OK || !(e->node || e->leaf)) { tc_tensor_release(g); continue; }
            tc_tensor *g2 = tc_sum_to(g, e->ndim, e->shape);
            tc_tensor_release(g);
            if (g2 && g2->dtype != e->dtype) {
                tc_tensor *g3 = tc_to(g2, e->dtype, g2->storage->device);
                tc_tensor_release(g2);
                g2 = g3;
            }
            if (!g2) { rc = TC_ERR; continue; }
            if (e->node) rc = accumulate(&e->node->pending, g2);
            else if (cap) {
                for (int c = 0; c < ncap && rc == TC_OK; c++)
                    if (cap[c] == e->leaf) rc = accumulate(&result[c], g2);
            } else rc = accumulate_grad(e->leaf, g2);
            tc_tensor_release(g2);
        }
        if (gx != gx_small) free(gx);
        tc_tensor_release(gy);
        if (!retain && rc == TC_OK) node_free_state(n);
    }
    for (size_t k = 0; k < order.len; k++) {
        tc_tensor_release(order.v[k]->pending);
        order.v[k]->pending = NULL;
        tc_node_release(order.v[k]);
    }
    free(order.v);
    tc_set_grad_enabled(prev);
    tc_set_autocast(amp, amp_dt);
    return rc;
}

/* the gradient that seeds a root: the one given (of the root's shape; converted to its
 * dtype and device), or an implicit 1 for a one-element root */
static tc_tensor *seed_grad(tc_tensor *root, tc_tensor *grad, const char *op) {
    char a[128], b[128];
    if (!grad) {
        if (tc_numel(root) == 1) return tc_full(root->ndim, root->shape, 1, root->dtype, root->storage->device);
        tc_shape_str(root->ndim, root->shape, a, sizeof a);
        tc_error("%s: grad can be implicitly created only for one-element outputs (shape %s); pass a gradient",
                 op, a);
        return NULL;
    }
    if (!tc_same_shape(grad, root)) {
        tc_shape_str(grad->ndim, grad->shape, a, sizeof a);
        tc_shape_str(root->ndim, root->shape, b, sizeof b);
        tc_error("%s: a gradient of shape %s was given for an output of shape %s", op, a, b);
        return NULL;
    }
    return tc_to(grad, root->dtype, root->storage->device);
}

int tc_backward(tc_tensor *root, tc_tensor *grad, bool retain_graph) {
    if (!root->requires_grad)
        return tc_error("backward: the tensor does not require grad and has no grad_fn");
    tc_tensor *g = seed_grad(root, grad, "backward");
    if (!g) return TC_ERR;
    int rc = run_backward(1, &root, &g, retain_graph, 0, NULL, NULL);
    tc_tensor_release(g);
    return rc;
}

int tc_autograd_grad(int nout, tc_tensor **outs, tc_tensor **grad_outs, int nin, tc_tensor **ins,
                     tc_tensor **result, bool retain_graph, bool allow_unused) {
    tc_tensor *gs[64];
    if (nout > 64) return tc_error("autograd.grad: at most 64 outputs");
    for (int i = 0; i < nin; i++) {
        result[i] = NULL;
        if (!ins[i]->requires_grad) return tc_error("autograd.grad: input %d does not require grad", i + 1);
    }
    int rc = TC_OK;
    for (int i = 0; i < nout; i++) {
        gs[i] = NULL;
        if (rc != TC_OK) continue;
        if (!outs[i]->requires_grad) rc = tc_error("autograd.grad: output %d does not require grad", i + 1);
        else if (!(gs[i] = seed_grad(outs[i], grad_outs ? grad_outs[i] : NULL, "autograd.grad"))) rc = TC_ERR;
    }
    if (rc == TC_OK) rc = run_backward(nout, outs, gs, retain_graph, nin, ins, result);
    for (int i = 0; i < nout; i++) tc_tensor_release(gs[i]);
    for (int i = 0; i < nin && rc == TC_OK; i++)
        if (!result[i] && !allow_unused)
            rc = tc_error("autograd.grad: input %d was not used in the graph (pass allow_unused = true)", i + 1);
    if (rc != TC_OK)
        for (int i = 0; i < nin; i++) { tc_tensor_release(result[i]); result[i] = NULL; }
    return rc;
}
