/* adam.h: Adam's and AdamW's update written once for both devices: the CPU kernel
 * (core/cpu/optim.c, C) and the CUDA kernel (kernels/optim.cu, C++) compile this header, as
 * both draw random numbers from core/philox.h, so the GPU's steps are the CPU's bit for bit.
 * Following PyTorch's single-tensor update:
 *   exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
 *   amsgrad: the running max of exp_avg_sq (NaN wins, as torch.maximum);
 *   p.addcdiv_(exp_avg, sqrt(v) / sqrt(bias_correction2) + eps, value=-lr / bias_correction1),
 * with AdamW's decay p * (1 - lr wd) first, or Adam's grad + wd p. */
#ifndef TOCHA_ADAM_H
#define TOCHA_ADAM_H

#include "tocha.h"

#include <math.h>

/* the scalars of one step, computed in double on the host as PyTorch's Python code does */
typedef struct {
    double shrink, wd; /* AdamW: p * (1 - lr * wd); Adam: grad + wd * p (one is a no-op) */
    double coef;       /* lerp weight (1 - beta1), less 1 when the weight is not small */
    double b2, w2, bc2_sqrt, eps, neg_step;
    bool small;        /* PyTorch's lerp starts from the nearer end: exp_avg if small */
} tc_adam_scalars;

/* f32: the lerp weight is rounded as a float tensor's lerp rounds it */
static inline tc_adam_scalars tc_adam_scalars_of(const tc_adam_opts *o, bool f32) {
    double step = (double)o->step;
    double bc1 = 1 - pow(o->beta1, step), bc2 = 1 - pow(o->beta2, step);
    bool decay = o->weight_decay != 0;
    double w1 = 1 - o->beta1;
    if (f32) w1 = (float)w1;
    tc_adam_scalars k;
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

/* the scalars rounded to the tensor's dtype T, as the update reads them: a struct of
 * TC_ADAM_FIELDS(T), initialised by TC_ADAM_ROUND(T, k) from a tc_adam_scalars k */
#define TC_ADAM_FIELDS(T) T shrink, wd, coef, b2, w2, bc2_sqrt, eps, neg_step; bool small;
#define TC_ADAM_ROUND(T, k)                                                                      \
    {(T)(k).shrink, (T)(k).wd, (T)(k).coef, (T)(k).b2, (T)(k).w2, (T)(k).bc2_sqrt, (T)(k).eps,   \
     (T)(k).neg_step, (k).small}

/* Element i of p, m, v (and vmax, NULL without amsgrad) updated from g[i], in T with the
 * rounded scalars s. FMA(a, b, c) is a * b + c rounded once, as PyTorch's CPU kernels fuse
 * a + alpha * b, lerp and addcmul; MUL(a, b) a product rounded on its own (nvcc would fuse
 * one into a following add where the CPU rounds twice); SQRT correctly rounded. */
#define TC_ADAM_UPDATE(T, FMA, MUL, SQRT, s, p, g, m, v, vmax, i)                                \
    do {                                                                                         \
        T pi_ = MUL((p)[i], (s).shrink), gi_ = FMA(pi_, (s).wd, (g)[i]), mi_ = (m)[i];           \
        mi_ = FMA((s).coef, gi_ - mi_, (s).small ? mi_ : gi_);                                   \
        T vi_ = FMA(MUL((s).w2, gi_), gi_, MUL((v)[i], (s).b2));                                 \
        (m)[i] = mi_;                                                                            \
        (v)[i] = vi_;                                                                            \
        if (vmax) {                                                                              \
            T mx_ = (vmax)[i];                                                                   \
            vi_ = ((mx_ > vi_) | (mx_ != mx_)) ? mx_ : vi_;                                      \
            (vmax)[i] = vi_;                                                                     \
        }                                                                                        \
        (p)[i] = pi_ + MUL((s).neg_step, mi_) / (SQRT(vi_) / (s).bc2_sqrt + (s).eps);            \
    } while (0)

#endif
