/* factories.c: tensors made with values (full, zeros, arange, linspace, scalars) and
 * tc_item, which reads one back: they run ops (fill kernels, copies between devices),
 * which is why they are not in tensor.c. */
#include "internal.h"

#include <math.h>

tc_tensor *tc_full(int ndim, const int64_t *shape, double value, tc_dtype dt, tc_device dev) {
    tc_tensor *t = tc_empty(ndim, shape, dt, dev);
    if (t && tc_kern(dev)->fill(t, value) != TC_OK) { tc_tensor_release(t); return NULL; }
    return t;
}

tc_tensor *tc_zeros(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev) {
    return tc_full(ndim, shape, 0, dt, dev);
}

tc_tensor *tc_scalar_tensor(double v, tc_dtype dt, tc_device dev) { return tc_full(0, NULL, v, dt, dev); }

/* values are computed in f64 on the host and copied; these are small setup tensors */
static tc_tensor *from_f64(const double *v, int64_t n, tc_dtype dt, tc_device dev) {
    tc_tensor *h = tc_empty(1, &n, TC_F64, TC_DEV_CPU);
    if (!h) return NULL;
    memcpy(tc_data(h), v, (size_t)n * sizeof(double));
    tc_tensor *t = tc_to(h, dt, dev);
    tc_tensor_release(h);
    return t;
}

tc_tensor *tc_arange(double start, double end, double step, tc_dtype dt, tc_device dev) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step)) {
        tc_error("arange: step must be non-zero and bounds finite");
        return NULL;
    }
    double nf = ceil((end - start) / step);
    if (nf > 0x1p53) {
        tc_error("arange: too many elements (%g)", nf);
        return NULL;
    }
    int64_t n = nf > 0 ? (int64_t)nf : 0;
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) { tc_error("out of memory"); return NULL; }
    for (int64_t i = 0; i < n; i++) v[i] = start + (double)i * step;
    tc_tensor *t = from_f64(v, n, dt, dev);
    free(v);
    return t;
}

tc_tensor *tc_linspace(double start, double end, int64_t n, tc_dtype dt, tc_device dev) {
    if (n < 0) { tc_error("linspace: number of steps must be non-negative"); return NULL; }
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) { tc_error("out of memory"); return NULL; }
    double step = n > 1 ? (end - start) / (double)(n - 1) : 0;
    /* like PyTorch: fill the second half from the end, so the last value is exact (a single
     * step is the start) */
    for (int64_t i = 0; i < n; i++)
        v[i] = n == 1 || i < n / 2 ? start + step * (double)i : end - step * (double)(n - 1 - i);
    tc_tensor *t = from_f64(v, n, dt, dev);
    free(v);
    return t;
}

int tc_item(const tc_tensor *t, double *out) {
    if (tc_numel(t) != 1) {
        char s[128];
        tc_shape_str(t->ndim, t->shape, s, sizeof s);
        return tc_error("item: only one-element tensors can be converted to a number (shape %s)", s);
    }
    if (t->storage->device.type != TC_CPU) {
        tc_tensor *h = tc_to((tc_tensor *)t, t->dtype, TC_DEV_CPU);
        if (!h) return TC_ERR;
        int64_t idx[TC_MAX_DIMS] = {0};
        *out = tc_get(h, idx);
        tc_tensor_release(h);
        return TC_OK;
    }
    int64_t idx[TC_MAX_DIMS] = {0};
    *out = tc_get(t, idx);
    return TC_OK;
}
