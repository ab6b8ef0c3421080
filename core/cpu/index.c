/* index.c (cpu): the indexing kernels: index_select and gather read through an index
 * ("take"), index_add and scatter_add accumulate through one ("put"). All four are one
 * walk over strided views; index values are 1-based, i64 or i32, and checked first. */
#include "cpu.h"

/* Operands of a walk, all of the iteration shape: 0 the destination, 1 the index, 2 the
 * source. The indexed operand (the source for take, the destination for put) has stride 0
 * along the indexed dim and moves by (index - 1) * jump instead. */
typedef struct {
    tc_dtype dt;       /* element dtype of destination and source */
    bool idx32;        /* index is i32 (else i64) */
    int64_t jump;      /* stride of the indexed dim in the indexed operand */
    int64_t n;         /* put only: length of the indexed dim in the walk */
    int64_t step[3];   /* put only: each operand's stride along the indexed dim */
} walk_ctx;

static inline int64_t load_index(const char *p, bool idx32) {
    return idx32 ? *(const int32_t *)p : *(const int64_t *)p;
}

/* a header over t's storage with the given shape and strides (no copy, no autograd) */
static tc_tensor *strided(const tc_tensor *t, int ndim, const int64_t *shape, const int64_t *stride) {
    return tc_tensor_make(t->storage, t->dtype, ndim, shape, stride, t->offset);
}

/* ---- index check --------------------------------------------------------------------- */
typedef struct { bool idx32; int64_t limit, bad; int found; } check_ctx;

static void check_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    check_ctx *c = vctx;
    int64_t es = c->idx32 ? 4 : 8;
    for (int64_t i = 0; i < n; i++) {
        int64_t ix = load_index(p[0] + i * st[0] * es, c->idx32);
        if (ix < 1 || ix > c->limit) {
            __atomic_store_n(&c->bad, ix, __ATOMIC_RELAXED);
            __atomic_store_n(&c->found, 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

/* every value of idx in [1, limit], or an error naming one that is not */
static int check_index(const tc_tensor *idx, int dim, int64_t limit) {
    const tc_tensor *ts[1] = {idx};
    tc_iter it;
    tc_iter_init(&it, 1, ts);
    check_ctx c = {idx->dtype == TC_I32, limit, 0, 0};
    tc_iter_run(&it, check_run, &c);
    if (!c.found) return TC_OK;
    return tc_error("index %lld is out of range for dimension %d of size %lld%s", (long long)c.bad, dim + 1,
                    (long long)limit, c.bad == 0 ? " (indices are 1-based)" : "");
}

/* ---- take: dst[p] = src[p + (idx[p] - 1) * jump] ---------------------------------------- */
#define TAKE_LOOP(E)                                                                          \
    for (int64_t i = 0; i < n; i++) {                                                         \
        int64_t ix = load_index(p[1] + i * st[1] * ie, c->idx32) - 1;                         \
        ((E *)p[0])[i * st[0]] = ((const E *)p[2])[i * st[2] + ix * c->jump];               \
    }

static void take_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    walk_ctx *c = vctx;
    int64_t ie = c->idx32 ? 4 : 8;
    switch (tc_dtype_size(c->dt)) { /* a move of bytes: the dtype's size is all that matters */
    case 1: TAKE_LOOP(uint8_t) break;
    case 2: TAKE_LOOP(uint16_t) break;
    case 4: TAKE_LOOP(uint32_t) break;
    default: TAKE_LOOP(uint64_t) break;
    }
}

/* the iteration has shape[]; dst and idx are walked with their own strides (idx_st),
 * src with its strides except 0 along dim */
static int take(tc_tensor *dst, const tc_tensor *src, int dim, const tc_tensor *idx, const int64_t *idx_st) {
    int nd = dst->ndim;
    int64_t sst[TC_MAX_DIMS];
    memcpy(sst, src->stride, sizeof sst);
    sst[dim] = 0;
    tc_tensor *iv = strided(idx, nd, dst->shape, idx_st);
    tc_tensor *sv = strided(src, nd, dst->shape, sst);
    if (iv && sv) {
        const tc_tensor *ts[3] = {dst, iv, sv};
        tc_iter it;
        tc_iter_init(&it, 3, ts);
        walk_ctx c = {.dt = dst->dtype, .idx32 = idx->dtype == TC_I32, .jump = src->stride[dim]};
        tc_iter_run(&it, take_run, &c);
    }
    tc_tensor_release(iv);
    tc_tensor_release(sv);
    return iv && sv ? TC_OK : TC_ERR;
}

/* ---- put: dst[p + (idx[p] - 1) * jump] += src[p] ------------------------------------------
 * Two positions that differ only along the indexed dim may hit the same element, so the
 * walk runs over the other dims (split across threads as usual) and each run loops over
 * the indexed dim itself, in order: no two threads ever touch one element, and the sums
 * come out the same on every run. */
#define PUT_LOOP(E, V, LOAD, ACC)                                                             \
    for (int64_t j = 0; j < c->n; j++) {                                                      \
        char *d = p[0], *x = p[1] + j * c->step[1] * ie, *s = p[2] + j * c->step[2] * es;   \
        for (int64_t i = 0; i < n; i++) {                                                     \
            int64_t ix = load_index(x + i * st[1] * ie, c->idx32) - 1;                        \
            E *dp = (E *)(d + (i * st[0] + ix * c->jump) * es);                                \
            V v = LOAD((const E *)(s + i * st[2] * es));                                      \
            ACC(dp, v);                                                                       \
        }                                                                                     \
    }
#define LD_(q) (*(q))
#define ADD_(q, v) (*(q) += (v))
#define LD_HALF_(q) tc_load(q, c->dt)
#define ADD_HALF_(q, v) tc_store(q, c->dt, tc_load(q, c->dt) + (v))
#define ADD_BOOL_(q, v) (*(q) = (uint8_t)(*(q) || (v)))

static void put_run(int64_t n, char **p, const int64_t *st, void *vctx) {
    walk_ctx *c = vctx;
    int64_t ie = c->idx32 ? 4 : 8, es = (int64_t)tc_dtype_size(c->dt);
    switch (c->dt) {
    case TC_F32: PUT_LOOP(float, float, LD_, ADD_) break;
    case TC_F64: PUT_LOOP(double, double, LD_, ADD_) break;
    case TC_I32: PUT_LOOP(int32_t, int32_t, LD_, ADD_) break;
    case TC_I64: PUT_LOOP(int64_t, int64_t, LD_, ADD_) break;
    case TC_U8: PUT_LOOP(uint8_t, uint8_t, LD_, ADD_) break;
    case TC_BOOL: PUT_LOOP(uint8_t, uint8_t, LD_, ADD_BOOL_) break;
    default: PUT_LOOP(uint16_t, double, LD_HALF_, ADD_HALF_) break; /* f16, bf16 */
    }
}

/* shape[] is the iteration shape (src's, or idx's for scatter); dst is walked with its
 * strides except along dim; idx with idx_st; src with its own strides */
static int put(tc_tensor *dst, int dim, const tc_tensor *idx, const int64_t *idx_st, const tc_tensor *src,
               const int64_t *shape, int nd) {
    /* the walk over every dim but `dim` */
    int64_t rsh[TC_MAX_DIMS], rst[3][TC_MAX_DIMS];
    int r = 0;
    for (int d = 0; d < nd; d++) {
        if (d == dim) continue;
        rsh[r] = shape[d];
        rst[0][r] = dst->stride[d];
        rst[1][r] = idx_st[d];
        rst[2][r] = src->stride[d];
        r++;
    }
    tc_tensor *dv = strided(dst, r, rsh, rst[0]);
    tc_tensor *iv = strided(idx, r, rsh, rst[1]);
    tc_tensor *sv = strided(src, r, rsh, rst[2]);
    if (dv && iv && sv) {
        const tc_tensor *ts[3] = {dv, iv, sv};
        tc_iter it;
        tc_iter_init(&it, 3, ts);
        walk_ctx c = {.dt = dst->dtype, .idx32 = idx->dtype == TC_I32, .jump = dst->stride[dim],
                      .n = shape[dim], .step = {0, idx_st[dim], src->stride[dim]}};
        tc_iter_run(&it, put_run, &c);
    }
    tc_tensor_release(dv);
    tc_tensor_release(iv);
    tc_tensor_release(sv);
    return dv && iv && sv ? TC_OK : TC_ERR;
}

/* ---- the four kernels -------------------------------------------------------------------- */
/* strides that walk a 1-d index along dim of an nd-dim iteration, and stand still elsewhere */
static void index_strides(const tc_tensor *idx, int dim, int nd, int64_t *st) {
    for (int d = 0; d < nd; d++) st[d] = 0;
    st[dim] = idx->ndim ? idx->stride[0] : 0;
}

/* out = x with dim narrowed to idx's entries; idx 1-d */
int tc_cpu_index_select(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx) {
    if (check_index(idx, dim, x->shape[dim]) != TC_OK) return TC_ERR;
    if (tc_numel(out) == 0) return TC_OK;
    int64_t ist[TC_MAX_DIMS];
    index_strides(idx, dim, out->ndim, ist);
    return take(out, x, dim, idx, ist);
}

/* out[j at dim] += src[i at dim] for i, with j = idx[i]; idx 1-d, src shaped like out but
 * idx's length along dim */
int tc_cpu_index_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src) {
    if (check_index(idx, dim, out->shape[dim]) != TC_OK) return TC_ERR;
    if (tc_numel(src) == 0) return TC_OK;
    int64_t ist[TC_MAX_DIMS];
    index_strides(idx, dim, src->ndim, ist);
    return put(out, dim, idx, ist, src, src->shape, src->ndim);
}

/* out has idx's shape; x is at least as large as idx in every dim but dim */
int tc_cpu_gather(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx) {
    if (check_index(idx, dim, x->shape[dim]) != TC_OK) return TC_ERR;
    if (tc_numel(out) == 0) return TC_OK;
    return take(out, x, dim, idx, idx->stride);
}

/* out[.. idx[p] at dim ..] += src[p] for every position p of idx; src and out are at least
 * as large as idx (out: in every dim but dim) */
int tc_cpu_scatter_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src) {
    if (check_index(idx, dim, out->shape[dim]) != TC_OK) return TC_ERR;
    if (tc_numel(idx) == 0) return TC_OK;
    return put(out, dim, idx, idx->stride, src, idx->shape, idx->ndim);
}
