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

#endif
