/* test_core.c: C unit tests of the engine core: storage and tensor lifetimes, view strides,
 * half-precision conversions, the Philox generator against known answers, broadcasting and
 * error messages, graphs too deep to free recursively, and the error of the CPU's vectorised f32
 * math (the ops' forward and derivative against the f64 ones, in ulps), and the CPU's caching
 * allocator under threads. Prints "N passed, N failed" last. */
#include "cpu/cpu.h"
#include "kernels.h"
#include "tocha.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) passed++;                                                            \
        else { failed++; printf("FAIL  %s:%d: %s\n", __FILE__, __LINE__, #cond); }     \
    } while (0)

/* the last error contains want */
#define CHECK_ERR(want) CHECK(strstr(tc_last_error(), want) != NULL)

static tc_tensor *zeros(int ndim, const int64_t *shape) { return tc_zeros(ndim, shape, TC_F32, TC_DEV_CPU); }

static bool f32_bits_eq(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ---- storage and tensor lifetimes ------------------------------------------------------ */
static void test_refcounts(void) {
    size_t base = tc_mem_in_use();
    int64_t sh[2] = {4, 6};
    tc_tensor *x = zeros(2, sh);
    CHECK(x && x->refcount == 1 && x->storage->refcount == 1);
    CHECK(tc_mem_in_use() == base + 4 * 6 * sizeof(float));
    tc_tensor *t = tc_transpose(x, 0, 1);
    CHECK(t && t->storage == x->storage && x->storage->refcount == 2 && t->is_view);
    tc_tensor_release(x); /* the view keeps the storage alive */
    CHECK(t->storage->refcount == 1 && tc_mem_in_use() == base + 4 * 6 * sizeof(float));
    CHECK(tc_get(t, (int64_t[]){5, 3}) == 0);
    tc_tensor_retain(t);
    CHECK(t->refcount == 2);
    tc_tensor_release(t);
    tc_tensor_release(t);
    CHECK(tc_mem_in_use() == base);
    CHECK(tc_mem_allocated_total() >= 4 * 6 * sizeof(float));
    tc_tensor_release(NULL); /* a no-op, like free(NULL) */
}

/* a borrowed buffer is handed back through its release function, once */
static int released_count;
static void count_release(void *ctx) { released_count += *(int *)ctx; }

static void test_wrapped_storage(void) {
    float data[6] = {1, 2, 3, 4, 5, 6};
    int one = 1;
    tc_storage *s = tc_storage_wrap(data, sizeof data, count_release, &one);
    tc_tensor *t = tc_tensor_make(s, TC_F32, 2, (int64_t[]){2, 3}, NULL, 0);
    tc_storage_release(s);
    CHECK(t && tc_get(t, (int64_t[]){1, 2}) == 6 && t->stride[0] == 3 && t->stride[1] == 1);
    tc_tensor *v = tc_narrow(t, 1, 1, 2);
    tc_tensor_release(t);
    CHECK(released_count == 0 && v && tc_get(v, (int64_t[]){1, 0}) == 5);
    tc_tensor_release(v);
    CHECK(released_count == 1);
}

/* ---- view strides ----------------------------------------------------------------------- */
static bool strides_are(const tc_tensor *t, int n, const int64_t *st) {
    if (!t || t->ndim != n) return false;
    for (int i = 0; i < n; i++)
        if (t->shape[i] != 1 && t->stride[i] != st[i]) return false;
    return true;
}

static void test_view_strides(void) {
    tc_tensor *x = zeros(3, (int64_t[]){2, 3, 4});
    tc_tensor *v = tc_view(x, 2, (int64_t[]){6, 4});
    CHECK(strides_are(v, 2, (int64_t[]){4, 1}) && v->storage == x->storage);
    tc_tensor_release(v);
    v = tc_view(x, 3, (int64_t[]){4, -1, 2}); /* -1 inferred */
    CHECK(v && v->shape[1] == 3 && strides_are(v, 3, (int64_t[]){6, 2, 1}));
    tc_tensor_release(v);

    /* a transposed tensor: splitting or merging its own dims is fine, mixing them is not */
    tc_tensor *t = tc_transpose(x, 1, 2); /* [2, 4, 3] strides [12, 1, 4] */
    v = tc_view(t, 4, (int64_t[]){2, 2, 2, 3});
    CHECK(strides_are(v, 4, (int64_t[]){12, 2, 1, 4}));
    tc_tensor_release(v);
    CHECK(tc_view(t, 2, (int64_t[]){2, 12}) == NULL);
    CHECK_ERR("view: the tensor's strides are incompatible");
    v = tc_view(t, 3, (int64_t[]){2, 4, 3}); /* the same shape: always a view */
    CHECK(strides_are(v, 3, (int64_t[]){12, 1, 4}));
    tc_tensor_release(v);
    v = tc_reshape(t, 2, (int64_t[]){2, 12}); /* reshape copies instead */
    CHECK(v && v->storage != x->storage && tc_is_contiguous(v));
    tc_tensor_release(v);

    /* size-1 dims carry any stride and may be added or dropped freely */
    v = tc_view(t, 5, (int64_t[]){1, 2, 4, 1, 3});
    CHECK(strides_are(v, 5, (int64_t[]){0, 12, 1, 0, 4}));
    tc_tensor_release(v);

    /* narrowing the last dim breaks the merge of the last two dims, not of the first two */
    tc_tensor *n = tc_narrow(x, 2, 1, 2); /* [2, 3, 2] strides [12, 4, 1] offset 1 */
    v = tc_view(n, 2, (int64_t[]){6, 2});
    CHECK(strides_are(v, 2, (int64_t[]){4, 1}) && v->offset == 1);
    tc_tensor_release(v);
    CHECK(tc_view(n, 2, (int64_t[]){2, 6}) == NULL);
    tc_tensor_release(n);

    /* an expanded (stride 0) dim can be split but not merged with a real one */
    tc_tensor *row = zeros(1, (int64_t[]){3});
    tc_tensor *e = tc_expand(row, 2, (int64_t[]){4, 3}); /* strides [0, 1] */
    v = tc_view(e, 3, (int64_t[]){2, 2, 3});
    CHECK(strides_are(v, 3, (int64_t[]){0, 0, 1}));
    tc_tensor_release(v);
    CHECK(tc_view(e, 1, (int64_t[]){12}) == NULL);
    tc_tensor_release(e);
    tc_tensor_release(row);

    /* 0-d and empty tensors */
    tc_tensor *s = tc_scalar_tensor(3, TC_F32, TC_DEV_CPU);
    v = tc_view(s, 2, (int64_t[]){1, 1});
    CHECK(v && v->ndim == 2 && tc_get(v, (int64_t[]){0, 0}) == 3);
    tc_tensor_release(v);
    v = tc_view(s, 0, NULL);
    CHECK(v && v->ndim == 0);
    tc_tensor_release(v);
    tc_tensor_release(s);
    tc_tensor *z = zeros(2, (int64_t[]){0, 5});
    v = tc_view(z, 3, (int64_t[]){5, 0, 7});
    CHECK(v && v->shape[1] == 0);
    tc_tensor_release(v);
    v = tc_view(z, 1, (int64_t[]){-1});
    CHECK(v && v->ndim == 1 && v->shape[0] == 0);
    tc_tensor_release(v);
    CHECK(tc_view(z, 2, (int64_t[]){-1, 0}) == NULL); /* -1 next to a 0 is ambiguous */
    tc_tensor_release(z);

    /* bad shapes */
    CHECK(tc_view(x, 2, (int64_t[]){5, 5}) == NULL);
    CHECK_ERR("view: shape [5 x 5] is invalid for a tensor of shape [2 x 3 x 4] (24 elements)");
    CHECK(tc_view(x, 2, (int64_t[]){-1, -1}) == NULL);
    CHECK_ERR("only one dimension can be -1");
    CHECK(tc_view(x, 2, (int64_t[]){-2, -12}) == NULL);
    CHECK_ERR("invalid size");
    tc_tensor_release(t);
    tc_tensor_release(x);
}

/* ---- half precision --------------------------------------------------------------------- */
static void test_f16(void) {
    /* every finite f16 survives f16 -> f32 -> f16, and NaNs stay NaN */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tc_f16_to_f32((uint16_t)h);
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan ? !isnan(f) || !isnan(tc_f16_to_f32(tc_f32_to_f16(f))) : tc_f32_to_f16(f) != h) bad++;
    }
    CHECK(bad == 0);
    CHECK(tc_f16_to_f32(0x0001) == ldexpf(1, -24));            /* smallest subnormal */
    CHECK(tc_f16_to_f32(0x03ff) == ldexpf(1023, -24));         /* largest subnormal */
    CHECK(tc_f16_to_f32(0x0400) == ldexpf(1, -14));            /* smallest normal */
    CHECK(tc_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(isinf(tc_f16_to_f32(0x7c00)) && tc_f16_to_f32(0xfc00) < 0);
    CHECK(f32_bits_eq(tc_f16_to_f32(0x8000), -0.0f));
    /* rounding: to nearest, ties to even, in the normal and the subnormal range */
    CHECK(tc_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00);     /* tie: down to even */
    CHECK(tc_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02); /* tie: up to even */
    CHECK(tc_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)) == 0x3c01);
    CHECK(tc_f32_to_f16(ldexpf(1, -25)) == 0x0000);            /* tie between 0 and 2^-24 */
    CHECK(tc_f32_to_f16(3 * ldexpf(1, -25)) == 0x0002);        /* tie: up to even */
    CHECK(tc_f32_to_f16(ldexpf(1, -25) * 1.0001f) == 0x0001);
    CHECK(tc_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -25)) == 0x0400); /* rounds up into the normals */
    CHECK(tc_f32_to_f16(65519.0f) == 0x7bff && tc_f32_to_f16(65520.0f) == 0x7c00); /* overflow */
    CHECK(tc_f32_to_f16(-1e10f) == 0xfc00 && tc_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(tc_f32_to_f16(1e-10f) == 0 && tc_f32_to_f16(-1e-10f) == 0x8000);
    uint16_t qn = tc_f32_to_f16(NAN);
    CHECK((qn & 0x7c00) == 0x7c00 && (qn & 0x200)); /* a quiet NaN */
}

static void test_bf16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tc_bf16_to_f32((uint16_t)h);
        bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (nan ? !isnan(f) || !isnan(tc_bf16_to_f32(tc_f32_to_bf16(f))) : tc_f32_to_bf16(f) != h) bad++;
    }
    CHECK(bad == 0);
    CHECK(tc_f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80);     /* tie: down to even */
    CHECK(tc_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)) == 0x3f82); /* tie: up to even */
    CHECK(tc_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)) == 0x3f81);
    CHECK(tc_f32_to_bf16(3.4e38f) == 0x7f80);                   /* rounds past the largest finite */
    CHECK(tc_f32_to_bf16(1e-40f) == 0x0001 && tc_bf16_to_f32(0x0001) > 0); /* subnormals kept */
    uint16_t qn = tc_f32_to_bf16(NAN);
    CHECK((qn & 0x7f80) == 0x7f80 && (qn & 0x7f));
    /* a NaN whose payload lies only in the low bits must not round into infinity */
    uint32_t low_nan = 0x7f800001;
    float f;
    memcpy(&f, &low_nan, 4);
    CHECK(isnan(tc_bf16_to_f32(tc_f32_to_bf16(f))));
}

/* conversions inside tensors go through the same rules, for every pair of dtypes */
static void test_dtype_copies(void) {
    const double vals[] = {0, 1, 2, 3.75, 100, 127}; /* exact in every dtype once truncated */
    tc_tensor *src = tc_empty(1, (int64_t[]){6}, TC_F64, TC_DEV_CPU);
    memcpy(tc_data(src), vals, sizeof vals);
    int bad = 0;
    for (int a = 0; a < TC_NDTYPES; a++) {
        tc_tensor *x = tc_to(src, (tc_dtype)a, TC_DEV_CPU);
        for (int b = 0; b < TC_NDTYPES; b++) {
            tc_tensor *y = tc_to(x, (tc_dtype)b, TC_DEV_CPU);
            for (int64_t i = 0; i < 6; i++) {
                double v = vals[i];
                if (a == TC_BOOL || b == TC_BOOL) v = v != 0;
                else if (!tc_dtype_is_float((tc_dtype)a) || !tc_dtype_is_float((tc_dtype)b)) v = trunc(v);
                if (tc_get(y, &i) != v) bad++;
            }
            tc_tensor_release(y);
        }
        tc_tensor_release(x);
    }
    tc_tensor_release(src);
    CHECK(bad == 0);
}

/* ---- Philox 4x32-10 --------------------------------------------------------------------- */
/* tc_philox packs the 64-bit counter into words 0-1 (words 2-3 zero) and the 64-bit seed
 * into the key. The first row is Random123's known answer for key 0, counter 0; the others
 * come from the reference implementation in tests/ref/gen_core.py (--philox), which is
 * itself checked there against all of Random123's philox4x32-10 vectors. */
static const struct { uint64_t seed, counter; uint32_t words[4]; } philox_kat[] = {
    {0x0ull, 0x0ull, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {0x0ull, 0x1ull, {0xf8e4cca4, 0x5cb200db, 0xb1a574eb, 0x097eff67}},
    {0x2aull, 0x0ull, {0x9ceaf053, 0x77f5493b, 0x12bf50ad, 0x5742b3d7}},
    {0x2aull, 0x7ull, {0x5bbd83b1, 0x68784c85, 0x172067aa, 0x2e6b75b7}},
    {0x100000005ull, 0x100000003ull, {0x7ee89035, 0x68127fa1, 0x781846a7, 0x5432528b}},
    {0xffffffffffffffffull, 0xffffffffffffffffull, {0x4d18d7d2, 0x430ac65a, 0xbd2fa22a, 0x0afae10d}},
    {0x3d30f19cd101ull, 0x75bcd15ull, {0x025e1364, 0xb184fc6a, 0x5bf7202e, 0x0155baf1}},
};

static void test_philox(void) {
    for (size_t i = 0; i < sizeof philox_kat / sizeof philox_kat[0]; i++) {
        uint32_t w[4];
        tc_philox(philox_kat[i].seed, philox_kat[i].counter, w);
        CHECK(memcmp(w, philox_kat[i].words, sizeof w) == 0);
    }
    /* the state: a draw of n numbers advances the offset by ceil(n / 4) counters */
    tc_manual_seed(5);
    uint64_t s, o;
    tc_rng_get(&s, &o);
    CHECK(s == 5 && o == 0);
    tc_tensor *u = tc_rand(1, (int64_t[]){10}, TC_F32, TC_DEV_CPU);
    tc_rng_get(&s, &o);
    CHECK(o == 3);
    uint32_t w[4];
    tc_philox(5, 2, w); /* element 9 is lane 1 of counter 2 */
    CHECK(tc_get(u, (int64_t[]){9}) == ldexp((double)(w[1] >> 8), -24));
    tc_tensor_release(u);
}

/* ---- broadcasting and error messages ------------------------------------------------------- */
static void test_broadcast(void) {
    int n;
    int64_t out[TC_MAX_DIMS];
    CHECK(tc_broadcast_shape(3, (int64_t[]){3, 1, 4}, 2, (int64_t[]){2, 4}, &n, out, "add") == TC_OK);
    CHECK(n == 3 && out[0] == 3 && out[1] == 2 && out[2] == 4);
    CHECK(tc_broadcast_shape(0, NULL, 2, (int64_t[]){2, 0}, &n, out, "add") == TC_OK);
    CHECK(n == 2 && out[0] == 2 && out[1] == 0);
    CHECK(tc_broadcast_shape(1, (int64_t[]){1}, 1, (int64_t[]){0}, &n, out, "add") == TC_OK && out[0] == 0);
    CHECK(tc_broadcast_shape(2, (int64_t[]){2, 3}, 1, (int64_t[]){4}, &n, out, "mul") == TC_ERR);
    CHECK_ERR("mul: shapes [2 x 3] and [4] cannot be broadcast together (dimension 2: 3 vs 4)");
    CHECK(tc_broadcast_shape(2, (int64_t[]){2, 3}, 2, (int64_t[]){0, 3}, &n, out, "sub") == TC_ERR);

    tc_tensor *a = zeros(2, (int64_t[]){4, 3});
    CHECK(tc_matmul(a, a) == NULL);
    CHECK_ERR("matmul: size mismatch [4 x 3] @ [4 x 3]");
    tc_tensor *b = zeros(1, (int64_t[]){4});
    CHECK(tc_binary(TC_OP_ADD, a, b) == NULL);
    CHECK_ERR("add: shapes [4 x 3] and [4] cannot be broadcast");
    tc_tensor_release(b);
    CHECK(tc_wrap_dim(2, 2, "sum") == TC_ERR);
    CHECK_ERR("sum: dimension 3 out of range for a 2-d tensor");
    CHECK(tc_wrap_dim(-1, 2, "sum") == 1 && tc_wrap_dim(-3, 2, "sum") == TC_ERR);
    CHECK(tc_wrap_dim(-1, 0, "sum") == 0 && tc_wrap_dim(1, 0, "sum") == TC_ERR);
    tc_tensor_release(a);
    char buf[64];
    tc_shape_str(0, NULL, buf, sizeof buf);
    CHECK(strcmp(buf, "[]") == 0);
    tc_shape_str(3, (int64_t[]){2, 0, 7}, buf, sizeof buf);
    CHECK(strcmp(buf, "[2 x 0 x 7]") == 0);
    CHECK(tc_empty(1, (int64_t[]){-3}, TC_F32, TC_DEV_CPU) == NULL);
    CHECK_ERR("negative dimension -3");
    tc_device d;
    CHECK(tc_device_parse("cuda:1", &d) == TC_OK && d.type == TC_CUDA && d.index == 1);
    CHECK(tc_device_parse("cpu", &d) == TC_OK && d.type == TC_CPU);
    CHECK(tc_device_parse("cuda:", &d) == TC_ERR && tc_device_parse("tpu", &d) == TC_ERR);
    CHECK(tc_dtype_from_name("bf16") == TC_BF16 && tc_dtype_from_name("float") == -1);
    CHECK(tc_promote(TC_F16, TC_BF16) == TC_F32 && tc_promote(TC_I32, TC_F16) == TC_F16);
    CHECK(tc_promote(TC_U8, TC_I32) == TC_I32 && tc_promote(TC_BOOL, TC_U8) == TC_U8);
}

/* ---- autograd from C ---------------------------------------------------------------------- */
/* a chain of 200,000 ops: building, backward and freeing it must not recurse on the C stack */
static void test_deep_graph(void) {
    size_t base = tc_mem_in_use();
    tc_tensor *x = tc_scalar_tensor(1, TC_F64, TC_DEV_CPU);
    tc_requires_grad_(x, true);
    tc_tensor *y = tc_tensor_retain(x);
    for (int i = 0; i < 200000; i++) {
        tc_tensor *z = tc_unary_s(TC_OP_MUL_SCALAR, y, 1.0, 0);
        tc_tensor_release(y);
        y = z;
    }
    CHECK(tc_backward(y, NULL, true) == TC_OK && x->grad && tc_get(x->grad, NULL) == 1);
    tc_tensor_release(y); /* frees the retained graph through the work list */
    CHECK(tc_mem_in_use() == base + 2 * sizeof(double));
    tc_tensor_release(x);
    CHECK(tc_mem_in_use() == base);
}

static int double_it(void *ctx, tc_tensor *gy, int nin, tc_tensor **gx) {
    (*(int *)ctx)++;
    CHECK(nin == 1);
    gx[0] = tc_unary_s(TC_OP_MUL_SCALAR, gy, 2, 0);
    return gx[0] ? TC_OK : TC_ERR;
}

static int ctx_freed;
static void free_ctx(void *ctx) { (void)ctx; ctx_freed++; }

static void test_custom_function(void) {
    tc_tensor *x = tc_full(1, (int64_t[]){3}, 1.5, TC_F64, TC_DEV_CPU);
    tc_requires_grad_(x, true);
    int calls = 0;
    tc_tensor *y = tc_custom_attach(x, 1, &x, double_it, &calls, free_ctx);
    CHECK(y && y->grad_fn && strcmp(tc_grad_fn_name(y), "CustomFunctionBackward") == 0);
    tc_tensor *g = tc_full(1, (int64_t[]){3}, 1, TC_F64, TC_DEV_CPU);
    CHECK(tc_backward(y, g, false) == TC_OK && calls == 1);
    CHECK(tc_get(x->grad, (int64_t[]){2}) == 2 && ctx_freed == 1); /* freed with the graph */
    CHECK(tc_backward(y, g, false) == TC_ERR);
    CHECK_ERR("second time");
    tc_tensor_release(y);
    tc_tensor_release(g);
    /* nothing requires grad: a plain result, and the context is freed at once */
    tc_tensor *c = tc_zeros(0, NULL, TC_F64, TC_DEV_CPU);
    tc_tensor *r = tc_custom_attach(c, 1, &c, double_it, &calls, free_ctx);
    CHECK(r && !r->grad_fn && ctx_freed == 2);
    tc_tensor_release(r);
    tc_tensor_release(c);
    tc_tensor_release(x);
}

/* ---- the CPU's vectorised f32 math against f64 (libm) ----------------------------------- */
/* the error of got against want in ulps of ref (>= |want|) as a float: a result below the
 * smallest normal float (2^-126) by its absolute error in units of 2^-126 (it may flush to
 * 0); both infinite alike, or both NaN: 0 */
static double ulp_error(float got, double want, double ref) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got) ? 0 : INFINITY;
    if (fabs(want) > FLT_MAX) return isinf(got) && (got > 0) == (want > 0) ? 0 : INFINITY;
    if (ref < FLT_MIN) return fabs((double)got - want) / FLT_MIN;
    int e;
    frexp(ref, &e);
    return fabs((double)got - want) / ldexp(1, e - 24);
}

/* every 4099th float with |x| <= lim (and 0, +-inf, NaN) as f32 and f64 tensors of n values */
static int64_t sweep_inputs(float lim, tc_tensor **x32, tc_tensor **x64) {
    int64_t n = 0, cap = 2 * (0x7f800000 / 4099) + 8;
    float *v = malloc((size_t)cap * sizeof *v);
    for (uint32_t b = 0; b < 0x7f800000u; b += 4099) {
        float f;
        memcpy(&f, &b, 4);
        if (f > lim) break;
        v[n++] = f;
        v[n++] = -f;
    }
    v[n++] = 0.0f; v[n++] = INFINITY; v[n++] = -INFINITY; v[n++] = NAN;
    *x32 = tc_empty(1, &n, TC_F32, TC_DEV_CPU);
    *x64 = tc_empty(1, &n, TC_F64, TC_DEV_CPU);
    for (int64_t i = 0; i < n; i++) { ((float *)tc_data(*x32))[i] = v[i]; ((double *)tc_data(*x64))[i] = v[i]; }
    free(v);
    return n;
}

/* each op, forward: the most ulps off libm's f64 over |x| <= lim, in ulps of the result
 * (exp, log, tanh, sigmoid, softplus) or, for the products x g(x) (silu, the gelus), of
 * max(|result|, |x|): where g(x) = 1 + erf(x / sqrt 2) cancels to a few ulps of 1 (gelu's
 * left tail, x < -3), f32 arithmetic holds no more than that, libm's erff neither.
 * Derivative (gy = 1): the largest |error| / max(|f'(x)|, 1) in ulps of 1. */
static void test_vecmath_ulp(void) {
    static const struct { tc_op op; const char *name; float lim; bool of_x; double fwd, bwd, a; } ops[] = {
        {TC_OP_EXP, "exp", 100, false, 2, 2, 0},         {TC_OP_LOG, "log", FLT_MAX, false, 2, 2, 0},
        {TC_OP_TANH, "tanh", 1e4f, false, 2, 2, 0},      {TC_OP_SIGMOID, "sigmoid", 1e4f, false, 3, 2, 0},
        {TC_OP_SOFTPLUS, "softplus", 1e4f, false, 3, 2, 0}, {TC_OP_SILU, "silu", 1e4f, true, 2, 12, 0},
        {TC_OP_GELU, "gelu", 1e4f, true, 3, 2, 0},       {TC_OP_GELU_TANH, "gelu_tanh", 1e4f, true, 2, 8, 0},
        {TC_OP_QUICK_GELU, "quick_gelu", 1e4f, true, 2, 12, 0}, {TC_OP_SIN, "sin", FLT_MAX, false, 2, 1, 0},
        {TC_OP_COS, "cos", FLT_MAX, false, 2, 1, 0},
        /* x^a (odd, even, fractional and negative a; x < 0 too) and a^x (up to where a^x
         * nears FLT_MAX: past it the derivative a^x log a is finite and f32's a^x is inf) */
        {TC_OP_POW_SCALAR, "pow2.5", FLT_MAX, false, 1, 2, 2.5}, {TC_OP_POW_SCALAR, "pow-1.25", FLT_MAX, false, 1, 2, -1.25},
        {TC_OP_POW_SCALAR, "pow3", FLT_MAX, false, 1, 2, 3},     {TC_OP_POW_SCALAR, "pow-4", FLT_MAX, false, 1, 2, -4},
        {TC_OP_POW_SCALAR, "pow0.5", FLT_MAX, false, 1, 2, 0.5}, {TC_OP_POW_SCALAR, "pow13.75", FLT_MAX, false, 1, 2, 13.75},
        {TC_OP_RPOW_SCALAR, "rpow2.5", 90, false, 1, 2, 2.5},    {TC_OP_RPOW_SCALAR, "rpow0.125", 40, false, 1, 2, 0.125},
    };
    const tc_kernels *k = tc_kern(TC_DEV_CPU);
    char line[1024];
    int len = snprintf(line, sizeof line, "vecmath: max ulp vs f64 (forward / derivative):");
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        tc_tensor *x32, *x64;
        int64_t n = sweep_inputs(ops[o].lim, &x32, &x64);
        tc_tensor *y32 = tc_empty(1, &n, TC_F32, TC_DEV_CPU), *y64 = tc_empty(1, &n, TC_F64, TC_DEV_CPU);
        tc_tensor *g32 = tc_empty(1, &n, TC_F32, TC_DEV_CPU), *g64 = tc_empty(1, &n, TC_F64, TC_DEV_CPU);
        tc_tensor *one32 = tc_full(1, &n, 1, TC_F32, TC_DEV_CPU), *one64 = tc_full(1, &n, 1, TC_F64, TC_DEV_CPU);
        double a = ops[o].a;
        CHECK(k->unary(y32, x32, ops[o].op, a, 0) == TC_OK && k->unary(y64, x64, ops[o].op, a, 0) == TC_OK);
        CHECK(k->unary_backward(g32, one32, x32, y32, ops[o].op, a, 0) == TC_OK &&
              k->unary_backward(g64, one64, x64, y64, ops[o].op, a, 0) == TC_OK);
        double fwd = 0, bwd = 0;
        float worst = 0;
        for (int64_t i = 0; i < n; i++) {
            double xv = ((double *)tc_data(x64))[i];
            double want = ((double *)tc_data(y64))[i];
            double e = ulp_error(((float *)tc_data(y32))[i], want, ops[o].of_x ? fmax(fabs(want), fabs(xv)) : fabs(want));
            if (e > fwd) { fwd = e; worst = (float)xv; }
            double gw = ((double *)tc_data(g64))[i], gg = ((float *)tc_data(g32))[i];
            if (isfinite(xv)) {
                double eb = ulp_error((float)gg, gw, fmax(fabs(gw), 1));
                bwd = eb > bwd ? eb : bwd;
            }
        }
        if (fwd > ops[o].fwd || bwd > ops[o].bwd)
            printf("FAIL  %s: %.2f ulp forward (at %.9g, bound %g), %.2f derivative (bound %g)\n", ops[o].name, fwd,
                   worst, ops[o].fwd, bwd, ops[o].bwd);
        CHECK(fwd <= ops[o].fwd && bwd <= ops[o].bwd);
        len += snprintf(line + len, sizeof line - (size_t)len, " %s %.2f/%.2f", ops[o].name, fwd, bwd);
        tc_tensor *ts[] = {x32, x64, y32, y64, g32, g64, one32, one64};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) tc_tensor_release(ts[i]);
    }
    printf("%s\n", line);
}

/* ---- the CPU's caching allocator --------------------------------------------------------
 * Threads allocate, fill, check and free blocks of mixed sizes, eight live at a time: a block
 * handed to two holders at once, or a count updated without the lock, shows up. */
static void test_cpu_allocator(void) {
    const tc_kernels *k = tc_kern(TC_DEV_CPU);
    tc_cpu_memory_stats a, b;
    tc_cpu_memory(&a);
    int bad = 0;
#pragma omp parallel num_threads(4) reduction(+ : bad)
    {
        unsigned id = (unsigned)omp_get_thread_num();
        unsigned char *live[8] = {0};
        size_t size[8] = {0};
        for (unsigned r = 0; r < 4000; r++) {
            int j = (int)(r % 8);
            if (live[j]) {
                if (live[j][0] != (unsigned char)(id + 1) || live[j][size[j] - 1] != (unsigned char)(id + 1)) bad++;
                k->free(live[j]);
            }
            size[j] = 1 + (r * 7919u + id * 104729u) % (r % 16 == 0 ? 3000000u : 40000u);
            live[j] = k->alloc(size[j]);
            if (!live[j] || (uintptr_t)live[j] % 64) { bad++; live[j] = NULL; continue; }
            memset(live[j], (int)(id + 1), size[j]);
        }
        for (int j = 0; j < 8; j++) k->free(live[j]);
    }
    CHECK(bad == 0);
    tc_cpu_memory(&b);
    CHECK(b.allocated == a.allocated);
    CHECK(b.allocs - a.allocs == 4 * 4000 && b.frees - a.frees == 4 * 4000);
    CHECK(!b.caching || b.cache_hits - a.cache_hits > 4000);
    CHECK(b.max_allocated >= b.allocated && b.max_reserved >= b.reserved && b.reserved >= b.allocated);
    /* a block's size class wastes at most an eighth (or 63 bytes of a small one) */
    for (size_t n = 1; n < ((size_t)1 << 31); n = n * 3 + 1) {
        tc_cpu_memory(&a);
        void *p = k->alloc(n);
        if (!p) break; /* the machine refuses the address space: the sizes below were checked */
        tc_cpu_memory(&b);
        size_t got = b.allocated - a.allocated;
        CHECK(got >= n && got <= (b.caching ? n + n / 8 + 63 : n));
        k->free(p);
    }
    tc_cpu_empty_cache();
    tc_cpu_memory(&b);
    CHECK(b.reserved == b.allocated);
    tc_cpu_reset_peak();
    tc_cpu_memory(&b);
    CHECK(b.max_allocated == b.allocated && b.max_reserved == b.reserved);
}

/* ---- bf16 on the CPU: the vectorised conversions and the AVX512-BF16 GEMM ------------------- */
/* the runs of half.c round as tc_f32_to_bf16 does, contiguous (vector loops) and strided */
static void test_bf16_runs(void) {
    enum { N = 1 << 16 };
    float *f = malloc(N * sizeof *f), *back = malloc(N * sizeof *back);
    uint16_t *h = malloc(N * sizeof *h), *hs = malloc(2 * N * sizeof *hs);
    uint64_t st = 7;
    int bad = 0;
    for (int i = 0; i < N; i++) { /* every bf16 with random low bits (ties, NaN payloads, subnormals) */
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t u = (uint32_t)i << 16 | (uint32_t)(st >> 48);
        if (i % 7 == 0) u = (uint32_t)i << 16 | 0x8000u; /* exact ties */
        memcpy(&f[i], &u, 4);
    }
    tc_cpu_half_from_f32(h, 1, f, 1, N, TC_BF16);
    tc_cpu_half_from_f32(hs, 2, f, 1, N, TC_BF16);
    tc_cpu_f32_from_half(back, 1, h, 1, N, TC_BF16);
    for (int i = 0; i < N; i++) {
        uint16_t want = tc_f32_to_bf16(f[i]);
        if (h[i] != want || hs[2 * i] != want || !(isnan(f[i]) ? isnan(back[i]) : back[i] == tc_bf16_to_f32(want)))
            bad++;
    }
    CHECK(bad == 0);
    free(f);
    free(back);
    free(h);
    free(hs);
}

/* tc_cpu_gemm_bf16 against an f64 product of the same bf16 values: odd sizes, every layout of
 * A and B, f32 and bf16 C, beta 0 over a NaN-filled C and beta 0.5; a bound per element of
 * K * 2^-22 sum |a b| for f32's sums (and half an ulp of bf16 for a bf16 C) */
static void test_gemm_bf16(void) {
    if (!tc_cpu_gemm_bf16_ok()) {
        printf("skip  gemm_bf16: this CPU (or build) has no AVX512-BF16; bf16 products take f32 copies\n");
        return;
    }
    static const int64_t sizes[][3] = {{1, 1, 1}, {13, 37, 29}, {25, 65, 3}, {12, 32, 64}, {50, 70, 131}, {7, 100, 2}};
    uint64_t st = 11;
    double worst[2] = {0, 0}; /* f32 C, bf16 C */
    int bad = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
        uint16_t *a = malloc((size_t)(M * K) * 2), *b = malloc((size_t)(K * N) * 2), *cb = malloc((size_t)(M * N) * 2);
        float *cf = malloc((size_t)(M * N) * 4), *c0 = malloc((size_t)(M * N) * 4);
        uint16_t *at = malloc((size_t)(M * K) * 2), *bt = malloc((size_t)(K * N) * 2); /* stored transposed */
        for (int64_t i = 0; i < M * K; i++) a[i] = tc_f32_to_bf16((float)((st = st * 6364136223846793005ull + 1) >> 40) / 8388608.0f - 1);
        for (int64_t i = 0; i < K * N; i++) b[i] = tc_f32_to_bf16((float)((st = st * 6364136223846793005ull + 1) >> 40) / 4194304.0f - 2);
        for (int64_t i = 0; i < M * K; i++) at[i % K * M + i / K] = a[i];
        for (int64_t i = 0; i < K * N; i++) bt[i % N * K + i / N] = b[i];
        for (int64_t i = 0; i < M * N; i++) c0[i] = tc_bf16_to_f32(tc_f32_to_bf16((float)(i % 17) - 8));
        for (int layout = 0; layout < 4; layout++)
            for (int cdt = 0; cdt < 2; cdt++)
                for (int withbeta = 0; withbeta < 2; withbeta++) {
                    bool ta = layout & 1, tb = layout & 2;
                    float alpha = 1.5f, beta = withbeta ? 0.5f : 0;
                    for (int64_t i = 0; i < M * N; i++) {
                        cf[i] = withbeta ? c0[i] : NAN;
                        cb[i] = tc_f32_to_bf16(cf[i]);
                    }
                    tc_gemm_bf16 g = {.M = M, .N = N, .K = K, .lda = ta ? M : K, .ldb = tb ? K : N, .ldc = N,
                                      .ta = ta, .tb = tb, .threads = layout % 2 == 0, .alpha = alpha, .beta = beta,
                                      .a = ta ? at : a, .b = tb ? bt : b, .c = cdt ? (void *)cb : (void *)cf, .cdt = cdt ? TC_BF16 : TC_F32};
                    if (tc_cpu_gemm_bf16(&g) != TC_OK) { bad++; continue; }
                    for (int64_t i = 0; i < M; i++)
                        for (int64_t j = 0; j < N; j++) {
                            double ref = 0, mag = 0;
                            for (int64_t k = 0; k < K; k++) {
                                /* the same bf16 values in either layout: A(i, k), B(k, j) */
                                double x = tc_bf16_to_f32(a[i * K + k]), y = tc_bf16_to_f32(b[k * N + j]);
                                ref += x * y;
                                mag += fabs(x * y);
                            }
                            ref = alpha * ref + beta * (withbeta ? c0[i * N + j] : 0);
                            mag = alpha * mag + fabs(beta * c0[i * N + j]);
                            double got = cdt ? tc_bf16_to_f32(cb[i * N + j]) : cf[i * N + j];
                            double bound = (double)K * ldexp(mag, -22) + (cdt ? ldexp(fabs(ref), -8) : 0) + 1e-30;
                            double e = fabs(got - ref) / bound;
                            if (!(e <= 1)) bad++;
                            if (e > worst[cdt]) worst[cdt] = e;
                        }
                }
        free(a);
        free(b);
        free(at);
        free(bt);
        free(cb);
        free(cf);
        free(c0);
    }
    printf("gemm_bf16: worst error vs f64, in bounds: f32 C %.3g, bf16 C %.3g\n", worst[0], worst[1]);
    CHECK(bad == 0);
}

int main(void) {
    test_refcounts();
    test_wrapped_storage();
    test_view_strides();
    test_f16();
    test_bf16();
    test_dtype_copies();
    test_philox();
    test_broadcast();
    test_deep_graph();
    test_custom_function();
    test_vecmath_ulp();
    test_cpu_allocator();
    test_bf16_runs();
    test_gemm_bf16();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
