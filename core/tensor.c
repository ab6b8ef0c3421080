/* tensor.c: errors, dtypes (and element load/store), devices, refcounted storage and
 * tensor headers. A tensor is storage + dtype + shape + strides + offset; views share
 * storage. Nothing here runs an op: the factories that fill tensors are factories.c, the
 * view ops ops/view.c. */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

/* ---- errors ------------------------------------------------------------------- */
static _Thread_local char last_error[1024];

int tc_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return TC_ERR;
}

const char *tc_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

/* ---- ops ---------------------------------------------------------------------- */
#define TC_OP_NAME_(name, str) str,
static const char *const op_names[] = {TC_OP_LIST(TC_OP_NAME_)};
#undef TC_OP_NAME_
_Static_assert(sizeof op_names / sizeof op_names[0] == TC_OP_COUNT, "op name table out of sync");

const char *tc_op_name(tc_op op) { return (unsigned)op < TC_OP_COUNT ? op_names[op] : "?"; }

/* ---- dtypes ------------------------------------------------------------------- */
static const struct { const char *name; size_t size; bool is_float; } dtypes[] = {
    [TC_F32] = {"f32", 4, true},  [TC_F64] = {"f64", 8, true}, [TC_F16] = {"f16", 2, true},
    [TC_BF16] = {"bf16", 2, true}, [TC_I32] = {"i32", 4, false}, [TC_I64] = {"i64", 8, false},
    [TC_U8] = {"u8", 1, false},   [TC_BOOL] = {"bool", 1, false},
};
_Static_assert(sizeof dtypes / sizeof dtypes[0] == TC_NDTYPES, "dtype table out of sync");

const char *tc_dtype_name(tc_dtype dt) { return (unsigned)dt < TC_NDTYPES ? dtypes[dt].name : "?"; }
size_t tc_dtype_size(tc_dtype dt) { return dtypes[dt].size; }
bool tc_dtype_is_float(tc_dtype dt) { return dtypes[dt].is_float; }

int tc_dtype_from_name(const char *name) {
    for (int i = 0; i < TC_NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) return i;
    return -1;
}

/* PyTorch's rule for tensor-tensor ops: floats beat ints; among floats the wider wins
 * (f16 with bf16 gives f32); among ints the wider wins; bool loses to everything. */
tc_dtype tc_promote(tc_dtype a, tc_dtype b) {
    if (a == b) return a;
    bool fa = tc_dtype_is_float(a), fb = tc_dtype_is_float(b);
    if (fa && !fb) return a;
    if (fb && !fa) return b;
    if (fa) {
        if (a == TC_F64 || b == TC_F64) return TC_F64;
        return TC_F32; /* any other mix of f32, f16, bf16 */
    }
    static const int rank[] = {[TC_BOOL] = 0, [TC_U8] = 1, [TC_I32] = 2, [TC_I64] = 3};
    return rank[a] > rank[b] ? a : b;
}

/* ---- devices ------------------------------------------------------------------ */
const tc_device TC_DEV_CPU = {TC_CPU, 0};

int tc_device_parse(const char *s, tc_device *out) {
    if (strcmp(s, "cpu") == 0) { *out = TC_DEV_CPU; return TC_OK; }
    if (strncmp(s, "cuda", 4) == 0) {
        out->type = TC_CUDA;
        out->index = 0;
        if (s[4] == 0) return TC_OK;
        char *end;
        long i = s[4] == ':' ? strtol(s + 5, &end, 10) : -1;
        if (i >= 0 && s[5] != 0 && *end == 0) { out->index = (int)i; return TC_OK; }
    }
    return tc_error("unknown device '%s' (expected \"cpu\", \"cuda\" or \"cuda:N\")", s);
}

void tc_device_str(tc_device d, char *buf, size_t n) {
    if (d.type == TC_CPU) snprintf(buf, n, "cpu");
    else snprintf(buf, n, "cuda:%d", d.index);
}

bool tc_device_eq(tc_device a, tc_device b) { return a.type == b.type && a.index == b.index; }

/* ---- half precision ------------------------------------------------------------- */
float tc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000 | (man << 13);            /* inf, nan */
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13); /* normal */
    else if (man == 0) bits = sign;                                      /* zero */
    else {                                                               /* subnormal */
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tc_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0); /* inf, nan */
    if (ax >= 0x477ff000) return sign | 0x7c00;                               /* overflow */
    if (ax < 0x38800000) {                                                    /* subnormal */
        float a;
        memcpy(&a, &ax, 4);
        return sign | (uint16_t)lrintf(a * 16777216.0f); /* 2^24, ties to even */
    }
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1); /* round to nearest even */
    return sign | (uint16_t)((r - 0x38000000) >> 13);
}

float tc_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tc_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ---- elements of any dtype, through double ------------------------------------------ */
double tc_load(const void *p, tc_dtype dt) {
    switch (dt) {
    case TC_F32: return *(const float *)p;
    case TC_F64: return *(const double *)p;
    case TC_F16: return tc_f16_to_f32(*(const uint16_t *)p);
    case TC_BF16: return tc_bf16_to_f32(*(const uint16_t *)p);
    case TC_I32: return *(const int32_t *)p;
    case TC_I64: return (double)*(const int64_t *)p;
    case TC_U8: return *(const uint8_t *)p;
    case TC_BOOL: return *(const uint8_t *)p != 0;
    default: return 0;
    }
}

/* float to integer by truncation, as a C cast, but total: NaN gives 0 and values out of
 * range saturate, where the cast would be undefined behaviour */
static int64_t to_i64(double v) {
    if (v != v) return 0;
    if (v >= 0x1p63) return INT64_MAX;
    if (v < -0x1p63) return INT64_MIN;
    return (int64_t)v;
}

static int32_t to_i32(double v) {
    int64_t i = to_i64(v);
    return i > INT32_MAX ? INT32_MAX : i < INT32_MIN ? INT32_MIN : (int32_t)i;
}

void tc_store(void *p, tc_dtype dt, double v) {
    switch (dt) {
    case TC_F32: *(float *)p = (float)v; break;
    case TC_F64: *(double *)p = v; break;
    case TC_F16: *(uint16_t *)p = tc_f32_to_f16((float)v); break;
    case TC_BF16: *(uint16_t *)p = tc_f32_to_bf16((float)v); break;
    case TC_I32: *(int32_t *)p = to_i32(v); break;
    case TC_I64: *(int64_t *)p = to_i64(v); break;
    case TC_U8: *(uint8_t *)p = (uint8_t)to_i64(v); break; /* wraps modulo 256, as PyTorch */
    case TC_BOOL: *(uint8_t *)p = v != 0; break;
    default: break;
    }
}

/* ---- storage ------------------------------------------------------------------- */
static size_t mem_total, mem_in_use;

size_t tc_mem_allocated_total(void) { return __atomic_load_n(&mem_total, __ATOMIC_RELAXED); }
size_t tc_mem_in_use(void) { return __atomic_load_n(&mem_in_use, __ATOMIC_RELAXED); }

/* ---- the small-object cache ------------------------------------------------------------
 * Tensor headers, and the storage of small tensors with their data inline (up to 256 bytes),
 * are recycled through per-thread free lists. A chain of small ops then calls malloc not at
 * all, where glibc otherwise spent a third of a 16-element add consolidating the chunks a
 * Lua collection frees in bulk. Sanitizer builds keep the lists empty so ASan sees every free. */
#define SMALL_BYTES 256
#if defined(__SANITIZE_ADDRESS__)
#define CACHE_MAX 0
#else
#define CACHE_MAX 1024
#endif

typedef struct free_node { struct free_node *next; } free_node;
typedef struct { free_node *head; int n; } free_list;
static _Thread_local free_list tensor_cache, storage_cache;

typedef struct {
    tc_storage s;
    _Alignas(64) unsigned char data[SMALL_BYTES];
} small_storage;

static void *cache_pop(free_list *l) {
    free_node *n = l->head;
    if (n) { l->head = n->next; l->n--; }
    return n;
}

static void cache_push(free_list *l, void *p) {
    if (l->n >= CACHE_MAX) { free(p); return; }
    free_node *n = p;
    n->next = l->head;
    l->head = n;
    l->n++;
}

/* a small storage's data sits right behind its header, in the same block */
static bool is_small(const tc_storage *s) {
    return (const unsigned char *)s->data == (const unsigned char *)s + offsetof(small_storage, data);
}

tc_storage *tc_storage_new(size_t nbytes, tc_device dev) {
    const tc_kernels *k = tc_kern(dev);
    if (!k) return NULL;
    tc_storage *s;
    if (dev.type == TC_CPU && nbytes <= SMALL_BYTES) {
        small_storage *ss = cache_pop(&storage_cache);
        if (!ss) ss = aligned_alloc(_Alignof(small_storage), sizeof *ss);
        if (!ss) { tc_error("out of memory"); return NULL; }
        memset(&ss->s, 0, sizeof ss->s);
        s = &ss->s;
        s->data = ss->data;
    } else {
        s = calloc(1, sizeof *s);
        if (!s) { tc_error("out of memory"); return NULL; }
        s->data = k->alloc(nbytes ? nbytes : 1);
        if (!s->data) {
            free(s);
            if (dev.type == TC_CPU) tc_error("out of memory allocating %zu bytes", nbytes); /* cuda says more */
            return NULL;
        }
    }
    s->refcount = 1;
    s->nbytes = nbytes;
    s->device = dev;
    /* the pacing total also charges what a tensor costs besides its data (its header, its
     * storage, its Lua userdata), so a loop of tiny tensors is collected often enough too */
    __atomic_add_fetch(&mem_total, nbytes + 512, __ATOMIC_RELAXED);
    __atomic_add_fetch(&mem_in_use, nbytes, __ATOMIC_RELAXED);
    return s;
}

tc_storage *tc_storage_wrap(void *data, size_t nbytes, void (*release)(void *), void *ctx) {
    tc_storage *s = calloc(1, sizeof *s);
    if (!s) { tc_error("out of memory"); return NULL; }
    s->refcount = 1;
    s->data = data;
    s->nbytes = nbytes;
    s->device = TC_DEV_CPU;
    s->release = release;
    s->release_ctx = ctx;
    return s;
}

void tc_storage_retain(tc_storage *s) { __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED); }

void tc_storage_release(tc_storage *s) {
    if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    if (s->release) {
        s->release(s->release_ctx);
        free(s);
        return;
    }
    __atomic_sub_fetch(&mem_in_use, s->nbytes, __ATOMIC_RELAXED);
    if (is_small(s)) { cache_push(&storage_cache, s); return; } /* s is a small_storage's first member */
    tc_kern(s->device)->free(s->data);
    free(s);
}

/* ---- tensors ----------------------------------------------------------------------- */
tc_tensor *tc_tensor_make(tc_storage *s, tc_dtype dt, int ndim, const int64_t *shape,
                          const int64_t *stride, int64_t offset) {
    tc_tensor *t = cache_pop(&tensor_cache);
    if (!t) t = malloc(sizeof *t);
    if (!t) { tc_error("out of memory"); return NULL; }
    memset(t, 0, sizeof *t);
    t->refcount = 1;
    t->storage = s;
    tc_storage_retain(s);
    t->dtype = dt;
    t->ndim = ndim;
    t->offset = offset;
    int64_t st = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = stride ? stride[i] : st;
        st *= shape[i];
    }
    return t;
}

tc_tensor *tc_tensor_retain(tc_tensor *t) {
    __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
    return t;
}

void tc_tensor_release(tc_tensor *t) {
    if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    tc_storage_release(t->storage);
    tc_tensor_release(t->grad);
    tc_node_release(t->grad_fn);
    cache_push(&tensor_cache, t);
}

int64_t tc_shape_numel(int ndim, const int64_t *shape) {
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) return 0; /* before a product of the other sizes could overflow */
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int64_t tc_numel(const tc_tensor *t) { return tc_shape_numel(t->ndim, t->shape); }

bool tc_is_contiguous(const tc_tensor *t) {
    int64_t st = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != st) return false;
        st *= t->shape[i];
    }
    return true;
}

void *tc_data(const tc_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)tc_dtype_size(t->dtype);
}

int tc_wrap_dim(int dim, int ndim, const char *op) {
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n)
        return tc_error("%s: dimension %d out of range for a %d-d tensor", op,
                        dim < 0 ? dim : dim + 1, ndim);
    return dim < 0 ? dim + n : dim;
}

void tc_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, i ? " x %lld" : "%lld", (long long)shape[i]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

bool tc_same_shape(const tc_tensor *a, const tc_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

int tc_check_same_device(const char *op, tc_tensor *a, tc_tensor *b) {
    if (tc_device_eq(a->storage->device, b->storage->device)) return TC_OK;
    char da[16], db[16];
    tc_device_str(a->storage->device, da, sizeof da);
    tc_device_str(b->storage->device, db, sizeof db);
    return tc_error("%s: tensors on different devices (%s and %s)", op, da, db);
}

tc_tensor *tc_alias(tc_tensor *x) {
    tc_tensor *t = tc_tensor_make(x->storage, x->dtype, x->ndim, x->shape, x->stride, x->offset);
    if (t) t->is_view = x->is_view;
    return t;
}

/* ---- empty tensors ------------------------------------------------------------------ */
int64_t tc_checked_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    bool empty = false;
    for (int i = 0; i < ndim; i++) {
        empty |= shape[i] == 0;
        if (__builtin_mul_overflow(n, shape[i] ? shape[i] : 1, &n)) return -1;
    }
    return empty ? 0 : n;
}

tc_tensor *tc_empty(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev) {
    if (ndim < 0 || ndim > TC_MAX_DIMS) {
        tc_error("tensors have at most %d dimensions (asked for %d)", TC_MAX_DIMS, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            tc_error("negative dimension %lld in a shape", (long long)shape[i]);
            return NULL;
        }
    int64_t n = tc_checked_numel(ndim, shape), nbytes;
    if (n < 0 || __builtin_mul_overflow(n, (int64_t)tc_dtype_size(dt), &nbytes)) {
        char sh[160];
        tc_shape_str(ndim, shape, sh, sizeof sh);
        tc_error("a tensor of shape %s is too large", sh);
        return NULL;
    }
    tc_storage *s = tc_storage_new((size_t)nbytes, dev);
    if (!s) return NULL;
    tc_tensor *t = tc_tensor_make(s, dt, ndim, shape, NULL, 0);
    tc_storage_release(s);
    return t;
}

/* ---- memory formats --------------------------------------------------------------- */
/* channels-last strides: C innermost, then W, H, N; size-1 dims' strides do not matter */
static bool is_channels_last(const tc_tensor *t) {
    if (t->ndim != 4) return false;
    static const int order[4] = {1, 3, 2, 0};
    int64_t st = 1;
    for (int i = 0; i < 4; i++) {
        int d = order[i];
        if (t->shape[d] != 1 && t->stride[d] != st) return false;
        st *= t->shape[d];
    }
    return true;
}

bool tc_is_contiguous_format(const tc_tensor *t, tc_memory_format f) {
    return f == TC_CHANNELS_LAST ? is_channels_last(t) : tc_is_contiguous(t);
}

tc_memory_format tc_suggest_format(const tc_tensor *x) {
    return is_channels_last(x) && !tc_is_contiguous(x) ? TC_CHANNELS_LAST : TC_CONTIGUOUS_FORMAT;
}

tc_tensor *tc_empty_format(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev, tc_memory_format f) {
    if (f == TC_CONTIGUOUS_FORMAT) return tc_empty(ndim, shape, dt, dev);
    if (ndim != 4) {
        char sh[160];
        tc_shape_str(ndim, shape, sh, sizeof sh);
        tc_error("channels_last needs a 4-d shape [N, C, H, W], got %s", sh);
        return NULL;
    }
    tc_tensor *t = tc_empty(ndim, shape, dt, dev);
    if (!t) return NULL;
    int64_t C = shape[1] ? shape[1] : 1, W = shape[3] ? shape[3] : 1, H = shape[2] ? shape[2] : 1;
    t->stride[1] = 1;
    t->stride[3] = C;
    t->stride[2] = W * C;
    t->stride[0] = H * W * C;
    return t;
}

tc_tensor *tc_empty_like(const tc_tensor *x, tc_dtype dt) {
    return tc_empty(x->ndim, x->shape, dt, x->storage->device);
}

double tc_get(const tc_tensor *t, const int64_t *index) {
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) off += index[i] * t->stride[i];
    return tc_load((const char *)tc_data(t) + off * (int64_t)tc_dtype_size(t->dtype), t->dtype);
}
