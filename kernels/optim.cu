/* optim.cu: the fused optimizer updates (SGD, Adam/AdamW) and the EMA blend, one kernel each
 * over contiguous f32 or f64 tensors, as core/cpu/optim.c: the same order of operations, the
 * same fused multiply-adds and the same scalars, so the GPU's steps are the CPU's bit for bit. */
#include "cuda.h"

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

/* ---- Adam and AdamW: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad,
 * grad, 1 - beta2); amsgrad: the running max (NaN wins); p.addcdiv_(exp_avg, sqrt(v) /
 * sqrt(bias_correction2) + eps, value=-lr / bias_correction1). Scalars in double on the host,
 * as the CPU's adam_consts (PyTorch's Python code) computes them. ------------------------------ */
typedef struct {
    double shrink, wd;       /* AdamW: p * (1 - lr * wd); Adam: grad + wd * p (one is a no-op) */
    double coef;             /* lerp weight (1 - beta1), less 1 when the weight is not small */
    bool small;              /* PyTorch's lerp starts from the nearer end: exp_avg if small */
    double b2, w2, bc2_sqrt, eps, neg_step;
} adam_k;

static adam_k adam_consts(const tc_adam_opts *o, bool f32) {
    double step = (double)o->step;
    double bc1 = 1 - pow(o->beta1, step), bc2 = 1 - pow(o->beta2, step);
    bool decay = o->weight_decay != 0;
    double w1 = 1 - o->beta1;
    if (f32) w1 = (float)w1;
    adam_k k;
    k.shrink = decay && o->decoupled ? 1 - o->lr * o->weight_decay : 1;
    k.wd = decay && !o->decoupled ? o->weight_decay : 0;
    k.small = fabs(w1) < 0.5;
    k.b2 = o->beta2;
    k.w2 = 1 - o->beta2;
    k.bc2_sqrt = pow(bc2, 0.5);
    k.eps = o->eps;
    k.neg_step = -(o->lr / bc1);
    /* weight - 1 in the tensor's precision, as PyTorch's lerp computes it */
    k.coef = k.small ? w1 : f32 ? (double)((float)w1 - 1.0f) : w1 - 1;
    return k;
}

/* the scalars rounded to the tensor's dtype, as the CPU's loop rounds them */
template <typename T> struct adam_t { T shrink, wd, coef, b2, w2, bc2_sqrt, eps, neg_step; bool small; };

template <typename T>
__global__ void adam_kernel(T *p, const T *g, T *m, T *v, T *vmax, int64_t n, adam_t<T> k) {
    TCU_GRID_STRIDE(i, n) {
        T pi = tcu_mul_rn(p[i], k.shrink), gi = fma(pi, k.wd, g[i]), mi = m[i];
        mi = fma(k.coef, gi - mi, k.small ? mi : gi);
        T vi = fma(k.w2 * gi, gi, v[i] * k.b2);
        m[i] = mi;
        v[i] = vi;
        if (vmax) {
            T mx = vmax[i];
            vi = (mx > vi || mx != mx) ? mx : vi;
            vmax[i] = vi;
        }
        /* sqrt and division are correctly rounded, as the CPU's */
        p[i] = pi + tcu_mul_rn(k.neg_step, mi) / (sqrt(vi) / k.bc2_sqrt + k.eps);
    }
}

template <typename T>
static int adam_launch(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                       const tc_adam_opts *o, int64_t n) {
    adam_k c = adam_consts(o, sizeof(T) == 4);
    adam_t<T> k = {(T)c.shrink, (T)c.wd, (T)c.coef, (T)c.b2, (T)c.w2, (T)c.bc2_sqrt, (T)c.eps, (T)c.neg_step, c.small};
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
