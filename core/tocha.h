/* tocha.h: the public C header of the tocha engine: tensors, ops, autograd, optimizer
 * steps, the CUDA runtime. The I/O half (files, images, data loading, run logs) is
 * tocha_io.h.
 * Nothing here knows Lua. A function that can fail returns NULL or TC_ERR and leaves
 * a message for tc_last_error(); nothing aborts, exits or prints.
 *
 * Conventions: dims and positions passed as C integers are 0-based (negative dims
 * count from the end); index VALUES stored in tensors (argmax results, gather and
 * index_select indices, class targets, token ids) are 1-based, as in the Lua API.
 * Every tc_tensor * returned is a new reference: the caller releases it. */
#ifndef TOCHA_H
#define TOCHA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the kernel files are C++ */
#endif

#define TC_MAX_DIMS 8
#define TC_OK 0
#define TC_ERR (-1)

/* ---- errors ---------------------------------------------------------------- */
int tc_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *tc_last_error(void);

/* ---- dtypes and devices ----------------------------------------------------- */
typedef enum { TC_F32, TC_F64, TC_F16, TC_BF16, TC_I32, TC_I64, TC_U8, TC_BOOL, TC_NDTYPES } tc_dtype;
const char *tc_dtype_name(tc_dtype dt);
int tc_dtype_from_name(const char *name); /* -1 if unknown */
size_t tc_dtype_size(tc_dtype dt);
bool tc_dtype_is_float(tc_dtype dt);
tc_dtype tc_promote(tc_dtype a, tc_dtype b); /* result dtype of a binary op */

typedef enum { TC_CPU, TC_CUDA } tc_device_type;
typedef struct { tc_device_type type; int index; } tc_device;
extern const tc_device TC_DEV_CPU;
int tc_device_parse(const char *s, tc_device *out);
void tc_device_str(tc_device d, char *buf, size_t n);
bool tc_device_eq(tc_device a, tc_device b);

/* f16/bf16 conversions (round to nearest even) */
float tc_f16_to_f32(uint16_t h);
uint16_t tc_f32_to_f16(float f);
float tc_bf16_to_f32(uint16_t h);
uint16_t tc_f32_to_bf16(float f);

/* ---- storage and tensors ---------------------------------------------------- */
typedef struct tc_storage {
    int refcount;
    void *data;
    size_t nbytes;
    tc_device device;
    uint32_t version;              /* bumped by every in-place write */
    void (*release)(void *ctx);    /* set: data is borrowed (e.g. an mmap); called on free */
    bool pinned;                   /* page-locked host memory (tc_pin_memory) */
    void *release_ctx;
} tc_storage;

typedef struct tc_node tc_node;

typedef struct tc_tensor {
    int refcount;
    tc_storage *storage;
    tc_dtype dtype;
    int ndim;
    int64_t shape[TC_MAX_DIMS];
    int64_t stride[TC_MAX_DIMS];   /* in elements */
    int64_t offset;                /* in elements */
    bool requires_grad;
    bool is_view;                  /* shares storage with the tensor it was derived from */
    struct tc_tensor *grad;        /* accumulated by backward; NULL until reached */
    tc_node *grad_fn;              /* NULL for leaves */
} tc_tensor;

tc_storage *tc_storage_new(size_t nbytes, tc_device dev);
tc_storage *tc_storage_wrap(void *data, size_t nbytes, void (*release)(void *), void *ctx);
void tc_storage_retain(tc_storage *s);
void tc_storage_release(tc_storage *s);

tc_tensor *tc_tensor_retain(tc_tensor *t);
void tc_tensor_release(tc_tensor *t);
/* a tensor header over a storage (takes a new reference on it) */
tc_tensor *tc_tensor_make(tc_storage *s, tc_dtype dt, int ndim, const int64_t *shape,
                          const int64_t *stride, int64_t offset);
int64_t tc_numel(const tc_tensor *t);
int64_t tc_shape_numel(int ndim, const int64_t *shape);
bool tc_is_contiguous(const tc_tensor *t);
void *tc_data(const tc_tensor *t); /* address of the first element */
int tc_wrap_dim(int dim, int ndim, const char *op); /* normalises negative dims; TC_ERR if out of range */
void tc_shape_str(int ndim, const int64_t *shape, char *buf, size_t n); /* "[4 x 3]" */
/* bytes ever allocated for tensor storage, plus 512 per storage for what a tensor costs besides
 * its data (monotonic; the binding paces Lua's collector with it) */
size_t tc_mem_allocated_total(void);
size_t tc_mem_in_use(void);
/* the CPU's caching allocator (core/cpu/alloc.c): tensor data above 256 bytes. Counts as the
 * cuda allocator's, "os" for what came from (or went back to) the system. */
typedef struct {
    size_t allocated, max_allocated;   /* bytes in blocks handed out now / at the peak */
    size_t reserved, max_reserved;     /* bytes held from the system (handed out + cached) */
    int64_t allocs, frees, cache_hits, os_allocs, os_frees, ooms;
    bool caching;                      /* false under TOCHA_CPU_CACHE=0 and sanitizer builds */
} tc_cpu_memory_stats;
void tc_cpu_memory(tc_cpu_memory_stats *out);
void tc_cpu_empty_cache(void);                   /* gives every cached block back to the system */
void tc_cpu_reset_peak(void);                    /* the peaks restart from the current values */
void tc_cpu_memory_summary(char *buf, size_t n); /* a readable table of the stats and lists */

/* ---- ops: one enum, one name table ----------------------------------------- */
#define TC_OP_LIST(X) \
    X(NONE, "none") X(CUSTOM, "CustomFunction")                                        \
    /* views */                                                                         \
    X(VIEW, "view") X(EXPAND, "expand") X(PERMUTE, "permute") X(NARROW, "narrow")      \
    X(SELECT, "select") X(CONTIGUOUS, "contiguous") X(TO, "to") X(CLONE, "clone")      \
    /* unary */                                                                         \
    X(NEG, "neg") X(EXP, "exp") X(LOG, "log") X(SQRT, "sqrt") X(RSQRT, "rsqrt")        \
    X(ABS, "abs") X(SIN, "sin") X(COS, "cos") X(TANH, "tanh") X(SIGMOID, "sigmoid")    \
    X(RELU, "relu") X(SILU, "silu") X(GELU, "gelu") X(GELU_TANH, "gelu_tanh")          \
    X(SOFTPLUS, "softplus") X(SIGN, "sign") X(RECIPROCAL, "reciprocal")                \
    X(SQUARE, "square") X(LOGICAL_NOT, "logical_not") X(ISFINITE, "isfinite")          \
    X(QUICK_GELU, "quick_gelu")                                                         \
    /* unary with scalar arguments a, b */                                              \
    X(ADD_SCALAR, "add_scalar") X(MUL_SCALAR, "mul_scalar") X(POW_SCALAR, "pow_scalar")\
    X(RPOW_SCALAR, "rpow_scalar") X(RSUB_SCALAR, "rsub_scalar")                        \
    X(RDIV_SCALAR, "rdiv_scalar") X(CLAMP, "clamp") X(LEAKY_RELU, "leaky_relu")        \
    /* binary (broadcasting) */                                                         \
    X(ADD, "add") X(SUB, "sub") X(MUL, "mul") X(DIV, "div") X(POW, "pow")              \
    X(MAXIMUM, "maximum") X(MINIMUM, "minimum")                                         \
    X(EQ, "eq") X(NE, "ne") X(LT, "lt") X(LE, "le") X(GT, "gt") X(GE, "ge")            \
    X(LOGICAL_AND, "logical_and") X(LOGICAL_OR, "logical_or")                          \
    X(WHERE, "where")                                                                   \
    /* reductions */                                                                    \
    X(SUM, "sum") X(MEAN, "mean") X(MAX, "max") X(MIN, "min") X(PROD, "prod")          \
    X(ARGMAX, "argmax") X(ARGMIN, "argmin") X(LOGSUMEXP, "logsumexp") X(NORM, "norm")  \
    /* linear algebra */                                                                \
    X(MATMUL, "matmul") X(LINEAR, "linear")                                             \
    /* indexing */                                                                      \
    X(INDEX_SELECT, "index_select") X(GATHER, "gather") X(SCATTER_ADD, "scatter_add")  \
    X(MASKED_FILL, "masked_fill") X(CAT, "cat") X(EMBEDDING, "embedding")              \
    /* neural-net ops */                                                                \
    X(CONV2D, "conv2d") X(CONV_TRANSPOSE2D, "conv_transpose2d")                        \
    X(AVG_POOL2D, "avg_pool2d") X(MAX_POOL2D, "max_pool2d")                            \
    X(INTERPOLATE, "interpolate") X(PAD, "pad")                                         \
    X(SOFTMAX, "softmax") X(LOG_SOFTMAX, "log_softmax")                                \
    X(CROSS_ENTROPY, "cross_entropy") X(MSE_LOSS, "mse_loss") X(L1_LOSS, "l1_loss")    \
    X(LAYER_NORM, "layer_norm") X(GROUP_NORM, "group_norm") X(DROPOUT, "dropout")      \
    X(GROUP_NORM_SILU, "group_norm_silu") X(SDPA, "scaled_dot_product_attention")     \
    X(BIAS_ACT, "bias_act") X(GEGLU, "geglu")

#define TC_OP_ENUM_(name, str) TC_OP_##name,
typedef enum tc_op { TC_OP_LIST(TC_OP_ENUM_) TC_OP_COUNT } tc_op;
#undef TC_OP_ENUM_
const char *tc_op_name(tc_op op);

/* ---- creation ---------------------------------------------------------------- */
tc_tensor *tc_empty(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev);
tc_tensor *tc_full(int ndim, const int64_t *shape, double value, tc_dtype dt, tc_device dev);
tc_tensor *tc_zeros(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev);
tc_tensor *tc_arange(double start, double end, double step, tc_dtype dt, tc_device dev);
tc_tensor *tc_linspace(double start, double end, int64_t n, tc_dtype dt, tc_device dev);
tc_tensor *tc_scalar_tensor(double v, tc_dtype dt, tc_device dev); /* 0-dim */

/* element access (any dtype, any strides), for the binding and tests */
double tc_get(const tc_tensor *t, const int64_t *index);
int tc_item(const tc_tensor *t, double *out); /* one-element tensors */

/* ---- random numbers: Philox 4x32-10, state (seed, offset) --------------------- */
void tc_manual_seed(uint64_t seed);
void tc_rng_get(uint64_t *seed, uint64_t *offset);
void tc_rng_set(uint64_t seed, uint64_t offset);
/* reserves n 128-bit counters; returns the first one's offset */
uint64_t tc_rng_reserve(uint64_t n);
/* the four 32-bit words Philox gives for (seed, counter) */
void tc_philox(uint64_t seed, uint64_t counter, uint32_t out[4]);
tc_tensor *tc_rand(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev);
tc_tensor *tc_randn(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev);
tc_tensor *tc_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, tc_dtype dt, tc_device dev);
tc_tensor *tc_randperm(int64_t n, tc_dtype dt, tc_device dev); /* values 1..n */
tc_tensor *tc_multinomial(tc_tensor *probs, int64_t n, bool replacement); /* 1-based */
int tc_uniform_(tc_tensor *t, double lo, double hi);
int tc_normal_(tc_tensor *t, double mean, double std);

/* ---- views (never copy) ------------------------------------------------------ */
tc_tensor *tc_view(tc_tensor *x, int ndim, const int64_t *shape);   /* one -1 allowed */
tc_tensor *tc_reshape(tc_tensor *x, int ndim, const int64_t *shape); /* view if possible */
tc_tensor *tc_transpose(tc_tensor *x, int d0, int d1);
tc_tensor *tc_permute(tc_tensor *x, const int *perm);
tc_tensor *tc_narrow(tc_tensor *x, int dim, int64_t start, int64_t length);
tc_tensor *tc_select(tc_tensor *x, int dim, int64_t index);          /* drops dim */
tc_tensor *tc_expand(tc_tensor *x, int ndim, const int64_t *shape);  /* -1 keeps a size */
tc_tensor *tc_squeeze(tc_tensor *x, int dim); /* dim = TC_ALL_DIMS squeezes every size-1 dim */
tc_tensor *tc_unsqueeze(tc_tensor *x, int dim);
tc_tensor *tc_flatten(tc_tensor *x, int start, int end);
#define TC_ALL_DIMS 1000

/* ---- copies and conversions -------------------------------------------------- */
tc_tensor *tc_contiguous(tc_tensor *x); /* new reference to x itself when already contiguous */
/* memory formats (PyTorch's): CONTIGUOUS is row-major; CHANNELS_LAST lays a 4-d [N, C, H, W]
 * out as [N, H, W, C] (strides {H*W*C, 1, W*C, C}) with its shape unchanged. Ops that take
 * images (conv2d, group_norm, pooling, interpolate) and elementwise ops keep the layout of
 * their input; a tensor whose layout is both (C = 1, or H = W = 1) counts as contiguous. */
typedef enum { TC_CONTIGUOUS_FORMAT, TC_CHANNELS_LAST } tc_memory_format;
bool tc_is_contiguous_format(const tc_tensor *t, tc_memory_format f);
tc_tensor *tc_contiguous_format(tc_tensor *x, tc_memory_format f); /* CHANNELS_LAST: 4-d only */
tc_tensor *tc_empty_format(int ndim, const int64_t *shape, tc_dtype dt, tc_device dev, tc_memory_format f);
/* the format x is dense in: CHANNELS_LAST when x is 4-d, channels-last and not row-major */
tc_memory_format tc_suggest_format(const tc_tensor *x);
tc_tensor *tc_clone(tc_tensor *x);
tc_tensor *tc_to(tc_tensor *x, tc_dtype dt, tc_device dev); /* x itself when nothing changes */
tc_tensor *tc_detach(tc_tensor *x);

/* ---- in-place (bump the version counter; error on a leaf that requires grad) --- */
int tc_copy_(tc_tensor *dst, tc_tensor *src);      /* src broadcasts to dst */
int tc_fill_(tc_tensor *dst, double value);
int tc_zero_(tc_tensor *dst);
int tc_binary_(tc_op op, tc_tensor *a, tc_tensor *b); /* a = a op b */
int tc_unary_(tc_op op, tc_tensor *x, double a, double b);

/* ---- elementwise ---------------------------------------------------------------- */
tc_tensor *tc_unary(tc_op op, tc_tensor *x);                     /* NEG .. QUICK_GELU */
tc_tensor *tc_unary_s(tc_op op, tc_tensor *x, double a, double b); /* ADD_SCALAR .. LEAKY_RELU */
tc_tensor *tc_binary(tc_op op, tc_tensor *a, tc_tensor *b);      /* ADD .. LOGICAL_OR */
tc_tensor *tc_where(tc_tensor *cond, tc_tensor *a, tc_tensor *b);
int tc_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb,
                       int *nout, int64_t *out, const char *op);

/* ---- reductions ----------------------------------------------------------------- */
/* dims: 0-based list of ndims dims; ndims == 0 reduces over all dims */
tc_tensor *tc_reduce(tc_op op, tc_tensor *x, int ndims, const int *dims, bool keepdim); /* SUM MEAN MAX MIN PROD LOGSUMEXP */
tc_tensor *tc_var(tc_tensor *x, int ndims, const int *dims, double correction, bool keepdim);
tc_tensor *tc_std(tc_tensor *x, int ndims, const int *dims, double correction, bool keepdim);
tc_tensor *tc_norm(tc_tensor *x, double p, int ndims, const int *dims, bool keepdim);
/* max/min along one dim: values and 1-based indices (i64) */
int tc_max_dim(tc_op op, tc_tensor *x, int dim, bool keepdim, tc_tensor **values, tc_tensor **indices);
tc_tensor *tc_argmax(tc_op op, tc_tensor *x, int dim, bool keepdim); /* ARGMAX or ARGMIN; dim TC_ALL_DIMS: flat */

/* ---- linear algebra -------------------------------------------------------------- */
tc_tensor *tc_matmul(tc_tensor *a, tc_tensor *b); /* 1-D, 2-D and batched with broadcasting */
tc_tensor *tc_bmm(tc_tensor *a, tc_tensor *b);
tc_tensor *tc_linear(tc_tensor *x, tc_tensor *w, tc_tensor *b); /* b may be NULL */
tc_tensor *tc_outer(tc_tensor *a, tc_tensor *b);
/* symmetric eigendecomposition (core/ops/linalg.c, LAPACK's syevd in OpenBLAS; CPU, f32/f64, no
 * autograd): eigenvalues [..., n] in ascending order of the symmetric a [..., n, n], read from its
 * lower triangle (upper: the upper one); *vectors (when not NULL) receives the eigenvectors
 * [..., n, n], column j belonging to eigenvalue j */
tc_tensor *tc_linalg_eigh(tc_tensor *a, bool upper, tc_tensor **vectors);

/* ---- indexing ------------------------------------------------------------------- */
tc_tensor *tc_index_select(tc_tensor *x, int dim, tc_tensor *index);
tc_tensor *tc_gather(tc_tensor *x, int dim, tc_tensor *index);
tc_tensor *tc_scatter_add(tc_tensor *x, int dim, tc_tensor *index, tc_tensor *src);
tc_tensor *tc_masked_fill(tc_tensor *x, tc_tensor *mask, double value);
tc_tensor *tc_cat(int n, tc_tensor **xs, int dim);
tc_tensor *tc_stack(int n, tc_tensor **xs, int dim);
tc_tensor *tc_embedding(tc_tensor *index, tc_tensor *weight, int64_t padding_idx); /* padding_idx 0: none */
/* in place (mask must broadcast to x; version counters as tc_binary_) */
int tc_masked_fill_(tc_tensor *x, tc_tensor *mask, double value);
int tc_scatter_add_(tc_tensor *x, int dim, tc_tensor *index, tc_tensor *src);

/* ---- neural-net ops ---------------------------------------------------------------- */
typedef struct {
    int stride[2], padding[2], dilation[2], output_padding[2];
    int groups;
} tc_conv_params;
tc_tensor *tc_conv2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p);
tc_tensor *tc_conv_transpose2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p);

typedef struct {
    int kernel[2], stride[2], padding[2], dilation[2];
    bool ceil_mode, count_include_pad;
} tc_pool_params;
tc_tensor *tc_avg_pool2d(tc_tensor *x, const tc_pool_params *p);
tc_tensor *tc_max_pool2d(tc_tensor *x, const tc_pool_params *p);

typedef enum { TC_INTERP_NEAREST, TC_INTERP_BILINEAR } tc_interp_mode;
tc_tensor *tc_interpolate(tc_tensor *x, int64_t out_h, int64_t out_w, tc_interp_mode mode, bool align_corners);

typedef enum { TC_PAD_CONSTANT, TC_PAD_REFLECT, TC_PAD_REPLICATE } tc_pad_mode;
/* pads: pairs (before, after) starting from the LAST dim, as torch.nn.functional.pad */
tc_tensor *tc_pad(tc_tensor *x, int npairs, const int64_t *pads, tc_pad_mode mode, double value);

typedef enum { TC_REDUCTION_NONE, TC_REDUCTION_MEAN, TC_REDUCTION_SUM } tc_reduction;
tc_tensor *tc_softmax(tc_tensor *x, int dim);
tc_tensor *tc_log_softmax(tc_tensor *x, int dim);
/* logits [N, C] or [N, C, d...]; target i64 1-based class indices; weight may be NULL */
tc_tensor *tc_cross_entropy(tc_tensor *logits, tc_tensor *target, tc_tensor *weight,
                            int64_t ignore_index, double label_smoothing, tc_reduction red);
tc_tensor *tc_mse_loss(tc_tensor *a, tc_tensor *b, tc_reduction red);
tc_tensor *tc_l1_loss(tc_tensor *a, tc_tensor *b, tc_reduction red);
tc_tensor *tc_layer_norm(tc_tensor *x, int nnorm, tc_tensor *w, tc_tensor *b, double eps); /* last nnorm dims */
/* x [N, C, *] over `groups` groups of channels; silu: silu(group_norm(x)) as one op (diffusers'
 * norm and nonlinearity), which writes no intermediate and saves none for the backward */
tc_tensor *tc_group_norm(tc_tensor *x, int groups, tc_tensor *w, tc_tensor *b, double eps, bool silu);
tc_tensor *tc_dropout(tc_tensor *x, double p, bool training);
/* act(x + b) as one op (ops/act.c), b [K] over x's last dim (or NULL), act one of RELU, SILU,
 * GELU, GELU_TANH, QUICK_GELU, SIGMOID, TANH. glu: x [.., 2C] -> [.., C], the first half (plus
 * b's first half) times act of the second (plus b's second half): GEGLU with act GELU. Under
 * autocast b is cast to x's dtype, as linear casts its bias. */
tc_tensor *tc_bias_act(tc_tensor *x, tc_tensor *b, tc_op act, bool glu);
/* q [.., L, E], k [.., S, E], v [.., S, Ev]; mask bool (true = attend) or float (added), may be NULL */
tc_tensor *tc_sdpa(tc_tensor *q, tc_tensor *k, tc_tensor *v, tc_tensor *mask, bool is_causal,
                   double dropout_p, double scale /* <= 0: 1/sqrt(E) */);

/* ---- autocast: mixed precision as a scope (ops/autocast.c). On, matmul, bmm, linear,
 * conv2d, conv_transpose2d and sdpa compute in dt (f16 or bf16; f32 accumulation); norms,
 * softmax, losses and reductions in f32. Per thread; backward passes run with it off. */
bool tc_autocast_enabled(void);
tc_dtype tc_autocast_dtype(void);
int tc_set_autocast(bool on, tc_dtype dt);

/* ---- autograd ------------------------------------------------------------------------- */
bool tc_grad_enabled(void);
bool tc_set_grad_enabled(bool on); /* returns the previous mode */
int tc_requires_grad_(tc_tensor *t, bool on);
/* grad may be NULL for a one-element root (implicit 1) */
int tc_backward(tc_tensor *root, tc_tensor *grad, bool retain_graph);
/* gradients of outs w.r.t. ins without touching .grad; result[i] NULL where unused */
int tc_autograd_grad(int nout, tc_tensor **outs, tc_tensor **grad_outs, int nin, tc_tensor **ins,
                     tc_tensor **result, bool retain_graph, bool allow_unused);
const char *tc_grad_fn_name(const tc_tensor *t); /* e.g. "MulBackward"; NULL for leaves */

/* custom functions (the binding's T.autograd.Function): out becomes a tensor whose backward
 * calls fn(ctx, grad_out, grad_in[nin]); fn fills grad_in with new references or NULL */
typedef int (*tc_custom_backward)(void *ctx, tc_tensor *grad_out, int nin, tc_tensor **grad_in);
tc_tensor *tc_custom_attach(tc_tensor *out, int nin, tc_tensor **ins, tc_custom_backward fn,
                            void *ctx, void (*free_ctx)(void *));

/* ---- optimizers ------------------------------------------------------------------------
 * Fused in-place updates of one parameter tensor and its state, following PyTorch's
 * single-tensor updates (torch.optim.SGD, Adam, AdamW). They run with grad mode off and bump
 * the version of what they write. param and state tensors: contiguous, f32 or f64, one dtype
 * and device; grad: param's shape, any layout and float dtype. */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
    bool first; /* the first step with momentum: the buffer starts as the gradient */
    /* the CUDA multi-tensor update: NULL, or a device buffer its scalars are read from, written
     * first (tc_cuda_sgd_scalars) unless scalars_ready (a CUDA graph's capture: a function run
     * before each replay writes them); as Adam's below */
    tc_tensor *scalars;
    bool scalars_ready;
} tc_sgd_opts;
int tc_sgd_step_(tc_tensor *param, tc_tensor *grad, tc_tensor *momentum_buf /* NULL if momentum 0 */,
                 const tc_sgd_opts *o);
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;   /* steps taken, this one included (1 on the first) */
    bool amsgrad;
    bool decoupled; /* AdamW: decay the weights, not the gradient */
    tc_tensor *scalars; /* as tc_sgd_opts' */
    bool scalars_ready;
} tc_adam_opts;
int tc_adam_step_(tc_tensor *param, tc_tensor *grad, tc_tensor *exp_avg, tc_tensor *exp_avg_sq,
                  tc_tensor *max_exp_avg_sq /* NULL unless amsgrad */, const tc_adam_opts *o);
/* shadow -= (1 - decay) * (shadow - param), diffusers' EMAModel update */
int tc_ema_update_(tc_tensor *shadow, tc_tensor *param, double decay);
/* The same updates over n parameters of one device and dtype (lists of n; max_exp_avg_sq and
 * momentum_buf NULL as above, else arrays of n), each tensor as the single-tensor update would
 * update it; on CUDA many tensors share one launch. steps[i]: parameter i's step (o->step is
 * not read); first[i]: parameter i's momentum buffer starts on this step (o->first not read). */
int tc_sgd_multi_step_(int n, tc_tensor **params, tc_tensor **grads, tc_tensor **momentum_buf, const bool *first,
                       const tc_sgd_opts *o);
int tc_adam_multi_step_(int n, tc_tensor **params, tc_tensor **grads, tc_tensor **exp_avg, tc_tensor **exp_avg_sq,
                        tc_tensor **max_exp_avg_sq, const int64_t *steps, const tc_adam_opts *o);
int tc_ema_multi_update_(int n, tc_tensor **shadows, tc_tensor **params, double decay);
/* the p-norm of n tensors taken together (p = INFINITY: the largest |x|), accumulated in double */
int tc_total_norm(int n, tc_tensor **xs, double p, double *out);

/* ---- CUDA (kernels/device.cu, kernels/alloc.cu; kernels/cuda_none.c without CUDA) ----------
 * Built in when nvcc is found (Makefile); without it, or without a GPU at run time,
 * tc_cuda_is_available() is false, the count is 0, the memory stats are 0 and what needs a
 * GPU fails saying why. One device (cuda:0) is used; ops are asynchronous on one stream,
 * and reading values on the host (a copy to the CPU) synchronizes. */
bool tc_cuda_is_available(void);       /* a device exists and the runtime starts; cached */
const char *tc_cuda_unavailable_reason(void); /* why not ("" when available) */
int tc_cuda_device_count(void);
int tc_cuda_device_name(int index, char *buf, size_t n); /* index 0-based, as in "cuda:0" */
int tc_cuda_synchronize(void);          /* waits for every queued op; reports their errors */
typedef struct {
    size_t allocated, max_allocated;   /* bytes in blocks handed out (tensors, temporaries) now / at the peak */
    size_t reserved, max_reserved;     /* bytes held from the driver (handed out + cached) */
    size_t pinned_allocated, pinned_reserved; /* page-locked host memory in tensors / held */
    size_t graph_reserved;             /* of reserved: held by CUDA graphs' private pools */
    int64_t allocs, frees, cache_hits, driver_allocs, driver_frees, ooms;
} tc_cuda_memory_stats;
int tc_cuda_memory(tc_cuda_memory_stats *out);
int tc_cuda_empty_cache(void);          /* gives every cached, unused block back to the driver */
void tc_cuda_reset_peak(void);          /* the peaks restart from the current values */
int tc_cuda_memory_summary(char *buf, size_t n); /* a readable table of the stats and pools */
/* out of memory: the allocator empties its cache, calls hook(ctx) (the binding runs a full
 * Lua collection, so unreachable tensors give their memory back; the hook may free device
 * memory, and is called with no allocator lock held), empties the cache again and retries
 * once before failing with a message giving the sizes asked for, in use and cached */
void tc_cuda_set_oom_hook(void (*hook)(void *ctx), void *ctx);
void tc_cuda_set_allow_tf32(bool on);   /* f32 matmul and conv on TF32 tensor cores (off by default) */
bool tc_cuda_allow_tf32(void);
void tc_cuda_set_cudnn_benchmark(bool on); /* pick conv algorithms by timing them, per shape */
bool tc_cuda_cudnn_benchmark(void);
/* scaled_dot_product_attention's f16/bf16 backend: "cudnn" (the default; cuDNN's fused attention
 * where its plan for the problem finalizes, else the flash kernel) or "flash" (the flash kernel
 * always); TOCHA_SDPA_BACKEND sets the first value. _last: the backend the last forward
 * (backward: true) ran and why ("none" before any) */
int tc_cuda_set_sdpa_backend(const char *name);
const char *tc_cuda_sdpa_backend(void);
const char *tc_cuda_sdpa_last(bool backward, const char **reason);
/* a contiguous copy of a CPU tensor in page-locked host memory (x itself when already
 * pinned), without autograd history: copies from it to the GPU are asynchronous.
 * tc_is_pinned says whether a tensor's memory is page-locked. */
tc_tensor *tc_pin_memory(tc_tensor *x);
bool tc_is_pinned(const tc_tensor *x);
/* CUDA graphs (kernels/graph.cu): _begin starts capturing the stream into a new graph, whose
 * private pool then serves every device allocation; the ops queued until _end are recorded,
 * not run. _end instantiates the graph; on failure (the capture was invalidated) the error
 * names the cause and the graph stays unusable. _replay queues the recorded work on the
 * stream. _free ends a capture still running and releases the graph and its pool (NULL is a
 * no-op). During a capture, what would break it fails at once with an error naming the cause
 * (tc_cuda_capture_error: a copy between the host and the GPU, a synchronization...). */
typedef struct tc_cuda_graph tc_cuda_graph;
tc_cuda_graph *tc_cuda_graph_begin(void);
int tc_cuda_graph_end(tc_cuda_graph *g);
int tc_cuda_graph_replay(tc_cuda_graph *g);
int tc_cuda_graph_free(tc_cuda_graph *g);
size_t tc_cuda_graph_pool_bytes(const tc_cuda_graph *g); /* device memory its pool holds */
bool tc_cuda_is_capturing(void);
/* The per-step scalars of the CUDA multi-tensor updates (bias corrections, learning rate...),
 * computed on the host as the updates compute them and written to the device buffer `scalars`
 * by a kernel (no host synchronization), where a captured update reads them: _adam_ writes one
 * slot per run of equal steps[i] (the runs tc_adam_multi_step_ makes), _sgd_ one slot; dt is
 * the parameters' dtype. The buffer holds TC_OPTIM_SCALARS_BYTES per slot. */
#define TC_OPTIM_SCALARS_BYTES 128
int tc_cuda_adam_scalars(tc_tensor *scalars, int n, const int64_t *steps, const tc_adam_opts *o, tc_dtype dt);
int tc_cuda_sgd_scalars(tc_tensor *scalars, const tc_sgd_opts *o, tc_dtype dt);
int tc_cuda_capture_error(const char *what); /* "<what> during CUDA graph capture: ..." */

#ifdef __cplusplus
}
#endif

#endif
