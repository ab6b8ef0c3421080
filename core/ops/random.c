/* random.c: the Philox 4x32-10 generator and the ops that draw from it. The state is a
 * (seed, offset) pair; a draw of n numbers reserves ceil(n / 4) counters, so the same
 * seed and offset give the same numbers on every device and after a resume. */
#include "../internal.h"
#include "../philox.h"

#include <math.h>
#include <stdio.h>

static uint64_t rng_seed = 67280421310721ull, rng_offset;

void tc_manual_seed(uint64_t seed) { rng_seed = seed; rng_offset = 0; }
void tc_rng_get(uint64_t *seed, uint64_t *offset) { *seed = rng_seed; *offset = rng_offset; }
void tc_rng_set(uint64_t seed, uint64_t offset) { rng_seed = seed; rng_offset = offset; }

uint64_t tc_rng_reserve(uint64_t n) {
    uint64_t o = rng_offset;
    rng_offset += n;
    return o;
}

void tc_philox(uint64_t seed, uint64_t counter, uint32_t out[4]) { tc_philox_words(seed, counter, out); }

static tc_tensor *draw(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev, bool normal,
                       double a, double b, const char *op) {
    if (!tc_dtype_is_float(dt)) {
        tc_error("%s: dtype must be floating point (got %s)", op, tc_dtype_name(dt));
        return NULL;
    }
    tc_tensor *t = tc_empty(ndim, shape, dt, dev);
    if (!t) return NULL;
    int rc = normal ? tc_normal_(t, a, b) : tc_uniform_(t, a, b);
    if (rc != TC_OK) { tc_tensor_release(t); return NULL; }
    return t;
}

tc_tensor *tc_rand(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev) {
    return draw(ndim, shape, dt, dev, false, 0, 1, "rand");
}

tc_tensor *tc_randn(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev) {
    return draw(ndim, shape, dt, dev, true, 0, 1, "randn");
}

/* t is filled through a contiguous buffer when it is a strided view */
static int fill_random(tc_tensor *t, bool normal, double a, double b, const char *op) {
    if (tc_check_inplace(t, op) != TC_OK) return TC_ERR;
    const tc_kernels *k = tc_kern(t->storage->device);
    uint64_t off = tc_rng_reserve(((uint64_t)tc_numel(t) + 3) / 4);
    tc_tensor *c = tc_is_contiguous(t) ? tc_tensor_retain(t) : tc_empty_like(t, t->dtype);
    if (!c) return TC_ERR;
    int rc = normal ? k->fill_normal(c, rng_seed, off, a, b) : k->fill_uniform(c, rng_seed, off, a, b);
    if (rc == TC_OK && c != t) rc = k->copy(t, c);
    tc_tensor_release(c);
    return rc;
}

int tc_uniform_(tc_tensor *t, double lo, double hi) { return fill_random(t, false, lo, hi, "uniform_"); }
int tc_normal_(tc_tensor *t, double mean, double std) { return fill_random(t, true, mean, std, "normal_"); }

tc_tensor *tc_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, tc_dtype dt, tc_device dev) {
    if (high <= low) {
        tc_error("randint: high (%lld) must be greater than low (%lld)", (long long)high, (long long)low);
        return NULL;
    }
    tc_tensor *u = tc_empty(ndim, shape, TC_F64, TC_DEV_CPU);
    if (!u) return NULL;
    int rc = tc_uniform_(u, 0, 1);
    double *p = tc_data(u);
    int64_t n = tc_numel(u), span = high - low;
    for (int64_t i = 0; rc == TC_OK && i < n; i++) {
        int64_t v = (int64_t)floor(p[i] * (double)span);
        p[i] = (double)(low + (v < span ? v : span - 1));
    }
    tc_tensor *r = rc == TC_OK ? tc_to(u, dt, dev) : NULL;
    tc_tensor_release(u);
    return r;
}

/* Fisher-Yates driven by one Philox word per position */
tc_tensor *tc_randperm(int64_t n, tc_dtype dt, tc_device dev) {
    if (n < 0) { tc_error("randperm: n must be non-negative"); return NULL; }
    tc_tensor *t = tc_empty(1, &n, TC_I64, TC_DEV_CPU);
    if (!t) return NULL;
    int64_t *p = tc_data(t);
    uint64_t off = tc_rng_reserve(((uint64_t)n + 3) / 4);
    for (int64_t i = 0; i < n; i++) p[i] = i + 1;
    uint32_t w[4];
    for (int64_t i = n - 1; i > 0; i--) {
        if ((n - 1 - i) % 4 == 0) tc_philox(rng_seed, off + (uint64_t)(n - 1 - i) / 4, w);
        int64_t j = (int64_t)(((uint64_t)w[(n - 1 - i) % 4] * (uint64_t)(i + 1)) >> 32);
        int64_t s = p[i];
        p[i] = p[j];
        p[j] = s;
    }
    tc_tensor *r = tc_to(t, dt, dev);
    tc_tensor_release(t);
    return r;
}

/* one category (0-based) drawn from weights w[0..cats) of sum total, by inverse CDF; a
 * category of weight 0 is never drawn, even where rounding leaves u at the very end */
static int64_t draw_category(const double *w, int64_t cats, double total, uint32_t word) {
    double u = ((double)word + 0.5) / 4294967296.0 * total, acc = 0;
    int64_t last = 0;
    for (int64_t c = 0; c < cats; c++) {
        if (w[c] <= 0) continue;
        acc += w[c];
        last = c;
        if (u < acc) break;
    }
    return last;
}

/* rows of probs (1-d or 2-d, unnormalised weights); without replacement a drawn category's
 * weight is set to 0 for the rest of its row */
tc_tensor *tc_multinomial(tc_tensor *probs, int64_t n, bool replacement) {
    if (probs->ndim != 1 && probs->ndim != 2) {
        tc_error("multinomial: probabilities must be 1-d or 2-d (got %d-d)", probs->ndim);
        return NULL;
    }
    int64_t rows = probs->ndim == 2 ? probs->shape[0] : 1, cats = probs->shape[probs->ndim - 1];
    if (n < 0 || cats == 0) {
        tc_error("multinomial: need a non-negative number of samples and at least one category (got %lld, %lld)",
                 (long long)n, (long long)cats);
        return NULL;
    }
    tc_tensor *p = tc_to(probs, TC_F64, TC_DEV_CPU), *pc = p ? tc_contiguous(p) : NULL;
    tc_tensor_release(p);
    int64_t osh[2] = {rows, n};
    tc_tensor *out = pc ? tc_empty(2, osh, TC_I64, TC_DEV_CPU) : NULL;
    double *w = out ? malloc((size_t)cats * sizeof *w) : NULL;
    int rc = w ? TC_OK : TC_ERR;
    if (out && !w) tc_error("multinomial: out of memory");
    uint64_t off = tc_rng_reserve(((uint64_t)(rows * n) + 3) / 4);
    for (int64_t r = 0; r < rows && rc == TC_OK; r++) {
        const double *src = (const double *)tc_data(pc) + r * cats;
        int64_t positive = 0;
        for (int64_t c = 0; c < cats && rc == TC_OK; c++) {
            if (!(src[c] >= 0) || isinf(src[c])) rc = tc_error("multinomial: probabilities must be finite and non-negative");
            w[c] = src[c];
            positive += w[c] > 0;
        }
        if (rc == TC_OK && positive == 0) rc = tc_error("multinomial: a row of probabilities sums to zero");
        if (rc == TC_OK && !replacement && n > positive)
            rc = tc_error("multinomial: cannot draw %lld samples without replacement from %lld categories "
                          "of non-zero probability", (long long)n, (long long)positive);
        for (int64_t s = 0; s < n && rc == TC_OK; s++) {
            double total = 0; /* summed afresh each draw: no drift as weights are removed */
            for (int64_t c = 0; c < cats; c++) total += w[c];
            uint64_t i = (uint64_t)(r * n + s);
            uint32_t wd[4];
            tc_philox(rng_seed, off + i / 4, wd);
            int64_t c = draw_category(w, cats, total, wd[i % 4]);
            ((int64_t *)tc_data(out))[r * n + s] = c + 1;
            if (!replacement) w[c] = 0;
        }
    }
    free(w);
    tc_tensor_release(pc);
    if (rc != TC_OK) { tc_tensor_release(out); return NULL; }
    if (probs->ndim == 1) {
        tc_tensor *v = tc_view(out, 1, &n);
        tc_tensor_release(out);
        out = v;
    }
    if (out && !tc_device_eq(probs->storage->device, TC_DEV_CPU)) {
        tc_tensor *d = tc_to(out, TC_I64, probs->storage->device);
        tc_tensor_release(out);
        out = d;
    }
    return out;
}
