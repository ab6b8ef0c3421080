/* autocast.c: mixed precision as a scope. While it is on, the ops that gain from half
 * precision (matmul, bmm, linear, convolutions, attention) cast their f32 inputs to the scope's
 * dtype (f16 or bf16) and compute there, with f32 accumulation in the kernels; the ops that
 * need range or precision (norms, softmax, losses, reductions) cast f16 / bf16 inputs up to f32.
 * Casts are differentiable, so f32 parameters receive f32 gradients. Backward passes run with
 * autocast off: each op's backward follows the dtypes its forward saw. */
#include "../internal.h"

static _Thread_local bool autocast_on;
static _Thread_local tc_dtype autocast_dt = TC_BF16;

bool tc_autocast_enabled(void) { return autocast_on; }
tc_dtype tc_autocast_dtype(void) { return autocast_dt; }

int tc_set_autocast(bool on, tc_dtype dt) {
    if (dt != TC_F16 && dt != TC_BF16)
        return tc_error("autocast: dtype must be f16 or bf16, got %s", tc_dtype_name(dt));
    autocast_on = on;
    autocast_dt = dt;
    return TC_OK;
}

/* the dtype an input of a kind-of-op takes under the scope (its own when left alone) */
static tc_dtype cast_to(tc_cast_kind kind, tc_dtype dt) {
    if (kind == TC_CAST_LOWER) return dt == TC_F32 ? autocast_dt : dt;
    return dt == TC_F16 || dt == TC_BF16 ? TC_F32 : dt;
}

int tc_autocast_inputs(tc_cast_kind kind, int n, tc_tensor *const *in, tc_tensor **out) {
    for (int i = 0; i < n; i++) out[i] = NULL;
    for (int i = 0; i < n; i++) {
        tc_tensor *x = in[i];
        if (!x) continue;
        tc_dtype dt = autocast_on ? cast_to(kind, x->dtype) : x->dtype;
        out[i] = dt == x->dtype ? tc_tensor_retain(x) : tc_to(x, dt, x->storage->device);
        if (!out[i]) {
            tc_autocast_release(n, out);
            return TC_ERR;
        }
    }
    return TC_OK;
}

void tc_autocast_release(int n, tc_tensor **t) {
    for (int i = 0; i < n; i++) {
        tc_tensor_release(t[i]);
        t[i] = NULL;
    }
}
