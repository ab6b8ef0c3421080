/* cudnn_attention.cu: scaled dot-product attention for f16 and bf16 through cuDNN's fused
 * attention engines, reached through its graph (backend) API: an operation graph of matmuls,
 * pointwise operations and reductions in the shape cuDNN's engines recognise as flash attention,
 * finalized into an execution plan per (direction, dtype, shapes, strides, mask, causal) and
 * cached with the reason when cuDNN refuses it. The forward graph:
 *
 *   S = Q K^T * scale (+ bias) (causal: row >= column kept, else the lowest float)
 *   m = rowmax S, e = exp(S - m), z = rowsum e, stats = m + log z, O = (e / z) V
 *
 * stats (each row's logsumexp, f32) is what the backward graph reads to recompute P:
 *
 *   Dsum = rowsum(dO * O), P = exp(S - stats), dV = P^T dO, dP = dO V^T,
 *   dS = P (dP - Dsum) * scale, dQ = dS K, dK = dS^T Q
 *
 * (P^T and dS^T are reshapes: the same elements seen through transposed strides.) A float mask
 * is the bias; bool masks, dropout and a wanted mask gradient are left to flash.cu. Whatever cuDNN
 * refuses (an engine that does not take the shape, a status at any step) is declined, never an
 * error: attention.cu then runs flash.cu and reports why. */
#include "attention.h"
#include "cudnn.h"

#include <float.h>
#include <stdio.h>

/* ---- descriptors built step by step, the first failure remembered --------------------------- */
#define GB_MAX 96
typedef struct {
    cudnnBackendDescriptor_t all[GB_MAX]; /* every descriptor made, destroyed with the plan */
    int n;
    cudnnBackendDescriptor_t ops[48];
    int nops;
    cudnnStatus_t st; /* the first failure (CUDNN_STATUS_SUCCESS: none) */
    const char *what; /* the call that failed */
    int64_t next_uid; /* virtual tensors' ids */
} builder;

static bool gb_ok(builder *g, cudnnStatus_t st, const char *what) {
    if (g->st == CUDNN_STATUS_SUCCESS && st != CUDNN_STATUS_SUCCESS) {
        g->st = st;
        g->what = what;
    }
    return g->st == CUDNN_STATUS_SUCCESS;
}

static cudnnBackendDescriptor_t gb_new(builder *g, cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t d = NULL;
    if (g->st != CUDNN_STATUS_SUCCESS) return NULL;
    if (g->n == GB_MAX) {
        gb_ok(g, CUDNN_STATUS_NOT_SUPPORTED, "cudnnBackendCreateDescriptor (too many descriptors)");
        return NULL;
    }
    if (!gb_ok(g, cudnnBackendCreateDescriptor(type, &d), "cudnnBackendCreateDescriptor")) return NULL;
    g->all[g->n++] = d;
    return d;
}

static void gb_set(builder *g, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                   cudnnBackendAttributeType_t type, int64_t count, const void *values) {
    if (g->st == CUDNN_STATUS_SUCCESS) gb_ok(g, cudnnBackendSetAttribute(d, name, type, count, values),
                                             "cudnnBackendSetAttribute");
}
static void gb_desc(builder *g, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                    cudnnBackendDescriptor_t v) {
    gb_set(g, d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
}
static void gb_fin(builder *g, cudnnBackendDescriptor_t d, const char *what) {
    if (g->st == CUDNN_STATUS_SUCCESS) gb_ok(g, cudnnBackendFinalize(d), what);
}

static void gb_release(builder *g) {
    for (int i = g->n - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(g->all[i]);
    g->n = 0;
}

/* a tensor [d0, d1, d2, d3] with the given strides; dtype dt; virtual or passed by value */
static cudnnBackendDescriptor_t gb_tensor(builder *g, int64_t uid, cudnnDataType_t dt, const int64_t dim[4],
                                          const int64_t str[4], bool virt, bool byval) {
    cudnnBackendDescriptor_t t = gb_new(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t align = 16;
    gb_set(g, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    gb_set(g, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim);
    gb_set(g, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str);
    gb_set(g, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    gb_set(g, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    gb_set(g, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
    if (byval) gb_set(g, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &byval);
    gb_fin(g, t, "cudnnBackendFinalize (tensor)");
    return t;
}

/* a virtual row-major [a, b, c, d] tensor of dtype dt (f32 unless said) */
static cudnnBackendDescriptor_t gb_virtual(builder *g, int64_t a, int64_t b, int64_t c, int64_t d,
                                           cudnnDataType_t dt = CUDNN_DATA_FLOAT) {
    int64_t dim[4] = {a, b, c, d}, str[4] = {b * c * d, c * d, d, 1};
    return gb_tensor(g, g->next_uid++, dt, dim, str, true, false);
}
/* the virtual transpose of a row-major [a, b, c, d] tensor: [a, b, d, c] over its memory */
static cudnnBackendDescriptor_t gb_virtual_t(builder *g, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t dim[4] = {a, b, d, c}, str[4] = {b * c * d, c * d, 1, d};
    return gb_tensor(g, g->next_uid++, CUDNN_DATA_FLOAT, dim, str, true, false);
}
/* a scalar f32 passed by value */
static cudnnBackendDescriptor_t gb_scalar(builder *g, int64_t uid) {
    int64_t one[4] = {1, 1, 1, 1};
    return gb_tensor(g, uid, CUDNN_DATA_FLOAT, one, one, false, true);
}

static void gb_op(builder *g, cudnnBackendDescriptor_t op, const char *what) {
    gb_fin(g, op, what);
    if (g->st != CUDNN_STATUS_SUCCESS) return;
    if (g->nops == (int)(sizeof g->ops / sizeof g->ops[0])) {
        gb_ok(g, CUDNN_STATUS_NOT_SUPPORTED, "operation graph (too many operations)");
        return;
    }
    g->ops[g->nops++] = op;
}

static void gb_matmul(builder *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                      cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm = gb_new(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    gb_set(g, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    gb_fin(g, mm, "cudnnBackendFinalize (matmul)");
    cudnnBackendDescriptor_t op = gb_new(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
    gb_op(g, op, "cudnnBackendFinalize (matmul operation)");
}

/* y = mode(x[, b[, t]]); axis: GEN_INDEX's (else ignored) */
static void gb_pw(builder *g, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                  cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = gb_new(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    /* the compute type: indices in int32, comparisons in bool, the rest in f32 */
    cudnnDataType_t prec = mode == CUDNN_POINTWISE_GEN_INDEX ? CUDNN_DATA_INT32
                           : mode == CUDNN_POINTWISE_CMP_GE  ? CUDNN_DATA_BOOLEAN
                                                             : CUDNN_DATA_FLOAT;
    gb_set(g, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    gb_set(g, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    if (axis >= 0) gb_set(g, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    gb_fin(g, pw, "cudnnBackendFinalize (pointwise)");
    cudnnBackendDescriptor_t op = gb_new(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (b) gb_desc(g, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    if (t) gb_desc(g, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
    gb_op(g, op, "cudnnBackendFinalize (pointwise operation)");
}

static void gb_reduce(builder *g, cudnnReduceTensorOp_t red, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd = gb_new(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    gb_set(g, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &red);
    gb_set(g, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    gb_fin(g, rd, "cudnnBackendFinalize (reduction)");
    cudnnBackendDescriptor_t op = gb_new(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd);
    gb_op(g, op, "cudnnBackendFinalize (reduction operation)");
}

static void gb_reshape(builder *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = gb_new(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x);
    gb_desc(g, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y);
    gb_op(g, op, "cudnnBackendFinalize (reshape operation)");
}

/* ---- the problem as cuDNN's [b, h, s, d] tensors ------------------------------------------- */
enum { U_Q = 1, U_KT, U_V, U_O, U_STATS, U_SCALE, U_BIAS, U_NEG, U_DO, U_DQ, U_DK, U_DV, U_DSUM, U_K, U_VT };

/* the plan's key: everything its descriptors hold */
typedef struct {
    int dir; /* 0 forward, 1 backward */
    int dt;
    bool causal, bias;
    int64_t b, h, L, S, E, Ev;
    int64_t q[3], k[3], v[3], o[3], go[3], gq[3], gk[3], gv[3]; /* strides: batch b, batch h, row */
    int64_t m[4], mdim[3];                                      /* the bias: strides, and its b, h, L dims */
    int mdt;
} sdpa_key;

/* an operand's [b, h] batch strides and row stride, from tocha's batch dims; a dim of size 1
 * gets the packed stride (cuDNN's strides are positive; tocha's may be anything there). A
 * broadcast dim of size > 1 keeps its stride 0: the caller declines those, or (a mask) makes
 * them dims of 1. */
static void strides_of(const attn &a, const operand &o, int64_t rows, int64_t cols, int64_t out[3]) {
    int64_t bsz = a.nb == 2 ? a.bshape[0] : 1, hsz = a.nb == 2 ? a.bshape[1] : a.nb == 1 ? a.bshape[0] : 1;
    out[2] = rows == 1 ? cols : o.rs;
    out[1] = hsz == 1 ? rows * cols : a.nb == 2 ? o.bs[1] : o.bs[0];
    out[0] = bsz == 1 ? hsz * rows * cols : o.bs[0];
}

/* a contiguous tensor's strides in the same form */
static void strides_of_tensor(const attn &a, const tc_tensor *t, int64_t out[3]) {
    operand o = operand_of(t, a.nb);
    strides_of(a, o, t->shape[a.nb], t->shape[a.nb + 1], out);
}

/* ---- plans ----------------------------------------------------------------------------------- */
typedef struct {
    sdpa_key key;
    builder g;
    cudnnBackendDescriptor_t plan; /* NULL: refused (reason says why) */
    int64_t workspace;
    char reason[200];
} sdpa_plan;

#define MAX_PLANS 64
static sdpa_plan *plans[MAX_PLANS];
static int nplans, next_evict;

extern "C" void tcu_cudnn_attention_release(void) {
    for (int i = 0; i < nplans; i++) {
        gb_release(&plans[i]->g);
        free(plans[i]);
        plans[i] = NULL;
    }
    nplans = next_evict = 0;
}

/* the scores both graphs start from: S = Q K^T * scale, plus the bias, with the causal mask
 * (row >= column kept, else the lowest float) */
static cudnnBackendDescriptor_t scores(builder *g, const sdpa_key *k, cudnnBackendDescriptor_t Q,
                                       cudnnBackendDescriptor_t Kt, cudnnBackendDescriptor_t scale) {
    int64_t b = k->b, h = k->h, L = k->L, S = k->S;
    cudnnBackendDescriptor_t s = gb_virtual(g, b, h, L, S), cur = gb_virtual(g, b, h, L, S);
    gb_matmul(g, Q, Kt, s);
    gb_pw(g, CUDNN_POINTWISE_MUL, s, scale, NULL, cur);
    if (k->bias) {
        int64_t md[4] = {k->mdim[0], k->mdim[1], k->mdim[2], S};
        cudnnDataType_t mdt = k->mdt == TC_F16 ? CUDNN_DATA_HALF : k->mdt == TC_BF16 ? CUDNN_DATA_BFLOAT16
                                                                                     : CUDNN_DATA_FLOAT;
        cudnnBackendDescriptor_t bias = gb_tensor(g, U_BIAS, mdt, md, k->m, false, false);
        cudnnBackendDescriptor_t s2 = gb_virtual(g, b, h, L, S);
        gb_pw(g, CUDNN_POINTWISE_ADD, cur, bias, NULL, s2);
        cur = s2;
    }
    if (k->causal) {
        cudnnBackendDescriptor_t row = gb_virtual(g, b, h, L, S, CUDNN_DATA_INT32);
        cudnnBackendDescriptor_t col = gb_virtual(g, b, h, L, S, CUDNN_DATA_INT32);
        cudnnBackendDescriptor_t keep = gb_virtual(g, b, h, L, S, CUDNN_DATA_BOOLEAN);
        cudnnBackendDescriptor_t neg = gb_scalar(g, U_NEG), s3 = gb_virtual(g, b, h, L, S);
        gb_pw(g, CUDNN_POINTWISE_GEN_INDEX, cur, NULL, NULL, row, 2);
        gb_pw(g, CUDNN_POINTWISE_GEN_INDEX, cur, NULL, NULL, col, 3);
        gb_pw(g, CUDNN_POINTWISE_CMP_GE, row, col, NULL, keep);
        gb_pw(g, CUDNN_POINTWISE_BINARY_SELECT, cur, neg, keep, s3);
        cur = s3;
    }
    return cur;
}

/* the forward graph (see the top of the file) */
static void forward_graph(builder *g, const sdpa_key *k) {
    cudnnDataType_t dt = k->dt == TC_F16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
    int64_t b = k->b, h = k->h, L = k->L, S = k->S, E = k->E, Ev = k->Ev;
    int64_t qd[4] = {b, h, L, E}, qs[4] = {k->q[0], k->q[1], k->q[2], 1};
    int64_t ktd[4] = {b, h, E, S}, kts[4] = {k->k[0], k->k[1], 1, k->k[2]};
    int64_t vd[4] = {b, h, S, Ev}, vs[4] = {k->v[0], k->v[1], k->v[2], 1};
    int64_t od[4] = {b, h, L, Ev}, os[4] = {k->o[0], k->o[1], k->o[2], 1};
    int64_t sd[4] = {b, h, L, 1}, ss[4] = {h * L, L, 1, 1};
    cudnnBackendDescriptor_t Q = gb_tensor(g, U_Q, dt, qd, qs, false, false);
    cudnnBackendDescriptor_t Kt = gb_tensor(g, U_KT, dt, ktd, kts, false, false);
    cudnnBackendDescriptor_t V = gb_tensor(g, U_V, dt, vd, vs, false, false);
    cudnnBackendDescriptor_t O = gb_tensor(g, U_O, dt, od, os, false, false);
    cudnnBackendDescriptor_t stats = gb_tensor(g, U_STATS, CUDNN_DATA_FLOAT, sd, ss, false, false);
    cudnnBackendDescriptor_t scale = gb_scalar(g, U_SCALE);
    cudnnBackendDescriptor_t cur = scores(g, k, Q, Kt, scale);
    cudnnBackendDescriptor_t m = gb_virtual(g, b, h, L, 1), d = gb_virtual(g, b, h, L, S);
    cudnnBackendDescriptor_t e = gb_virtual(g, b, h, L, S), z = gb_virtual(g, b, h, L, 1);
    cudnnBackendDescriptor_t lz = gb_virtual(g, b, h, L, 1), p = gb_virtual(g, b, h, L, S);
    gb_reduce(g, CUDNN_REDUCE_TENSOR_MAX, cur, m);
    gb_pw(g, CUDNN_POINTWISE_SUB, cur, m, NULL, d);
    gb_pw(g, CUDNN_POINTWISE_EXP, d, NULL, NULL, e);
    gb_reduce(g, CUDNN_REDUCE_TENSOR_ADD, e, z);
    gb_pw(g, CUDNN_POINTWISE_LOG, z, NULL, NULL, lz);
    gb_pw(g, CUDNN_POINTWISE_ADD, m, lz, NULL, stats);
    gb_pw(g, CUDNN_POINTWISE_DIV, e, z, NULL, p);
    gb_matmul(g, p, V, O);
}

/* the backward graph (see the top of the file) */
static void backward_graph(builder *g, const sdpa_key *k) {
    cudnnDataType_t dt = k->dt == TC_F16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
    int64_t b = k->b, h = k->h, L = k->L, S = k->S, E = k->E, Ev = k->Ev;
    int64_t qd[4] = {b, h, L, E}, qs[4] = {k->q[0], k->q[1], k->q[2], 1};
    int64_t ktd[4] = {b, h, E, S}, kts[4] = {k->k[0], k->k[1], 1, k->k[2]};
    int64_t kd[4] = {b, h, S, E}, ks[4] = {k->k[0], k->k[1], k->k[2], 1};
    int64_t vtd[4] = {b, h, Ev, S}, vts[4] = {k->v[0], k->v[1], 1, k->v[2]};
    int64_t od[4] = {b, h, L, Ev}, os[4] = {k->o[0], k->o[1], k->o[2], 1};
    int64_t gos[4] = {k->go[0], k->go[1], k->go[2], 1};
    int64_t gqs[4] = {k->gq[0], k->gq[1], k->gq[2], 1}, gks[4] = {k->gk[0], k->gk[1], k->gk[2], 1};
    int64_t gvd[4] = {b, h, S, Ev}, gvs[4] = {k->gv[0], k->gv[1], k->gv[2], 1};
    int64_t sd[4] = {b, h, L, 1}, ss[4] = {h * L, L, 1, 1};
    cudnnBackendDescriptor_t Q = gb_tensor(g, U_Q, dt, qd, qs, false, false);
    cudnnBackendDescriptor_t Kt = gb_tensor(g, U_KT, dt, ktd, kts, false, false);
    cudnnBackendDescriptor_t K = gb_tensor(g, U_K, dt, kd, ks, false, false);
    cudnnBackendDescriptor_t Vt = gb_tensor(g, U_VT, dt, vtd, vts, false, false);
    cudnnBackendDescriptor_t O = gb_tensor(g, U_O, dt, od, os, false, false);
    cudnnBackendDescriptor_t dO = gb_tensor(g, U_DO, dt, od, gos, false, false);
    cudnnBackendDescriptor_t dQ = gb_tensor(g, U_DQ, dt, qd, gqs, false, false);
    cudnnBackendDescriptor_t dK = gb_tensor(g, U_DK, dt, kd, gks, false, false);
    cudnnBackendDescriptor_t dV = gb_tensor(g, U_DV, dt, gvd, gvs, false, false);
    cudnnBackendDescriptor_t stats = gb_tensor(g, U_STATS, CUDNN_DATA_FLOAT, sd, ss, false, false);
    cudnnBackendDescriptor_t dsum = gb_tensor(g, U_DSUM, CUDNN_DATA_FLOAT, sd, ss, false, false);
    cudnnBackendDescriptor_t scale = gb_scalar(g, U_SCALE);
    /* Dsum = rowsum(dO * O) */
    cudnnBackendDescriptor_t dOO = gb_virtual(g, b, h, L, Ev);
    gb_pw(g, CUDNN_POINTWISE_MUL, dO, O, NULL, dOO);
    gb_reduce(g, CUDNN_REDUCE_TENSOR_ADD, dOO, dsum);
    /* P from the scores and stats */
    cudnnBackendDescriptor_t cur = scores(g, k, Q, Kt, scale);
    cudnnBackendDescriptor_t d = gb_virtual(g, b, h, L, S), p = gb_virtual(g, b, h, L, S);
    gb_pw(g, CUDNN_POINTWISE_SUB, cur, stats, NULL, d);
    gb_pw(g, CUDNN_POINTWISE_EXP, d, NULL, NULL, p);
    /* dV = P^T dO */
    cudnnBackendDescriptor_t pt = gb_virtual_t(g, b, h, L, S);
    gb_reshape(g, p, pt);
    gb_matmul(g, pt, dO, dV);
    /* dS = P (dO V^T - Dsum) * scale */
    cudnnBackendDescriptor_t dp = gb_virtual(g, b, h, L, S), t1 = gb_virtual(g, b, h, L, S);
    cudnnBackendDescriptor_t t2 = gb_virtual(g, b, h, L, S), ds = gb_virtual(g, b, h, L, S);
    gb_matmul(g, dO, Vt, dp);
    gb_pw(g, CUDNN_POINTWISE_SUB, dp, dsum, NULL, t1);
    gb_pw(g, CUDNN_POINTWISE_MUL, p, t1, NULL, t2);
    gb_pw(g, CUDNN_POINTWISE_MUL, t2, scale, NULL, ds);
    /* dQ = dS K, dK = dS^T Q */
    gb_matmul(g, ds, K, dQ);
    cudnnBackendDescriptor_t dst = gb_virtual_t(g, b, h, L, S);
    gb_reshape(g, ds, dst);
    gb_matmul(g, dst, Q, dK);
}

static void refused(sdpa_plan *p, const builder *g) {
    snprintf(p->reason, sizeof p->reason, "cuDNN refused the graph: %s returned %s", g->what,
             cudnnGetErrorString(g->st));
}

/* the graph of k finalized into a plan: the first of the heuristics' engine configurations
 * that finalizes; p->plan stays NULL (with p->reason) where none does */
static void build_plan(sdpa_plan *p, cudnnHandle_t handle) {
    builder *g = &p->g;
    g->next_uid = 100;
    if (p->key.dir == 0) forward_graph(g, &p->key);
    else backward_graph(g, &p->key);
    cudnnBackendDescriptor_t graph = gb_new(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    gb_set(g, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    gb_set(g, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g->nops, g->ops);
    gb_fin(g, graph, "cudnnBackendFinalize (operation graph)");
    cudnnBackendDescriptor_t heur = gb_new(g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    gb_desc(g, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    gb_set(g, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    gb_fin(g, heur, "cudnnBackendFinalize (engine heuristics)");
    int64_t n = 0;
    if (g->st == CUDNN_STATUS_SUCCESS)
        gb_ok(g, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n,
                                          NULL),
              "cudnnBackendGetAttribute (heuristics' result count)");
    if (g->st != CUDNN_STATUS_SUCCESS) return refused(p, g);
    if (n == 0) {
        snprintf(p->reason, sizeof p->reason, "cuDNN's heuristics offer no engine for the graph");
        return;
    }
    if (n > 8) n = 8;
    cudnnBackendDescriptor_t cfg[8];
    for (int64_t i = 0; i < n; i++) cfg[i] = gb_new(g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t got = 0;
    if (g->st == CUDNN_STATUS_SUCCESS)
        gb_ok(g, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, &got,
                                          cfg),
              "cudnnBackendGetAttribute (heuristics' results)");
    if (g->st != CUDNN_STATUS_SUCCESS) return refused(p, g);
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int64_t i = 0; i < got && i < n && !p->plan; i++) {
        cudnnBackendDescriptor_t plan = gb_new(g, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        if (!plan) return refused(p, g);
        if ((last = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                             &handle)) != CUDNN_STATUS_SUCCESS ||
            (last = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i])) != CUDNN_STATUS_SUCCESS ||
            (last = cudnnBackendFinalize(plan)) != CUDNN_STATUS_SUCCESS)
            continue; /* this engine does not take the graph: the next one may */
        int64_t ws = 0, cnt = 0;
        if ((last = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                             &cnt, &ws)) != CUDNN_STATUS_SUCCESS)
            continue;
        p->plan = plan;
        p->workspace = ws;
    }
    if (!p->plan)
        snprintf(p->reason, sizeof p->reason, "cuDNN refused the graph: no engine's plan finalizes (last: %s)",
                 cudnnGetErrorString(last));
}

/* the plan for key k (made, or refused, on first use); NULL where cuDNN cannot start */
static sdpa_plan *plan_for(const sdpa_key *k, cudnnHandle_t handle) {
    for (int i = 0; i < nplans; i++)
        if (!memcmp(&plans[i]->key, k, sizeof *k)) return plans[i];
    sdpa_plan *p = (sdpa_plan *)calloc(1, sizeof *p);
    if (!p) return NULL;
    p->key = *k;
    build_plan(p, handle);
    if (p->plan) snprintf(p->reason, sizeof p->reason, "cuDNN's plan finalized");
    int slot = nplans < MAX_PLANS ? nplans++ : next_evict++ % MAX_PLANS;
    if (plans[slot]) {
        gb_release(&plans[slot]->g);
        free(plans[slot]);
    }
    plans[slot] = p;
    return p;
}

/* ---- entries ------------------------------------------------------------------------------------ */
static bool aligned(const void *p) { return p && (uintptr_t)p % 16 == 0; }

/* what keeps a problem from cuDNN before any graph is built (NULL: nothing) */
static const char *unfit(tc_dtype dt, const attn &a, bool gmask) {
    if (dt != TC_F16 && dt != TC_BF16) return "cuDNN's fused attention takes f16 and bf16";
    if (gmask) return "the mask's gradient is wanted (cuDNN gives none)";
    if (a.p > 0) return "dropout (left to the flash kernel, whose Philox rule the CPU shares)";
    if (a.B == 0 || a.L == 0 || a.S == 0 || a.E == 0 || a.Ev == 0) return "an empty problem";
    if (a.nb > 2) return "more than two batch dims";
    if (a.m.p && a.mdt == TC_BOOL) return "a bool mask (cuDNN takes a float mask, as an additive bias)";
    if (a.m.p && a.mdt != dt && a.mdt != TC_F32) return "a float mask of another dtype";
    const operand *ops[4] = {&a.q, &a.k, &a.v, &a.go};
    int64_t rows[4] = {a.L, a.S, a.S, a.L}, cols[4] = {a.E, a.E, a.Ev, a.Ev};
    for (int i = 0; i < 4; i++) {
        if (!ops[i]->p) continue;
        if (ops[i]->cs != 1 && cols[i] > 1) return "an operand's head dim is not unit-stride";
        if (ops[i]->rs < 1 && rows[i] > 1) return "an operand is broadcast over its rows";
        for (int d = 0; d < a.nb; d++)
            if (ops[i]->bs[d] == 0 && a.bshape[d] > 1) return "an operand is broadcast over a batch dim";
        if (!aligned(ops[i]->p)) return "an operand is not 16-byte aligned";
    }
    if (a.m.p && (a.m.cs != 1 || !aligned(a.m.p))) return "the mask's key dim is not unit-stride and aligned";
    return NULL;
}

/* the key of a problem; o, gq, gk, gv: the output and gradients (backward) */
static sdpa_key key_of(int dir, tc_dtype dt, const attn &a, const tc_tensor *o, const tc_tensor *gq,
                       const tc_tensor *gk, const tc_tensor *gv) {
    sdpa_key k;
    memset(&k, 0, sizeof k);
    k.dir = dir;
    k.dt = dt;
    k.causal = a.causal;
    k.b = a.nb == 2 ? a.bshape[0] : 1;
    k.h = a.nb == 2 ? a.bshape[1] : a.nb == 1 ? a.bshape[0] : 1;
    k.L = a.L;
    k.S = a.S;
    k.E = a.E;
    k.Ev = a.Ev;
    strides_of(a, a.q, a.L, a.E, k.q);
    strides_of(a, a.k, a.S, a.E, k.k);
    strides_of(a, a.v, a.S, a.Ev, k.v);
    strides_of_tensor(a, o, k.o);
    if (dir == 1) {
        strides_of(a, a.go, a.L, a.Ev, k.go);
        strides_of_tensor(a, gq, k.gq);
        strides_of_tensor(a, gk, k.gk);
        strides_of_tensor(a, gv, k.gv);
    }
    if (a.m.p) { /* a broadcast dim (stride 0) becomes a dim of 1 */
        k.bias = true;
        k.mdt = a.mdt;
        int64_t ms[3], full[3] = {k.b, k.h, a.L}, packed[3] = {k.h * a.L * a.S, a.L * a.S, a.S};
        strides_of(a, a.m, a.L, a.S, ms);
        for (int i = 0; i < 3; i++) {
            bool bc = ms[i] == 0 || full[i] == 1;
            k.mdim[i] = bc ? 1 : full[i];
            k.m[i] = bc ? packed[i] : ms[i];
        }
        k.m[3] = 1;
    }
    return k;
}

/* runs plan p with the variant pack of (uid, pointer) pairs: TC_OK, or TCU_DECLINED (why in
 * *reason) where the workspace cannot be had or cuDNN fails the call; a plan whose execute failed
 * is not tried again (its reason says why) */
static int run_plan(cudnnHandle_t handle, sdpa_plan *p, int n, const int64_t *uids, void *const *ptrs,
                    const char **reason) {
    void *ws = NULL;
    if (p->workspace > 0 && !(ws = tc_cuda_alloc((size_t)p->workspace)))
        return *reason = "out of GPU memory for cuDNN's workspace", TCU_DECLINED;
    cudnnBackendDescriptor_t pack = NULL;
    const char *what = "cudnnBackendCreateDescriptor (variant pack)";
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) {
        what = "cudnnBackendFinalize (variant pack)";
        st = cudnnBackendFinalize(pack);
    }
    if (st == CUDNN_STATUS_SUCCESS) {
        what = "cudnnBackendExecute";
        st = cudnnBackendExecute(handle, p->plan, pack);
    }
    if (pack) cudnnBackendDestroyDescriptor(pack);
    if (ws) tc_cuda_free(ws); /* the caching allocator's stream order keeps it until the plan has run */
    if (st == CUDNN_STATUS_SUCCESS) return TC_OK;
    p->plan = NULL; /* its descriptor stays in p->g, destroyed with the rest */
    snprintf(p->reason, sizeof p->reason, "cuDNN's plan failed to run: %s returned %s", what,
             cudnnGetErrorString(st));
    *reason = p->reason;
    return TCU_DECLINED;
}

/* TC_OK: cuDNN ran it; TCU_DECLINED (why in *reason): the caller runs flash */
int tcu_cudnn_sdpa_forward(tc_tensor *out, tc_tensor *lse, tc_dtype dt, const attn &a, const char **reason) {
    if ((*reason = unfit(dt, a, false))) return TCU_DECLINED;
    if (!aligned(tcu_ptr(out)) || !aligned(tcu_ptr(lse)))
        return *reason = "the output or the logsumexp is not 16-byte aligned", TCU_DECLINED;
    cudnnHandle_t handle;
    if (tcu_cudnn_handle(&handle) != TC_OK) return *reason = "cuDNN does not start", TCU_DECLINED;
    sdpa_key k = key_of(0, dt, a, out, NULL, NULL, NULL);
    sdpa_plan *p = plan_for(&k, handle);
    if (!p) return *reason = "out of host memory for a cuDNN plan", TCU_DECLINED;
    *reason = p->reason;
    if (!p->plan) return TCU_DECLINED;
    float scale = (float)a.scale, neg = -FLT_MAX;
    int64_t uids[7] = {U_Q, U_KT, U_V, U_O, U_STATS, U_SCALE, U_NEG};
    void *ptrs[7] = {(void *)a.q.p, (void *)a.k.p, (void *)a.v.p, tcu_ptr(out), tcu_ptr(lse), &scale, &neg};
    int n = k.causal ? 7 : 6;
    if (k.bias) {
        uids[n] = U_BIAS;
        ptrs[n++] = (void *)a.m.p;
    }
    return run_plan(handle, p, n, uids, ptrs, reason);
}

/* gq, gk, gv may be NULL (temporaries take their place); dsum: B L floats of workspace */
int tcu_cudnn_sdpa_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_dtype dt, const attn &a,
                                       const tc_tensor *out, const tc_tensor *lse, float *dsum, const char **reason) {
    if ((*reason = unfit(dt, a, false))) return TCU_DECLINED;
    if (!out) return *reason = "the forward's output is unknown (Dsum needs it)", TCU_DECLINED;
    const tc_tensor *like[3] = {gq, gk, gv};
    for (int i = 0; i < 3; i++)
        if (like[i] && (!aligned(tcu_ptr(like[i])) || like[i]->stride[like[i]->ndim - 1] != 1))
            return *reason = "a gradient is not unit-stride and 16-byte aligned", TCU_DECLINED;
    if (!aligned(tcu_ptr(out)) || out->stride[out->ndim - 1] != 1 || !aligned(tcu_ptr(lse)))
        return *reason = "the output or the logsumexp is not unit-stride and 16-byte aligned", TCU_DECLINED;
    cudnnHandle_t handle;
    if (tcu_cudnn_handle(&handle) != TC_OK) return *reason = "cuDNN does not start", TCU_DECLINED;
    /* missing gradients: contiguous temporaries */
    tc_tensor *tmp[3] = {NULL, NULL, NULL}, *g[3] = {gq, gk, gv};
    int64_t shp[3][TC_MAX_DIMS];
    int64_t rows[3] = {a.L, a.S, a.S}, cols[3] = {a.E, a.E, a.Ev};
    for (int i = 0; i < 3; i++) {
        if (g[i]) continue;
        for (int d = 0; d < a.nb; d++) shp[i][d] = a.bshape[d];
        shp[i][a.nb] = rows[i];
        shp[i][a.nb + 1] = cols[i];
        if (!(tmp[i] = g[i] = tc_empty(a.nb + 2, shp[i], dt, out->storage->device))) {
            for (int j = 0; j < i; j++) tc_tensor_release(tmp[j]);
            return *reason = "out of GPU memory for a gradient cuDNN writes and tocha does not want", TCU_DECLINED;
        }
    }
    sdpa_key k = key_of(1, dt, a, out, g[0], g[1], g[2]);
    sdpa_plan *p = plan_for(&k, handle);
    int rc = TCU_DECLINED;
    *reason = p ? p->reason : "out of host memory for a cuDNN plan";
    if (p && p->plan) {
        float scale = (float)a.scale, neg = -FLT_MAX;
        int64_t uids[16] = {U_Q, U_KT, U_K, U_VT, U_O, U_DO, U_DQ, U_DK, U_DV, U_STATS, U_DSUM, U_SCALE, U_NEG};
        void *ptrs[16] = {(void *)a.q.p, (void *)a.k.p, (void *)a.k.p, (void *)a.v.p, tcu_ptr(out), (void *)a.go.p,
                          tcu_ptr(g[0]), tcu_ptr(g[1]), tcu_ptr(g[2]), tcu_ptr(lse), dsum, &scale, &neg};
        int n = k.causal ? 13 : 12;
        if (k.bias) {
            uids[n] = U_BIAS;
            ptrs[n++] = (void *)a.m.p;
        }
        rc = run_plan(handle, p, n, uids, ptrs, reason);
    }
    for (int i = 0; i < 3; i++) tc_tensor_release(tmp[i]);
    return rc;
}
