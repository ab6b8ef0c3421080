/* cudnn_graph.cpp (cudaemu): cuDNN's graph (backend) API (include/cudnn_graph.h) on the CPU.
 * Descriptors record their attributes; finalize checks what cuDNN documents (required
 * attributes present, attributes that are descriptors already finalized, shapes agreeing between
 * an operation's tensors, unique ids naming one tensor each); a plan's finalize applies the
 * emulated engines' support rule. Execute runs the graph's operations in dependency order on
 * dense double buffers: matmul (batch dims broadcast), pointwise (inputs broadcast to the
 * output), reduction (to the output's dims of size 1), reshape (the same memory seen through
 * other dims and strides); non-virtual tensors are read from and written to the variant pack's
 * buffers through their strides, by-value tensors from host memory. */
#include "emu.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <vector>

#define MAX_ND 8
#define WORKSPACE_BYTES ((int64_t)4096) /* what every plan asks for, so that the caller's workspace is checked */

namespace {

struct tensor {
    bool fin = false, has_dt = false, has_uid = false, virt = false, byval = false;
    cudnnDataType_t dt = CUDNN_DATA_FLOAT;
    int nd = 0, ns = 0;
    int64_t dim[MAX_ND] = {0}, str[MAX_ND] = {0}, uid = 0, align = 0;
};

struct desc {
    cudnnBackendDescriptorType_t type;
    bool fin = false;
    tensor ten;                                /* TENSOR */
    bool has_mode = false, has_axis = false;   /* POINTWISE */
    cudnnPointwiseMode_t mode = CUDNN_POINTWISE_ADD;
    int64_t axis = 0;
    bool has_red = false;                      /* REDUCTION */
    cudnnReduceTensorOp_t red = CUDNN_REDUCE_TENSOR_ADD;
    bool has_comp = false;                     /* MATMUL, REDUCTION, POINTWISE (math precision) */
    /* operations: the operand tensors by role, and the operation's own descriptor */
    tensor x, b, y, t; /* t: BINARY_SELECT's mask */
    bool has_x = false, has_b = false, has_y = false, has_t = false;
    const desc *op = NULL;
    desc *opcopy = NULL; /* a copy of op, owned */
    std::vector<desc> ops;                     /* OPERATIONGRAPH (copies) */
    bool has_handle = false;
    const desc *graph = NULL;                  /* ENGINEHEUR, ENGINECFG: the graph (owned copy in cfg) */
    std::vector<desc> *gcopy = NULL;
    bool has_heur = false;
    const desc *cfg = NULL;                    /* EXECUTION_PLAN */
    std::vector<int64_t> uids;                 /* VARIANT_PACK */
    std::vector<void *> ptrs;
    void *ws = NULL;
    bool has_uids = false, has_ptrs = false, has_ws = false;
    ~desc() { delete opcopy; delete gcopy; }
    desc(cudnnBackendDescriptorType_t ty) : type(ty) {}
    desc(const desc &o) { *this = o; }
    desc &operator=(const desc &o) {
        if (this == &o) return *this;
        type = o.type; fin = o.fin; ten = o.ten; has_mode = o.has_mode; has_axis = o.has_axis; mode = o.mode;
        axis = o.axis; has_red = o.has_red; red = o.red; has_comp = o.has_comp; x = o.x; b = o.b; y = o.y; t = o.t;
        has_x = o.has_x; has_b = o.has_b; has_y = o.has_y; has_t = o.has_t;
        delete opcopy;
        opcopy = o.op ? new desc(*o.op) : NULL;
        op = opcopy;
        ops = o.ops; has_handle = o.has_handle; graph = NULL;
        delete gcopy;
        gcopy = o.gcopy ? new std::vector<desc>(*o.gcopy) : NULL;
        has_heur = o.has_heur; cfg = NULL; uids = o.uids; ptrs = o.ptrs; ws = o.ws;
        has_uids = o.has_uids; has_ptrs = o.has_ptrs; has_ws = o.has_ws;
        return *this;
    }
};

bool is_op(cudnnBackendDescriptorType_t ty) {
    return ty == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR || ty == CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR ||
           ty == CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR || ty == CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR;
}

bool known_type(cudnnBackendDescriptorType_t ty) {
    switch (ty) {
    case CUDNN_BACKEND_POINTWISE_DESCRIPTOR: case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR:
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR: case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: case CUDNN_BACKEND_TENSOR_DESCRIPTOR:
    case CUDNN_BACKEND_MATMUL_DESCRIPTOR: case CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR:
    case CUDNN_BACKEND_REDUCTION_DESCRIPTOR: case CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR: return true;
    default: return false;
    }
}

bool known_dt(int dt) {
    return dt == CUDNN_DATA_FLOAT || dt == CUDNN_DATA_DOUBLE || dt == CUDNN_DATA_HALF || dt == CUDNN_DATA_BFLOAT16 ||
           dt == CUDNN_DATA_INT32 || dt == CUDNN_DATA_INT64 || dt == CUDNN_DATA_BOOLEAN;
}

size_t dt_size(cudnnDataType_t dt) {
    switch (dt) {
    case CUDNN_DATA_DOUBLE: case CUDNN_DATA_INT64: return 8;
    case CUDNN_DATA_FLOAT: case CUDNN_DATA_INT32: return 4;
    case CUDNN_DATA_BOOLEAN: return 1;
    default: return 2;
    }
}

int64_t numel(const tensor &t) {
    int64_t n = 1;
    for (int i = 0; i < t.nd; i++) n *= t.dim[i];
    return n;
}

/* the elements a tensor's strides reach: the largest offset + 1 */
int64_t extent(const tensor &t) {
    int64_t e = 0;
    for (int i = 0; i < t.nd; i++) e += (t.dim[i] - 1) * t.str[i];
    return e + 1;
}

/* the memory offset of dense (row-major) index i */
int64_t offset_of(const tensor &t, int64_t i) {
    int64_t off = 0;
    for (int d = t.nd - 1; d >= 0; d--) {
        off += i % t.dim[d] * t.str[d];
        i /= t.dim[d];
    }
    return off;
}

double load(const void *p, cudnnDataType_t dt, int64_t i) {
    switch (dt) {
    case CUDNN_DATA_DOUBLE: return ((const double *)p)[i];
    case CUDNN_DATA_FLOAT: return ((const float *)p)[i];
    case CUDNN_DATA_HALF: return __half2float(((const __half *)p)[i]);
    case CUDNN_DATA_BFLOAT16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case CUDNN_DATA_INT32: return ((const int32_t *)p)[i];
    case CUDNN_DATA_INT64: return (double)((const int64_t *)p)[i];
    default: return ((const uint8_t *)p)[i] != 0;
    }
}

void store(void *p, cudnnDataType_t dt, int64_t i, double v) {
    switch (dt) {
    case CUDNN_DATA_DOUBLE: ((double *)p)[i] = v; break;
    case CUDNN_DATA_FLOAT: ((float *)p)[i] = (float)v; break;
    case CUDNN_DATA_HALF: ((__half *)p)[i] = __float2half_rn((float)v); break;
    case CUDNN_DATA_BFLOAT16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v); break;
    case CUDNN_DATA_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
    case CUDNN_DATA_INT64: ((int64_t *)p)[i] = (int64_t)v; break;
    default: ((uint8_t *)p)[i] = v != 0; break;
    }
}

bool same_tensor(const tensor &a, const tensor &b) {
    if (a.dt != b.dt || a.nd != b.nd || a.virt != b.virt || a.byval != b.byval) return false;
    for (int i = 0; i < a.nd; i++)
        if (a.dim[i] != b.dim[i] || a.str[i] != b.str[i]) return false;
    return true;
}

/* ---- finalize: what each descriptor type requires ------------------------------------------ */
/* in broadcasts to out: the same rank, each dim equal or 1 */
bool broadcasts(const tensor &in, const tensor &out) {
    if (in.nd != out.nd) return false;
    for (int i = 0; i < in.nd; i++)
        if (in.dim[i] != out.dim[i] && in.dim[i] != 1) return false;
    return true;
}

int pw_inputs(cudnnPointwiseMode_t m) {
    switch (m) {
    case CUDNN_POINTWISE_EXP: case CUDNN_POINTWISE_LOG: case CUDNN_POINTWISE_GEN_INDEX: return 1;
    case CUDNN_POINTWISE_BINARY_SELECT: return 3;
    default: return 2;
    }
}

cudnnStatus_t finalize_op(desc *d) {
    switch (d->type) {
    case CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR: {
        if (!d->has_x || !d->has_b || !d->has_y || !d->op) return CUDNN_STATUS_BAD_PARAM;
        const tensor &a = d->x, &b = d->b, &c = d->y;
        int n = c.nd;
        if (n < 2 || a.nd != n || b.nd != n) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
        if (a.dim[n - 2] != c.dim[n - 2] || b.dim[n - 1] != c.dim[n - 1] || a.dim[n - 1] != b.dim[n - 2])
            return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
        for (int i = 0; i < n - 2; i++)
            if ((a.dim[i] != c.dim[i] && a.dim[i] != 1) || (b.dim[i] != c.dim[i] && b.dim[i] != 1))
                return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
        return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR: {
        if (!d->op || !d->has_x || !d->has_y) return CUDNN_STATUS_BAD_PARAM;
        int k = pw_inputs(d->op->mode);
        if ((k >= 2 && !d->has_b) || (k == 3 && !d->has_t)) return CUDNN_STATUS_BAD_PARAM;
        if (!broadcasts(d->x, d->y) || (k >= 2 && !broadcasts(d->b, d->y)) || (k == 3 && !broadcasts(d->t, d->y)))
            return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
        if (d->op->mode == CUDNN_POINTWISE_GEN_INDEX && (d->op->axis < 0 || d->op->axis >= d->y.nd))
            return CUDNN_STATUS_BAD_PARAM;
        return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR: {
        if (!d->op || !d->has_x || !d->has_y) return CUDNN_STATUS_BAD_PARAM;
        if (d->x.nd != d->y.nd) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
        for (int i = 0; i < d->x.nd; i++)
            if (d->y.dim[i] != d->x.dim[i] && d->y.dim[i] != 1) return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
        return CUDNN_STATUS_SUCCESS;
    }
    default: /* reshape */
        if (!d->has_x || !d->has_y) return CUDNN_STATUS_BAD_PARAM;
        return numel(d->x) == numel(d->y) ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
    }
}

/* the tensors an operation reads, and the one it writes */
std::vector<const tensor *> inputs_of(const desc &o) {
    std::vector<const tensor *> v{&o.x};
    if (o.type == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR) v.push_back(&o.b);
    if (o.type == CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR) {
        int k = pw_inputs(o.op->mode);
        if (k >= 2) v.push_back(&o.b);
        if (k == 3) v.push_back(&o.t);
    }
    return v;
}

cudnnStatus_t finalize_graph(desc *d) {
    if (!d->has_handle || d->ops.empty()) return CUDNN_STATUS_BAD_PARAM;
    std::map<int64_t, const tensor *> seen;
    std::map<int64_t, int> produced;
    for (const desc &o : d->ops) {
        std::vector<const tensor *> ts = inputs_of(o);
        ts.push_back(&o.y);
        for (const tensor *t : ts) {
            auto it = seen.find(t->uid);
            if (it == seen.end()) seen[t->uid] = t;
            else if (!same_tensor(*it->second, *t)) return CUDNN_STATUS_BAD_PARAM; /* one uid, two tensors */
        }
        if (o.y.byval || produced[o.y.uid]++) return CUDNN_STATUS_BAD_PARAM; /* written twice */
    }
    for (const desc &o : d->ops) /* a virtual tensor read must be written by the graph */
        for (const tensor *t : inputs_of(o))
            if (t->virt && !produced.count(t->uid)) return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

/* the emulated engines' support rule (cudnn_graph.h), over the matmuls' operands */
bool supported(const std::vector<desc> &ops) {
    for (const desc &o : ops) {
        if (o.type != CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR) continue;
        const tensor *ts[3] = {&o.x, &o.b, &o.y};
        for (const tensor *t : ts) {
            if (t->virt || (t->dt != CUDNN_DATA_HALF && t->dt != CUDNN_DATA_BFLOAT16)) continue;
            for (int i = 0; i < t->nd; i++)
                if (t->str[i] == 1 && t->dim[i] > 1 &&
                    (t->dim[i] % 8 != 0 || t->dim[i] > TCU_EMU_CUDNN_MAX_HEAD_DIM))
                    return false;
        }
    }
    return true;
}

/* ---- execute ------------------------------------------------------------------------------ */
typedef std::map<int64_t, std::vector<double>> value_map;

/* the dense index of out's element i in in, broadcast (in's dims 1 or out's) */
int64_t bcast_index(const tensor &in, const tensor &out, int64_t i) {
    int64_t j = 0, mul = 1;
    for (int d = out.nd - 1; d >= 0; d--) {
        int64_t c = i % out.dim[d];
        i /= out.dim[d];
        if (in.dim[d] != 1) j += c * mul;
        mul *= in.dim[d];
    }
    return j;
}

double pointwise(cudnnPointwiseMode_t m, double x, double b, double t) {
    switch (m) {
    case CUDNN_POINTWISE_ADD: return x + b;
    case CUDNN_POINTWISE_MUL: return x * b;
    case CUDNN_POINTWISE_DIV: return x / b;
    case CUDNN_POINTWISE_SUB: return x - b;
    case CUDNN_POINTWISE_EXP: return exp(x);
    case CUDNN_POINTWISE_LOG: return log(x);
    case CUDNN_POINTWISE_CMP_GE: return x >= b;
    default: return t != 0 ? x : b; /* BINARY_SELECT */
    }
}

void run_op(const desc &o, value_map &v) {
    const tensor &y = o.y;
    int64_t n = numel(y);
    std::vector<double> out((size_t)n, 0.0);
    if (o.type == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR) {
        const std::vector<double> &a = v[o.x.uid], &b = v[o.b.uid];
        int nd = y.nd;
        int64_t M = y.dim[nd - 2], N = y.dim[nd - 1], K = o.x.dim[nd - 1], batch = n / (M * N);
        tensor ab = y, bb = y, xb = o.x, yb = o.b; /* the batch dims alone, to broadcast over */
        ab.nd = bb.nd = xb.nd = yb.nd = nd - 2;
        for (int64_t z = 0; z < batch; z++) {
            int64_t za = bcast_index(xb, ab, z) * M * K, zb = bcast_index(yb, bb, z) * K * N;
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double s = 0;
                    for (int64_t k = 0; k < K; k++) s += a[(size_t)(za + i * K + k)] * b[(size_t)(zb + k * N + j)];
                    out[(size_t)((z * M + i) * N + j)] = s;
                }
        }
    } else if (o.type == CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR) {
        cudnnPointwiseMode_t m = o.op->mode;
        int k = pw_inputs(m);
        const std::vector<double> &x = v[o.x.uid];
        const std::vector<double> *b = k >= 2 ? &v[o.b.uid] : NULL, *t = k == 3 ? &v[o.t.uid] : NULL;
        for (int64_t i = 0; i < n; i++) {
            if (m == CUDNN_POINTWISE_GEN_INDEX) {
                int64_t c = i;
                for (int d = y.nd - 1; d > o.op->axis; d--) c /= y.dim[d];
                out[(size_t)i] = (double)(c % y.dim[o.op->axis]);
                continue;
            }
            double xv = x[(size_t)bcast_index(o.x, y, i)];
            double bv = b ? (*b)[(size_t)bcast_index(o.b, y, i)] : 0, tv = t ? (*t)[(size_t)bcast_index(o.t, y, i)] : 0;
            out[(size_t)i] = pointwise(m, xv, bv, tv);
        }
    } else if (o.type == CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR) {
        const std::vector<double> &x = v[o.x.uid];
        bool mx = o.op->red == CUDNN_REDUCE_TENSOR_MAX;
        for (double &e : out) e = mx ? -INFINITY : 0;
        for (int64_t i = 0; i < numel(o.x); i++) {
            int64_t j = bcast_index(y, o.x, i); /* y's dims are x's or 1 */
            out[(size_t)j] = mx ? fmax(out[(size_t)j], x[(size_t)i]) : out[(size_t)j] + x[(size_t)i];
        }
    } else { /* reshape: x's elements laid out by its strides, read back by y's */
        const std::vector<double> &x = v[o.x.uid];
        std::vector<double> mem((size_t)extent(o.x), 0.0);
        for (int64_t i = 0; i < numel(o.x); i++) mem[(size_t)offset_of(o.x, i)] = x[(size_t)i];
        for (int64_t i = 0; i < n; i++) {
            int64_t off = offset_of(y, i);
            out[(size_t)i] = off < (int64_t)mem.size() ? mem[(size_t)off] : NAN;
        }
    }
    if (y.dt == CUDNN_DATA_HALF || y.dt == CUDNN_DATA_BFLOAT16) /* a 16-bit intermediate holds 16 bits */
        for (double &e : out) {
            __half hv = __float2half_rn((float)e);
            __nv_bfloat16 bv = __float2bfloat16_rn((float)e);
            e = y.dt == CUDNN_DATA_HALF ? __half2float(hv) : __bfloat162float(bv);
        }
    v[y.uid] = out;
}

struct run_ctx {
    std::vector<desc> ops;
    std::map<int64_t, void *> ptr;
    std::map<int64_t, double> byval; /* by-value tensors' values, read when the plan was executed */
};

void execute(const run_ctx &r) {
    value_map v;
    /* the graph's inputs: non-virtual tensors no operation writes */
    std::map<int64_t, bool> written;
    for (const desc &o : r.ops) written[o.y.uid] = true;
    for (const desc &o : r.ops)
        for (const tensor *t : inputs_of(o)) {
            if (t->virt || written.count(t->uid) || v.count(t->uid)) continue;
            std::vector<double> x((size_t)numel(*t));
            const void *p = r.ptr.at(t->uid);
            for (int64_t i = 0; i < numel(*t); i++)
                x[(size_t)i] = t->byval ? r.byval.at(t->uid) : load(p, t->dt, offset_of(*t, i));
            v[t->uid] = x;
        }
    std::vector<bool> done(r.ops.size(), false);
    for (size_t left = r.ops.size(); left > 0;) {
        size_t before = left;
        for (size_t i = 0; i < r.ops.size(); i++) {
            if (done[i]) continue;
            bool ready = true;
            for (const tensor *t : inputs_of(r.ops[i])) ready = ready && v.count(t->uid);
            if (!ready) continue;
            run_op(r.ops[i], v);
            const tensor &y = r.ops[i].y;
            if (!y.virt) {
                void *p = r.ptr.at(y.uid);
                const std::vector<double> &yv = v[y.uid];
                for (int64_t j = 0; j < numel(y); j++) store(p, y.dt, offset_of(y, j), yv[(size_t)j]);
            }
            done[i] = true;
            left--;
        }
        if (left == before) return; /* a cycle: finalize's checks leave none */
    }
}

void run_recorded(void *ctx) { execute(*(const run_ctx *)ctx); }
void free_recorded(void *ctx) { delete (run_ctx *)ctx; }

cudnnStatus_t set_tensor_ref(tensor *dst, bool *has, cudnnBackendAttributeType_t type, int64_t count,
                             const void *values) {
    if (type != CUDNN_TYPE_BACKEND_DESCRIPTOR || count != 1) return CUDNN_STATUS_BAD_PARAM;
    const desc *t = *(desc *const *)values;
    if (!t || t->type != CUDNN_BACKEND_TENSOR_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
    if (!t->fin) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    *dst = t->ten;
    *has = true;
    return CUDNN_STATUS_SUCCESS;
}

} // namespace

/* ---- the API ---------------------------------------------------------------------------------- */
cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out) {
    if (!out || !known_type(type)) return CUDNN_STATUS_NOT_SUPPORTED;
    *out = new desc(type);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d) {
    delete (desc *)d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t dv, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void *values) {
    desc *d = (desc *)dv;
    if (!d || !values || count < 0) return CUDNN_STATUS_BAD_PARAM;
    if (d->fin) return CUDNN_STATUS_BAD_PARAM; /* a finalized descriptor is read-only */
    const int64_t *i64 = (const int64_t *)values;
    switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR:
        switch (name) {
        case CUDNN_ATTR_TENSOR_DATA_TYPE:
            if (type != CUDNN_TYPE_DATA_TYPE || count != 1 || !known_dt(*(const int *)values)) break;
            d->ten.dt = *(const cudnnDataType_t *)values;
            d->ten.has_dt = true;
            return CUDNN_STATUS_SUCCESS;
        case CUDNN_ATTR_TENSOR_DIMENSIONS:
        case CUDNN_ATTR_TENSOR_STRIDES:
            if (type != CUDNN_TYPE_INT64 || count < 1 || count > MAX_ND) break;
            memcpy(name == CUDNN_ATTR_TENSOR_DIMENSIONS ? d->ten.dim : d->ten.str, values, (size_t)count * 8);
            (name == CUDNN_ATTR_TENSOR_DIMENSIONS ? d->ten.nd : d->ten.ns) = (int)count;
            return CUDNN_STATUS_SUCCESS;
        case CUDNN_ATTR_TENSOR_UNIQUE_ID:
            if (type != CUDNN_TYPE_INT64 || count != 1) break;
            d->ten.uid = *i64;
            d->ten.has_uid = true;
            return CUDNN_STATUS_SUCCESS;
        case CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT:
            if (type != CUDNN_TYPE_INT64 || count != 1) break;
            d->ten.align = *i64;
            return CUDNN_STATUS_SUCCESS;
        case CUDNN_ATTR_TENSOR_IS_VIRTUAL:
        case CUDNN_ATTR_TENSOR_IS_BY_VALUE:
            if (type != CUDNN_TYPE_BOOLEAN || count != 1) break;
            (name == CUDNN_ATTR_TENSOR_IS_VIRTUAL ? d->ten.virt : d->ten.byval) = *(const bool *)values;
            return CUDNN_STATUS_SUCCESS;
        default: break;
        }
        return CUDNN_STATUS_BAD_PARAM;
    case CUDNN_BACKEND_MATMUL_DESCRIPTOR:
        if (name != CUDNN_ATTR_MATMUL_COMP_TYPE || type != CUDNN_TYPE_DATA_TYPE || count != 1) break;
        d->has_comp = true;
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_BACKEND_POINTWISE_DESCRIPTOR:
        if (name == CUDNN_ATTR_POINTWISE_MODE && type == CUDNN_TYPE_POINTWISE_MODE && count == 1) {
            d->mode = *(const cudnnPointwiseMode_t *)values;
            d->has_mode = true;
        } else if (name == CUDNN_ATTR_POINTWISE_MATH_PREC && type == CUDNN_TYPE_DATA_TYPE && count == 1) {
            d->has_comp = true;
        } else if (name == CUDNN_ATTR_POINTWISE_AXIS && type == CUDNN_TYPE_INT64 && count == 1) {
            d->axis = *i64;
            d->has_axis = true;
        } else break;
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_BACKEND_REDUCTION_DESCRIPTOR:
        if (name == CUDNN_ATTR_REDUCTION_OPERATOR && type == CUDNN_TYPE_REDUCTION_OPERATOR_TYPE && count == 1) {
            d->red = *(const cudnnReduceTensorOp_t *)values;
            if (d->red != CUDNN_REDUCE_TENSOR_ADD && d->red != CUDNN_REDUCE_TENSOR_MAX) return CUDNN_STATUS_NOT_SUPPORTED;
            d->has_red = true;
        } else if (name == CUDNN_ATTR_REDUCTION_COMP_TYPE && type == CUDNN_TYPE_DATA_TYPE && count == 1) {
            d->has_comp = true;
        } else break;
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR: {
        cudnnBackendDescriptorType_t want = d->type == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR
                                                ? CUDNN_BACKEND_MATMUL_DESCRIPTOR
                                            : d->type == CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR
                                                ? CUDNN_BACKEND_POINTWISE_DESCRIPTOR
                                                : CUDNN_BACKEND_REDUCTION_DESCRIPTOR;
        switch (name) {
        case CUDNN_ATTR_OPERATION_MATMUL_ADESC: case CUDNN_ATTR_OPERATION_POINTWISE_XDESC:
        case CUDNN_ATTR_OPERATION_REDUCTION_XDESC: case CUDNN_ATTR_OPERATION_RESHAPE_XDESC:
            return set_tensor_ref(&d->x, &d->has_x, type, count, values);
        case CUDNN_ATTR_OPERATION_MATMUL_BDESC: case CUDNN_ATTR_OPERATION_POINTWISE_BDESC:
            return set_tensor_ref(&d->b, &d->has_b, type, count, values);
        case CUDNN_ATTR_OPERATION_MATMUL_CDESC: case CUDNN_ATTR_OPERATION_POINTWISE_YDESC:
        case CUDNN_ATTR_OPERATION_REDUCTION_YDESC: case CUDNN_ATTR_OPERATION_RESHAPE_YDESC:
            return set_tensor_ref(&d->y, &d->has_y, type, count, values);
        case CUDNN_ATTR_OPERATION_POINTWISE_TDESC:
            return set_tensor_ref(&d->t, &d->has_t, type, count, values);
        case CUDNN_ATTR_OPERATION_MATMUL_DESC: case CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR:
        case CUDNN_ATTR_OPERATION_REDUCTION_DESC: {
            if (type != CUDNN_TYPE_BACKEND_DESCRIPTOR || count != 1) break;
            const desc *o = *(desc *const *)values;
            if (!o || o->type != want || d->type == CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR)
                return CUDNN_STATUS_BAD_PARAM;
            if (!o->fin) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
            delete d->opcopy;
            d->opcopy = new desc(*o);
            d->op = d->opcopy;
            return CUDNN_STATUS_SUCCESS;
        }
        default: break;
        }
        return CUDNN_STATUS_BAD_PARAM;
    }
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
        if (name == CUDNN_ATTR_OPERATIONGRAPH_HANDLE && type == CUDNN_TYPE_HANDLE && count == 1) {
            if (!*(const cudnnHandle_t *)values) return CUDNN_STATUS_BAD_PARAM;
            d->has_handle = true;
            return CUDNN_STATUS_SUCCESS;
        }
        if (name == CUDNN_ATTR_OPERATIONGRAPH_OPS && type == CUDNN_TYPE_BACKEND_DESCRIPTOR && count >= 1) {
            d->ops.clear();
            for (int64_t i = 0; i < count; i++) {
                const desc *o = ((desc *const *)values)[i];
                if (!o || !is_op(o->type)) return CUDNN_STATUS_BAD_PARAM;
                if (!o->fin) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
                d->ops.push_back(*o);
            }
            return CUDNN_STATUS_SUCCESS;
        }
        break;
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
        if (name == CUDNN_ATTR_ENGINEHEUR_MODE && type == CUDNN_TYPE_HEUR_MODE && count == 1) {
            d->has_heur = true;
            return CUDNN_STATUS_SUCCESS;
        }
        if (name == CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH && type == CUDNN_TYPE_BACKEND_DESCRIPTOR && count == 1) {
            const desc *g = *(desc *const *)values;
            if (!g || g->type != CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
            if (!g->fin) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
            delete d->gcopy;
            d->gcopy = new std::vector<desc>(g->ops);
            return CUDNN_STATUS_SUCCESS;
        }
        break;
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR:
        if (name == CUDNN_ATTR_EXECUTION_PLAN_HANDLE && type == CUDNN_TYPE_HANDLE && count == 1) {
            if (!*(const cudnnHandle_t *)values) return CUDNN_STATUS_BAD_PARAM;
            d->has_handle = true;
            return CUDNN_STATUS_SUCCESS;
        }
        if (name == CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG && type == CUDNN_TYPE_BACKEND_DESCRIPTOR && count == 1) {
            const desc *c = *(desc *const *)values;
            if (!c || c->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
            if (!c->fin || !c->gcopy) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
            delete d->gcopy;
            d->gcopy = new std::vector<desc>(*c->gcopy);
            return CUDNN_STATUS_SUCCESS;
        }
        break;
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR:
        if (name == CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS && type == CUDNN_TYPE_INT64) {
            d->uids.assign(i64, i64 + count);
            d->has_uids = true;
        } else if (name == CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS && type == CUDNN_TYPE_VOID_PTR) {
            d->ptrs.assign((void *const *)values, (void *const *)values + count);
            d->has_ptrs = true;
        } else if (name == CUDNN_ATTR_VARIANT_PACK_WORKSPACE && type == CUDNN_TYPE_VOID_PTR && count == 1) {
            d->ws = *(void *const *)values;
            d->has_ws = true;
        } else break;
        return CUDNN_STATUS_SUCCESS;
    default: break;
    }
    return CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t dv) {
    desc *d = (desc *)dv;
    if (!d || d->fin) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: {
        const tensor &t = d->ten;
        if (!t.has_dt || !t.has_uid || t.nd == 0 || t.nd != t.ns || t.align <= 0) return CUDNN_STATUS_BAD_PARAM;
        for (int i = 0; i < t.nd; i++)
            if (t.dim[i] < 1 || t.str[i] < 1) return CUDNN_STATUS_BAD_PARAM;
        if (t.virt && t.byval) return CUDNN_STATUS_BAD_PARAM;
        d->ten.fin = true;
        break;
    }
    case CUDNN_BACKEND_MATMUL_DESCRIPTOR: if (!d->has_comp) return CUDNN_STATUS_BAD_PARAM; break;
    case CUDNN_BACKEND_POINTWISE_DESCRIPTOR:
        if (!d->has_mode || !d->has_comp || (d->mode == CUDNN_POINTWISE_GEN_INDEX && !d->has_axis))
            return CUDNN_STATUS_BAD_PARAM;
        break;
    case CUDNN_BACKEND_REDUCTION_DESCRIPTOR: if (!d->has_red || !d->has_comp) return CUDNN_STATUS_BAD_PARAM; break;
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: st = finalize_graph(d); break;
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: if (!d->has_heur || !d->gcopy) return CUDNN_STATUS_BAD_PARAM; break;
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR: return CUDNN_STATUS_BAD_PARAM; /* only heuristics make them */
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR:
        if (!d->has_handle || !d->gcopy) return CUDNN_STATUS_BAD_PARAM;
        if (!supported(*d->gcopy)) return CUDNN_STATUS_NOT_SUPPORTED;
        break;
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR:
        if (!d->has_uids || !d->has_ptrs || !d->has_ws || d->uids.size() != d->ptrs.size())
            return CUDNN_STATUS_BAD_PARAM;
        break;
    default: st = finalize_op(d); break;
    }
    if (st == CUDNN_STATUS_SUCCESS) d->fin = true;
    return st;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const dv, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t *count,
                                       void *values) {
    desc *d = (desc *)dv;
    if (!d || !d->fin) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    if (d->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR && name == CUDNN_ATTR_ENGINEHEUR_RESULTS &&
        type == CUDNN_TYPE_BACKEND_DESCRIPTOR) {
        /* one engine configuration: the emulated engine */
        if (count) *count = 1;
        if (requested < 1 || !values) return CUDNN_STATUS_SUCCESS;
        desc *c = ((desc **)values)[0];
        if (!c || c->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
        delete c->gcopy;
        c->gcopy = new std::vector<desc>(*d->gcopy);
        c->fin = true;
        return CUDNN_STATUS_SUCCESS;
    }
    if (d->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR && name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE &&
        type == CUDNN_TYPE_INT64 && requested >= 1 && values) {
        *(int64_t *)values = WORKSPACE_BYTES;
        if (count) *count = 1;
        return CUDNN_STATUS_SUCCESS;
    }
    return CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t planv, cudnnBackendDescriptor_t packv) {
    const desc *plan = (const desc *)planv, *pack = (const desc *)packv;
    if (!handle || !plan || !pack || plan->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR ||
        pack->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)
        return CUDNN_STATUS_BAD_PARAM;
    if (!plan->fin || !pack->fin) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    if (!tcu_emu_is_device(pack->ws, (size_t)WORKSPACE_BYTES)) return CUDNN_STATUS_BAD_PARAM;
    const char *fail = getenv("TOCHA_EMU_CUDNN_FAIL_EXECUTE"); /* a failure at execute, to test its fallback */
    if (fail && !strcmp(fail, "1")) return CUDNN_STATUS_EXECUTION_FAILED;
    run_ctx *r = new run_ctx{*plan->gcopy, {}, {}};
    for (size_t i = 0; i < pack->uids.size(); i++) r->ptr[pack->uids[i]] = pack->ptrs[i];
    for (const desc &o : r->ops) { /* every non-virtual tensor has its buffer, in device memory (host: by value) */
        std::vector<const tensor *> ts = inputs_of(o);
        ts.push_back(&o.y);
        for (const tensor *t : ts) {
            if (t->virt) continue;
            auto it = r->ptr.find(t->uid);
            bool ok = it != r->ptr.end() && it->second &&
                      (t->byval ? !tcu_emu_is_device(it->second, 1)
                                : tcu_emu_is_device(it->second, (size_t)extent(*t) * dt_size(t->dt)));
            if (!ok || (t->byval && numel(*t) != 1)) {
                delete r;
                return CUDNN_STATUS_BAD_PARAM;
            }
        }
    }
    for (const desc &o : r->ops)
        for (const tensor *t : inputs_of(o))
            if (t->byval) r->byval[t->uid] = load(r->ptr[t->uid], t->dt, 0);
    cudaStream_t s = tcu_emu_cudnn_stream(handle);
    if (!tcu_emu_capturing(s)) {
        execute(*r);
        delete r;
        return CUDNN_STATUS_SUCCESS;
    }
    tcu_emu_record(s, dim3(0), dim3(1), 0, run_recorded, r, free_recorded); /* run at each graph launch */
    return cudaPeekAtLastError() == cudaErrorStreamCaptureInvalidated ? CUDNN_STATUS_EXECUTION_FAILED
                                                                      : CUDNN_STATUS_SUCCESS;
}
