/* optim.cu: the fused optimizer updates (SGD, Adam/AdamW) and the EMA blend, one kernel each
 * over contiguous f32 or f64 tensors, as core/cpu/optim.c: the same order of operations, the
 * same fused multiply-adds and the same scalars (Adam's update is both devices' core/adam.h),
 * so the GPU's steps are the CPU's bit for bit. */
#include "cuda.h"
#include "../core/adam.h"

#include <math.h>

static int check_tensors(const char *op, const tc_tensor *p, const tc_tensor *g) {
    if (p->dtype != TC_F32 && p->dtype != TC_F64)
        return tc_error("%s: unsupported dtype %s", op, tc_dtype_name(p->dtype));
    if (g->dtype != p->dtype)
        return tc_error("%s: %s tensor with a %s parameter", op, tc_dtype_name(g->dtype), tc_dtype_name(p->dtype));
    return TC_OK;
}

/* ---- SGD: grad.add(p, alpha=wd); buf.mul_(m).add_(d, 1-damp) (buf = d on the first step);
 * nesterov: d.add(buf, alpha=m); p.add_(d, alpha=-lr). buf is NULL without momentum. -------- */
template <typename T>
__global__ void sgd_kernel(T *p, const T *g, T *buf, int64_t n, T wd, T mom, T damp1, T neg_lr, bool nesterov,
                           bool first) {
    TCU_GRID_STRIDE(i, n) {
        T pi = p[i], d = fma(pi, wd, g[i]);
        if (buf) {
            T b = first ? d : fma(d, damp1, buf[i] * mom);
            buf[i] = b;
            d = nesterov ? fma(b, mom, d) : b;
        }
        p[i] = fma(d, neg_lr, pi);
    }
}

template <typename T>
static int sgd_launch(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o, int64_t n) {
    TCU_LAUNCH(sgd_kernel<T>, tcu_blocks(n), TCU_THREADS, 0, (T *)tcu_ptr(p), (const T *)tcu_ptr(g),
               buf ? (T *)tcu_ptr(buf) : (T *)NULL, n, (T)o->weight_decay, (T)o->momentum, (T)(1 - o->dampening),
               (T)-o->lr, o->nesterov, o->first);
    TCU_LAUNCHED("sgd");
    return TC_OK;
}

extern "C" int tc_cuda_sgd_step(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o) {
    if (check_tensors("sgd", p, g) != TC_OK) return TC_ERR;
    int64_t n = tc_numel(p);
    if (n == 0) return TC_OK;
    return p->dtype == TC_F32 ? sgd_launch<float>(p, g, buf, o, n) : sgd_launch<double>(p, g, buf, o, n);
}

/* ---- Adam and AdamW: core/adam.h's update; the scalars in double on the host ---------------- */
template <typename T> struct adam_t { TC_ADAM_FIELDS(T) };

template <typename T>
__global__ void adam_kernel(T *p, const T *g, T *m, T *v, T *vmax, int64_t n, adam_t<T> s) {
    TCU_GRID_STRIDE(i, n) TC_ADAM_UPDATE(T, fma, tcu_mul_rn, sqrt, s, p, g, m, v, vmax, i);
}

template <typename T>
static int adam_launch(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                       const tc_adam_opts *o, int64_t n) {
    tc_adam_scalars c = tc_adam_scalars_of(o, sizeof(T) == 4);
    adam_t<T> k = TC_ADAM_ROUND(T, c);
    TCU_LAUNCH(adam_kernel<T>, tcu_blocks(n), TCU_THREADS, 0, (T *)tcu_ptr(p), (const T *)tcu_ptr(g), (T *)tcu_ptr(m),
               (T *)tcu_ptr(v), vmax ? (T *)tcu_ptr(vmax) : (T *)NULL, n, k);
    TCU_LAUNCHED(o->decoupled ? "adamw" : "adam");
    return TC_OK;
}

extern "C" int tc_cuda_adam_step(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                                 const tc_adam_opts *o) {
    if (check_tensors("adam", p, g) != TC_OK) return TC_ERR;
    int64_t n = tc_numel(p);
    if (n == 0) return TC_OK;
    return p->dtype == TC_F32 ? adam_launch<float>(p, g, m, v, vmax, o, n)
                              : adam_launch<double>(p, g, m, v, vmax, o, n);
}

/* ---- EMA: s.sub_((1 - decay) * (s - p)) ------------------------------------------------------ */
template <typename T>
__global__ void ema_kernel(T *s, const T *p, int64_t n, T w) {
    TCU_GRID_STRIDE(i, n) s[i] = s[i] - tcu_mul_rn(w, s[i] - p[i]);
}

extern "C" int tc_cuda_ema_update(tc_tensor *shadow, const tc_tensor *p, double decay) {
    if (check_tensors("ema", shadow, p) != TC_OK) return TC_ERR;
    int64_t n = tc_numel(shadow);
    if (n == 0) return TC_OK;
    if (shadow->dtype == TC_F32)
        TCU_LAUNCH(ema_kernel<float>, tcu_blocks(n), TCU_THREADS, 0, (float *)tcu_ptr(shadow),
                   (const float *)tcu_ptr(p), n, (float)(1 - decay));
    else
        TCU_LAUNCH(ema_kernel<double>, tcu_blocks(n), TCU_THREADS, 0, (double *)tcu_ptr(shadow),
                   (const double *)tcu_ptr(p), n, 1 - decay);
    TCU_LAUNCHED("ema");
    return TC_OK;
}
