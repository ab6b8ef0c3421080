/* dropout.c: inverted dropout from the Philox stream. Nothing is saved: the backward
 * regenerates the mask from the (seed, offset) the forward drew, with the same kernel,
 * so restoring the RNG state reproduces a forward exactly. */
#include "../internal.h"

/* i[0], i[1]: the seed and counter offset of the mask; d[0]: p */
static int dropout_backward(tc_node *n, tc_tensor *gy, tc_tensor **gx) {
    tc_tensor *g = tc_empty_like(gy, gy->dtype);
    if (!g) return TC_ERR;
    if (tc_kern(gy->storage->device)->dropout(g, gy, n->d[0], (uint64_t)n->i[0], (uint64_t)n->i[1]) != TC_OK) {
        tc_tensor_release(g);
        return TC_ERR;
    }
    gx[0] = g;
    return TC_OK;
}

tc_tensor *tc_dropout(tc_tensor *x, double p, bool training) {
    if (!(p >= 0 && p <= 1)) {
        tc_error("dropout: probability must be between 0 and 1 (got %g)", p);
        return NULL;
    }
    if (!tc_dtype_is_float(x->dtype)) {
        tc_error("dropout: input must be a floating point tensor (got %s)", tc_dtype_name(x->dtype));
        return NULL;
    }
    if (!training || p == 0) return tc_tensor_retain(x);
    uint64_t seed, offset;
    tc_rng_get(&seed, &offset);
    offset = tc_rng_reserve(((uint64_t)tc_numel(x) + 3) / 4);
    tc_tensor *y = tc_empty_like(x, x->dtype);
    if (!y || tc_kern(x->storage->device)->dropout(y, x, p, seed, offset) != TC_OK) {
        tc_tensor_release(y);
        return NULL;
    }
    tc_node *n = tc_node_new(TC_OP_DROPOUT, 1, &x, dropout_backward);
    if (n) {
        n->i[0] = (int64_t)seed;
        n->i[1] = (int64_t)offset;
        n->d[0] = p;
    }
    return tc_attach(y, n);
}
