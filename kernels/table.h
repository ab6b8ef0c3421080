/* table.h: the exported entries of kernels/, one per slot of the CUDA kernel table
 * (table.c), with the contracts of the CPU's (core/internal.h). A C header: table.c is C,
 * the kernel files are C++. */
#ifndef TOCHA_KERNELS_TABLE_H
#define TOCHA_KERNELS_TABLE_H

#include "../core/internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* device.cu: runtime, copies between devices */
void *tc_cuda_alloc(size_t nbytes);
void tc_cuda_free(void *p);
int tc_cuda_copy(tc_tensor *dst, const tc_tensor *src); /* either side may be on the host */
/* elementwise.cu */
int tc_cuda_fill(tc_tensor *dst, double v);
int tc_cuda_copy_device(tc_tensor *dst, const tc_tensor *src); /* both on the GPU; any strides, dtypes */
int tc_cuda_unary(tc_tensor *out, const tc_tensor *x, tc_op op, double a, double b);
int tc_cuda_unary_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x, const tc_tensor *y,
                           tc_op op, double a, double b);
int tc_cuda_binary(tc_tensor *out, const tc_tensor *a, const tc_tensor *b, tc_op op);
int tc_cuda_where(tc_tensor *out, const tc_tensor *c, const tc_tensor *a, const tc_tensor *b);
/* reduce.cu */
int tc_cuda_reduce(tc_tensor *out, const tc_tensor *x, tc_op op, int nred);
int tc_cuda_arg_reduce(tc_tensor *values, tc_tensor *indices, const tc_tensor *x, tc_op op);
int tc_cuda_pow_sum(const tc_tensor *x, double p, double *out);
/* gemm.cu (cuBLASLt) */
int tc_cuda_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta);
/* random.cu: Philox, the CPU's numbers exactly */
int tc_cuda_fill_uniform(tc_tensor *t, uint64_t seed, uint64_t offset, double lo, double hi);
int tc_cuda_fill_normal(tc_tensor *t, uint64_t seed, uint64_t offset, double mean, double std);
int tc_cuda_dropout(tc_tensor *y, const tc_tensor *x, double p, uint64_t seed, uint64_t offset);
/* index.cu */
int tc_cuda_index_select(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx);
int tc_cuda_index_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src);
int tc_cuda_gather(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx);
int tc_cuda_scatter_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src);
/* conv.cu (cuDNN, behind kernels/cudnn.h) */
int tc_cuda_conv2d(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b,
                   const tc_conv_params *p);
int tc_cuda_conv2d_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                            const tc_tensor *x, const tc_tensor *w, const tc_conv_params *p);
/* pool.cu */
int tc_cuda_avg_pool2d(tc_tensor *y, const tc_tensor *x, const tc_pool_params *p);
int tc_cuda_avg_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_pool_params *p);
int tc_cuda_max_pool2d(tc_tensor *y, tc_tensor *argmax, const tc_tensor *x, const tc_pool_params *p);
int tc_cuda_max_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *argmax);
int tc_cuda_interpolate(tc_tensor *y, const tc_tensor *x, tc_interp_mode mode, bool align_corners);
int tc_cuda_interpolate_backward(tc_tensor *gx, const tc_tensor *gy, tc_interp_mode mode, bool align_corners);
int tc_cuda_pad(tc_tensor *y, const tc_tensor *x, const int64_t *pads, tc_pad_mode mode, double value);
int tc_cuda_pad_backward(tc_tensor *gx, const tc_tensor *gy, const int64_t *pads, tc_pad_mode mode);
/* softmax.cu */
int tc_cuda_softmax(tc_tensor *y, const tc_tensor *x, int dim, bool log);
int tc_cuda_softmax_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool log);
int tc_cuda_cross_entropy(tc_tensor *loss, tc_tensor *tw, const tc_tensor *logits, const tc_tensor *target,
                          const tc_tensor *weight, int64_t ignore_index, double smoothing);
int tc_cuda_cross_entropy_backward(tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, double scale,
                                   const tc_tensor *logits, const tc_tensor *target, const tc_tensor *weight,
                                   int64_t ignore_index, double smoothing);
/* norm.cu */
int tc_cuda_layer_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                       const tc_tensor *w, const tc_tensor *b, double eps);
int tc_cuda_layer_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                const tc_tensor *w);
int tc_cuda_group_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                       const tc_tensor *w, const tc_tensor *b, int groups, double eps);
int tc_cuda_group_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                                const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                                const tc_tensor *w, int groups);
/* attention.cu */
int tc_cuda_sdpa(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                 const tc_tensor *mask, const tc_sdpa_params *p);
int tc_cuda_sdpa_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *gout,
                          const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                          const tc_tensor *lse, const tc_sdpa_params *p);
/* optim.cu */
int tc_cuda_sgd_step(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o);
int tc_cuda_adam_step(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                      const tc_adam_opts *o);
int tc_cuda_ema_update(tc_tensor *shadow, const tc_tensor *p, double decay);

extern const tc_kernels tc_cuda_kernels;

#ifdef __cplusplus
}
#endif

#endif
