/* cpu.h: what the CPU kernel files share: the strided iterator that every elementwise
 * loop walks, per-dtype element load/store, and the kernels each file exports to the
 * table in cpu.c. */
#ifndef TOCHA_CPU_H
#define TOCHA_CPU_H

#include "../internal.h"

/* ---- strided iteration: up to 4 tensors of one shape, dims merged where possible -------- */
typedef struct {
    int nops, ndim;
    int64_t shape[TC_MAX_DIMS];
    int64_t stride[4][TC_MAX_DIMS];   /* in elements, per operand */
    char *base[4];
    size_t esize[4];
} tc_iter;

void tc_iter_init(tc_iter *it, int nops, const tc_tensor *const *ts);
/* calls fn on each innermost run: n elements, pointers, and element strides */
typedef void (*tc_iter_fn)(int64_t n, char **p, const int64_t *stride, void *ctx);
void tc_iter_run(tc_iter *it, tc_iter_fn fn, void *ctx);

/* ---- element access by dtype ------------------------------------------------------------ */
double tc_load(const void *p, tc_dtype dt);
void tc_store(void *p, tc_dtype dt, double v);

/* ---- kernels (one line per kernel in the table of cpu.c) -------------------------------- */
int tc_cpu_copy(tc_tensor *dst, const tc_tensor *src);
int tc_cpu_fill(tc_tensor *dst, double v);
int tc_cpu_unary(tc_tensor *out, const tc_tensor *x, tc_op op, double a, double b);
int tc_cpu_unary_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *x, const tc_tensor *y,
                          tc_op op, double a, double b);
int tc_cpu_binary(tc_tensor *out, const tc_tensor *a, const tc_tensor *b, tc_op op);
int tc_cpu_where(tc_tensor *out, const tc_tensor *c, const tc_tensor *a, const tc_tensor *b);
int tc_cpu_reduce(tc_tensor *out, const tc_tensor *x, tc_op op, int nred);
int tc_cpu_arg_reduce(tc_tensor *values, tc_tensor *indices, const tc_tensor *x, tc_op op);
int tc_cpu_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta);
int tc_cpu_fill_uniform(tc_tensor *t, uint64_t seed, uint64_t offset, double lo, double hi);
int tc_cpu_fill_normal(tc_tensor *t, uint64_t seed, uint64_t offset, double mean, double std);
/* index.c */
int tc_cpu_index_select(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx);
int tc_cpu_index_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src);
int tc_cpu_gather(tc_tensor *out, const tc_tensor *x, int dim, const tc_tensor *idx);
int tc_cpu_scatter_add(tc_tensor *out, int dim, const tc_tensor *idx, const tc_tensor *src);

/* optim.c */
int tc_cpu_sgd_step(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o);
int tc_cpu_adam_step(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                     const tc_adam_opts *o);
int tc_cpu_ema_update(tc_tensor *shadow, const tc_tensor *p, double decay);
int tc_cpu_pow_sum(const tc_tensor *x, double p, double *out);

/* conv.c, pool.c */
int tc_cpu_conv2d(tc_tensor *y, const tc_tensor *x, const tc_tensor *w, const tc_tensor *b, const tc_conv_params *p);
int tc_cpu_conv2d_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy, const tc_tensor *x,
                           const tc_tensor *w, const tc_conv_params *p);
int tc_cpu_avg_pool2d(tc_tensor *y, const tc_tensor *x, const tc_pool_params *p);
int tc_cpu_avg_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_pool_params *p);
int tc_cpu_max_pool2d(tc_tensor *y, tc_tensor *argmax, const tc_tensor *x, const tc_pool_params *p);
int tc_cpu_max_pool2d_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *argmax);
int tc_cpu_interpolate(tc_tensor *y, const tc_tensor *x, tc_interp_mode mode, bool align_corners);
int tc_cpu_interpolate_backward(tc_tensor *gx, const tc_tensor *gy, tc_interp_mode mode, bool align_corners);
int tc_cpu_pad(tc_tensor *y, const tc_tensor *x, const int64_t *pads, tc_pad_mode mode, double value);
int tc_cpu_pad_backward(tc_tensor *gx, const tc_tensor *gy, const int64_t *pads, tc_pad_mode mode);

/* softmax.c, norm.c, attention.c; rows of any float dtype and stride go through double */
void tc_cpu_load_row(double *dst, const char *src, int64_t n, int64_t stride, tc_dtype dt);
void tc_cpu_store_row(char *dst, const double *src, int64_t n, int64_t stride, tc_dtype dt);
double tc_cpu_softmax_row(double *r, int64_t n, bool as_log); /* in place; returns the logsumexp */
int64_t tc_cpu_offset_of(int64_t k, int n, const int64_t *shape, const int64_t *stride); /* k-th of n dims */
int tc_cpu_softmax(tc_tensor *y, const tc_tensor *x, int dim, bool as_log);
int tc_cpu_softmax_backward(tc_tensor *gx, const tc_tensor *gy, const tc_tensor *y, int dim, bool as_log);
int tc_cpu_cross_entropy(tc_tensor *loss, tc_tensor *tw, const tc_tensor *logits, const tc_tensor *target,
                         const tc_tensor *weight, int64_t ignore_index, double smoothing);
int tc_cpu_cross_entropy_backward(tc_tensor *glogits, tc_tensor *gtarget, const tc_tensor *gloss, double scale,
                                  const tc_tensor *logits, const tc_tensor *target, const tc_tensor *weight,
                                  int64_t ignore_index, double smoothing);
int tc_cpu_layer_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                      const tc_tensor *w, const tc_tensor *b, double eps);
int tc_cpu_layer_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                               const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd, const tc_tensor *w);
int tc_cpu_group_norm(tc_tensor *y, tc_tensor *mean, tc_tensor *rstd, const tc_tensor *x,
                      const tc_tensor *w, const tc_tensor *b, int groups, double eps);
int tc_cpu_group_norm_backward(tc_tensor *gx, tc_tensor *gw, tc_tensor *gb, const tc_tensor *gy,
                               const tc_tensor *x, const tc_tensor *mean, const tc_tensor *rstd,
                               const tc_tensor *w, int groups);
int tc_cpu_dropout(tc_tensor *y, const tc_tensor *x, double p, uint64_t seed, uint64_t offset);
int tc_cpu_sdpa(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                const tc_tensor *mask, const tc_sdpa_params *p);
int tc_cpu_sdpa_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *gout,
                         const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                         const tc_tensor *lse, const tc_sdpa_params *p);

#endif
