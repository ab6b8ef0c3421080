/* reduce.c (cpu): reductions over the trailing dims of a strided view (sum, mean, max,
 * min, prod, logsumexp) and max/min with indices along the last dim. Sums accumulate in
 * double (contiguous f32 runs in f32 over blocks of 2,048, then in double), so long f32
 * reductions do not drift. */
#include "cpu.h"
#include "vecmath.h"

#include <math.h>
#include <string.h>

/* x's first ndim - nred dims index the output; the rest are reduced */
typedef struct {
    int nout, nred;
    int64_t oshape[TC_MAX_DIMS], ostride[TC_MAX_DIMS];
    int64_t rshape[TC_MAX_DIMS], rstride[TC_MAX_DIMS];
    int64_t rcount;
} red_layout;

/* appends dims [from, to) of x to (shape, stride), dropping size-1 dims and merging a dim into
 * the previous one when they step as one (a bias gradient's [B, L] rows become one dim);
 * returns how many dims there are */
static int merged_dims(const tc_tensor *x, int from, int to, int64_t *shape, int64_t *stride) {
    int n = 0;
    for (int d = from; d < to; d++) {
        if (x->shape[d] == 1) continue;
        if (n > 0 && stride[n - 1] == x->stride[d] * x->shape[d]) {
            shape[n - 1] *= x->shape[d];
            stride[n - 1] = x->stride[d];
        } else {
            shape[n] = x->shape[d];
            stride[n++] = x->stride[d];
        }
    }
    return n;
}

static void layout(red_layout *l, const tc_tensor *x, int nred) {
    int nout = x->ndim - nred;
    l->nout = merged_dims(x, 0, nout, l->oshape, l->ostride);
    l->nred = merged_dims(x, nout, x->ndim, l->rshape, l->rstride);
    l->rcount = 1;
    for (int i = 0; i < l->nred; i++) l->rcount *= l->rshape[i];
}

/* element offset of the k-th element of a multi-dim index space */
static int64_t offset_of(int64_t k, int n, const int64_t *shape, const int64_t *stride) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; d--) {
        off += (k % shape[d]) * stride[d];
        k /= shape[d];
    }
    return off;
}

/* reduced elements contiguous in x (the last dims form one run of stride 1)? */
static bool reduced_contiguous(const red_layout *l) {
    int64_t st = 1;
    for (int d = l->nred - 1; d >= 0; d--) {
        if (l->rshape[d] != 1 && l->rstride[d] != st) return false;
        st *= l->rshape[d];
    }
    return true;
}

/* a contiguous f32 run summed: blocks of up to 2,048 elements in f32 across 64 lanes (four
 * independent vectors of 16; one chain of double vectors, as `omp simd` built it, waited on
 * every add and ran at half the speed), each block's lanes then added into 16 in double, so
 * that long runs do not drift (a lane sums at most 32 elements in f32) */
typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
#define SUM_BLOCK 2048
TC_SIMD_CLONES
static double sum_f32(int64_t n, const float *restrict p) {
    v8d acc = {0};
    int64_t i = 0;
    while (n - i >= 64) {
        int64_t end = n - i >= SUM_BLOCK ? i + SUM_BLOCK : i + (n - i) / 64 * 64;
        v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, x0, x1, x2, x3;
        for (; i < end; i += 64) {
            memcpy(&x0, p + i, sizeof x0);
            memcpy(&x1, p + i + 16, sizeof x1);
            memcpy(&x2, p + i + 32, sizeof x2);
            memcpy(&x3, p + i + 48, sizeof x3);
            a0 += x0;
            a1 += x1;
            a2 += x2;
            a3 += x3;
        }
        a0 = (a0 + a1) + (a2 + a3);
        v8f lo, hi;
        memcpy(&lo, &a0, sizeof lo);
        memcpy(&hi, (char *)&a0 + sizeof lo, sizeof hi);
        acc += __builtin_convertvector(lo, v8d) + __builtin_convertvector(hi, v8d);
    }
    double s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    for (; i < n; i++) s += p[i];
    return s;
}

/* a long contiguous f32 run summed in chunks of SUM_CHUNK elements, split across threads when
 * there is enough of it; the chunks' sums are added in order, so any number of threads gives
 * the same result (NaN and *ok false when out of memory). */
#define SUM_CHUNK 32768
static double sum_f32_chunked(int64_t n, const float *p, bool *ok) {
    int64_t chunks = (n + SUM_CHUNK - 1) / SUM_CHUNK;
    double *part = malloc((size_t)chunks * sizeof *part);
    if (!(*ok = part != NULL)) return NAN;
#pragma omp parallel for schedule(static) if (chunks > 1 && tc_cpu_parallel(n, TC_PAR_MEMORY))
    for (int64_t c = 0; c < chunks; c++)
        part[c] = sum_f32(c + 1 < chunks ? SUM_CHUNK : n - c * SUM_CHUNK, p + c * SUM_CHUNK);
    double s = 0;
    for (int64_t c = 0; c < chunks; c++) s += part[c];
    free(part);
    return s;
}

/* acc[i] += row[i] for each of the rows (stride apart) of columns [lo, hi) */
TC_SIMD_CLONES
static void add_rows_f32(double *restrict acc, const float *restrict x, int64_t rows, int64_t stride, int64_t lo,
                         int64_t hi) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * stride;
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) acc[i] += row[i];
    }
}

static double reduce_one(const char *base, tc_dtype dt, const red_layout *l, bool run, tc_op op) {
    int64_t n = l->rcount;
    size_t es = tc_dtype_size(dt);
    double acc = op == TC_OP_PROD ? 1 : op == TC_OP_MAX || op == TC_OP_LOGSUMEXP ? -INFINITY : op == TC_OP_MIN ? INFINITY : 0;
#define ELEM(i) (run ? (dt == TC_F32 ? (double)((const float *)base)[i] : tc_load(base + (i) * (int64_t)es, dt)) \
                     : tc_load(base + offset_of(i, l->nred, l->rshape, l->rstride) * (int64_t)es, dt))
    switch (op) {
    case TC_OP_SUM:
    case TC_OP_MEAN:
        if (run && dt == TC_F32) acc = sum_f32(n, (const float *)base);
        else
            for (int64_t i = 0; i < n; i++) acc += ELEM(i);
        return op == TC_OP_MEAN ? (n ? acc / (double)n : NAN) : acc;
    case TC_OP_PROD:
        for (int64_t i = 0; i < n; i++) acc *= ELEM(i);
        return acc;
    case TC_OP_MAX:
        for (int64_t i = 0; i < n; i++) { double v = ELEM(i); if (v > acc || isnan(v)) acc = v; if (isnan(acc)) break; }
        return acc;
    case TC_OP_MIN:
        for (int64_t i = 0; i < n; i++) { double v = ELEM(i); if (v < acc || isnan(v)) acc = v; if (isnan(acc)) break; }
        return acc;
    case TC_OP_LOGSUMEXP: {
        for (int64_t i = 0; i < n; i++) { double v = ELEM(i); if (v > acc) acc = v; }
        if (isinf(acc)) return acc;
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += exp(ELEM(i) - acc);
        return acc + log(s);
    }
    default: return NAN;
    }
#undef ELEM
}

int tc_cpu_reduce(tc_tensor *out, const tc_tensor *x, tc_op op, int nred) {
    red_layout l;
    layout(&l, x, nred);
    bool run = reduced_contiguous(&l);
    int64_t nout = tc_numel(out);
    if (nout == 0) return TC_OK; /* however many (empty) rows there are */
    size_t es = tc_dtype_size(x->dtype), eo = tc_dtype_size(out->dtype);
    const char *xb = tc_data(x);
    char *ob = tc_data(out);
    if ((op == TC_OP_SUM || op == TC_OP_MEAN) && run && nout == 1 && x->dtype == TC_F32 && l.rcount > SUM_CHUNK) {
        bool ok;
        double sum = sum_f32_chunked(l.rcount, (const float *)xb, &ok);
        if (!ok) return tc_error("reduce: out of memory");
        tc_store(ob, out->dtype, op == TC_OP_MEAN ? sum / (double)l.rcount : sum);
        return TC_OK;
    }
    /* a sum over a leading dim of a contiguous tensor (bias gradients): add rows */
    if ((op == TC_OP_SUM || op == TC_OP_MEAN) && !run && x->dtype == TC_F32 && out->dtype == TC_F32 &&
        l.nout == 1 && l.nred == 1 && l.ostride[0] == 1 && l.rstride[0] == l.oshape[0]) {
        double *acc = calloc((size_t)nout, sizeof *acc);
        if (!acc) return tc_error("reduce: out of memory");
        int64_t blocks = (nout + 255) / 256; /* columns in blocks of 256, each block one thread's */
#pragma omp parallel for schedule(static) if (blocks > 1 && tc_cpu_parallel(nout * l.rcount, TC_PAR_MEMORY))
        for (int64_t k = 0; k < blocks; k++)
            add_rows_f32(acc, (const float *)xb, l.rcount, l.rstride[0], k * 256, k + 1 < blocks ? (k + 1) * 256 : nout);
        for (int64_t i = 0; i < nout; i++)
            ((float *)ob)[i] = (float)(op == TC_OP_MEAN ? acc[i] / (double)l.rcount : acc[i]);
        free(acc);
        return TC_OK;
    }
#pragma omp parallel for schedule(static) if (nout > 1 && tc_cpu_parallel(nout * l.rcount, TC_PAR_MEMORY))
    for (int64_t o = 0; o < nout; o++) {
        const char *base = xb + offset_of(o, l.nout, l.oshape, l.ostride) * (int64_t)es;
        tc_store(ob + o * (int64_t)eo, out->dtype, reduce_one(base, x->dtype, &l, run, op));
    }
    return TC_OK;
}

int tc_cpu_arg_reduce(tc_tensor *values, tc_tensor *indices, const tc_tensor *x, tc_op op) {
    red_layout l;
    layout(&l, x, 1);
    int64_t nout = 1;
    for (int i = 0; i < l.nout; i++) nout *= l.oshape[i];
    size_t es = tc_dtype_size(x->dtype);
    const char *xb = tc_data(x);
    for (int64_t o = 0; o < nout; o++) {
        const char *base = xb + offset_of(o, l.nout, l.oshape, l.ostride) * (int64_t)es;
        double best = tc_load(base, x->dtype);
        int64_t bi = 0;
        for (int64_t i = 1; i < l.rcount && !isnan(best); i++) {
            double v = tc_load(base + i * l.rstride[0] * (int64_t)es, x->dtype);
            if (isnan(v) || (op == TC_OP_MAX || op == TC_OP_ARGMAX ? v > best : v < best)) { best = v; bi = i; }
        }
        if (values) tc_store((char *)tc_data(values) + o * (int64_t)es, values->dtype, best);
        if (indices) ((int64_t *)tc_data(indices))[o] = bi + 1;
    }
    return TC_OK;
}
