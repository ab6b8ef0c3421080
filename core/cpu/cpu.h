/* cpu.h: what the CPU kernel files share: the strided iterator that every elementwise loop
 * walks, rows through double, and the kernels each file exports to the table in cpu.c
 * (their prototypes come from the list in core/kernels.h). */
#ifndef TOCHA_CPU_H
#define TOCHA_CPU_H

#include "../internal.h"

/* ---- threads: below a minimum amount of work a loop runs on the calling thread ------------
 * Work counts elements: those read plus those written for a loop bound by memory (copies,
 * elementwise arithmetic through the iterator, reductions, pooling and interpolation), the
 * elements processed for one doing tens of operations on each (norms, softmax, losses,
 * attention's rows, optimizer steps, random fills). The minima (threads.c) are measured by
 * bench/threads.sh: below them a second thread costs more than it saves, and on a machine
 * shared with other work every parallel region risks waiting for a core. */
typedef enum { TC_PAR_MEMORY, TC_PAR_COMPUTE, TC_PAR_KINDS } tc_par_kind;
int64_t tc_cpu_par_min(tc_par_kind kind);
static inline bool tc_cpu_parallel(int64_t work, tc_par_kind kind) { return work >= tc_cpu_par_min(kind); }

/* ---- strided iteration: up to 4 tensors of one shape, dims merged where possible -------- */
typedef struct {
    int nops, ndim;
    int64_t shape[TC_MAX_DIMS];
    int64_t stride[4][TC_MAX_DIMS];   /* in elements, per operand */
    char *base[4];
    size_t esize[4];
    tc_par_kind kind; /* how tc_iter_run counts the work for the threads' minimum: MEMORY (set
                       * by tc_iter_init), COMPUTE for the ops that call exp, erf, tanh... */
} tc_iter;

void tc_iter_init(tc_iter *it, int nops, const tc_tensor *const *ts);
/* calls fn on each innermost run: n elements, pointers, and element strides */
typedef void (*tc_iter_fn)(int64_t n, char **p, const int64_t *stride, void *ctx);
void tc_iter_run(tc_iter *it, tc_iter_fn fn, void *ctx);

/* ---- the kernels of the table in cpu.c: tc_cpu_<name> for every kernel of kernels.h ---- */
TC_KERNELS(TC_KERNEL_CPU)

/* ---- rows of any float dtype and stride through double (softmax.c, norm.c, attention.c) -- */
void tc_cpu_load_row(double *dst, const char *src, int64_t n, int64_t stride, tc_dtype dt);
void tc_cpu_store_row(char *dst, const double *src, int64_t n, int64_t stride, tc_dtype dt);
double tc_cpu_softmax_row(double *r, int64_t n, bool as_log); /* in place; returns the logsumexp */
int64_t tc_cpu_offset_of(int64_t k, int n, const int64_t *shape, const int64_t *stride); /* k-th of n dims */

/* ---- f32 <-> f16 / bf16 runs (half.c): n elements, strides in elements; dt the half dtype -- */
void tc_cpu_half_from_f32(uint16_t *d, int64_t sd, const float *s, int64_t ss, int64_t n, tc_dtype dt);
void tc_cpu_f32_from_half(float *d, int64_t sd, const uint16_t *s, int64_t ss, int64_t n, tc_dtype dt);

/* ---- bf16 GEMM with f32 sums, AVX512-BF16 (gemm_bf16.c): row-major C [M, N] (f32 or bf16) =
 * alpha op(A) op(B) + beta C, A [M, K] (ta: stored [K, M]), B [K, N] (tb: stored [N, K]);
 * threads: split the tiles between OpenMP threads (false inside a parallel region). Only where
 * tc_cpu_gemm_bf16_ok(); tc_cpu_gemm and the convolution choose it. */
typedef struct {
    int64_t M, N, K, lda, ldb, ldc;
    bool ta, tb, threads;
    float alpha, beta;
    const uint16_t *a, *b;
    void *c;
    tc_dtype cdt;
} tc_gemm_bf16;
bool tc_cpu_gemm_bf16_ok(void);
int tc_cpu_gemm_bf16(const tc_gemm_bf16 *g);

/* ---- f32 GEMM for short products, AVX-512 (gemm_f32.c): row-major C [M, N] = op(A) [M, K]
 * op(B) [K, N] + beta C (C not read when beta is 0); op(A)[i][k] = ta ? a[k * lda + i] :
 * a[i * lda + k], op(B)[k][n] = tb ? b[n * ldb + k] : b[k * ldb + n]; threads: split rows
 * between OpenMP threads (outside a parallel region). tc_cpu_gemm_f32_ok(): the CPU has it. */
typedef struct {
    int64_t M, N, K, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    float beta;
    bool ta, tb, threads;
} tc_gemm_f32;
bool tc_cpu_gemm_f32_ok(void);
int tc_cpu_gemm_f32(const tc_gemm_f32 *g);

/* ---- conv2d with stride 1, no dilation, one group, f32 (conv_direct.c): y [N, O, OH, OW] =
 * x [N, C, H, W] zero-padded by ph rows on top and pw columns on the left (as many as the
 * output needs at the bottom and right), correlated with w [O, C, kh, kw] (flip: w is
 * [C, O, kh, kw], rotated by 180 degrees: the input gradient of a convolution), plus b [O]
 * (or NULL). ph and pw are at most kh - 1 and kw - 1. */
typedef struct {
    int64_t N, C, H, W, O, OH, OW, kh, kw, ph, pw;
    bool flip;
} tc_conv_direct;
int tc_cpu_conv_direct(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d);
/* its weight gradient: gw [O, C, kh, kw] = the correlation of the padded x with gy [N, O, OH, OW]
 * (d as for the forward; flip unused) */
int tc_cpu_conv_direct_grad_weight(float *gw, const float *x, const float *gy, const tc_conv_direct *d);
/* the same for 3x3 kernels by Winograd's F(2x2, 3x3) (conv_winograd.c; d as above, kh = kw = 3) */
int tc_cpu_conv_winograd(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d);
int tc_cpu_conv_winograd_grad_weight(float *gw, const float *x, const float *gy, const tc_conv_direct *d);
/* the same for 3x3 kernels on large images with many channels (conv_tiled.c): d as above,
 * kh = kw = 3, OH + 2 >= H + ph and OW + 2 >= W + pw */
int tc_cpu_conv_tiled(float *y, const float *x, const float *w, const float *b, const tc_conv_direct *d);

#endif
