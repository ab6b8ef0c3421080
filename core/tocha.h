/* tocha.h: the one public C header of the tocha engine (tensors, ops, autograd).
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

/* ---- ops: one enum, one name table ----------------------------------------- */
#define TC_OP_LIST(X) \
    X(NONE, "none") X(ACCUMULATE, "AccumulateGrad") X(CUSTOM, "CustomFunction")        \
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
    X(ARGMAX, "argmax") X(ARGMIN, "argmin") X(LOGSUMEXP, "logsumexp")                  \
    X(VAR, "var") X(NORM, "norm")                                                       \
    /* linear algebra */                                                                \
    X(MATMUL, "matmul")                                                                 \
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
    X(SDPA, "scaled_dot_product_attention")

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
tc_tensor *tc_group_norm(tc_tensor *x, int groups, tc_tensor *w, tc_tensor *b, double eps);
tc_tensor *tc_dropout(tc_tensor *x, double p, bool training);
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

/* ---- safetensors ---------------------------------------------------------------------- */
typedef struct {
    int count;
    char **names;
    tc_tensor **tensors;
    int nmeta;
    char **meta_keys, **meta_values;
} tc_tensor_dict;
int tc_safetensors_save(const char *path, const tc_tensor_dict *d);
int tc_safetensors_load(const char *path, tc_tensor_dict *out); /* mmap-backed tensors */
void tc_tensor_dict_free(tc_tensor_dict *d);

/* ---- optimizers ------------------------------------------------------------------------
 * Fused in-place updates of one parameter tensor and its state, following PyTorch's
 * single-tensor updates (torch.optim.SGD, Adam, AdamW). They run with grad mode off and bump
 * the version of what they write. param and state tensors: contiguous, f32 or f64, one dtype
 * and device; grad: param's shape, any layout and float dtype. */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
    bool first; /* the first step with momentum: the buffer starts as the gradient */
} tc_sgd_opts;
int tc_sgd_step_(tc_tensor *param, tc_tensor *grad, tc_tensor *momentum_buf /* NULL if momentum 0 */,
                 const tc_sgd_opts *o);
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;   /* steps taken, this one included (1 on the first) */
    bool amsgrad;
    bool decoupled; /* AdamW: decay the weights, not the gradient */
} tc_adam_opts;
int tc_adam_step_(tc_tensor *param, tc_tensor *grad, tc_tensor *exp_avg, tc_tensor *exp_avg_sq,
                  tc_tensor *max_exp_avg_sq /* NULL unless amsgrad */, const tc_adam_opts *o);
/* shadow -= (1 - decay) * (shadow - param), diffusers' EMAModel update */
int tc_ema_update_(tc_tensor *shadow, tc_tensor *param, double decay);
/* the p-norm of n tensors taken together (p = INFINITY: the largest |x|), accumulated in double */
int tc_total_norm(int n, tc_tensor **xs, double p, double *out);

/* ---- CUDA (kernels/device.cu, kernels/alloc.cu; core/cuda_none.c without CUDA) -------------
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
/* a contiguous copy of a CPU tensor in page-locked host memory (x itself when already
 * pinned), without autograd history: copies from it to the GPU are asynchronous.
 * tc_is_pinned says whether a tensor's memory is page-locked. */
tc_tensor *tc_pin_memory(tc_tensor *x);
bool tc_is_pinned(const tc_tensor *x);

/* ---- images and data (core/io/image.c, transform.c, shard.c, loader.c) -------------------------
 * Images are u8 [H, W, C] tensors: C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA. Errors about a file
 * name the file and the reason (corrupt, truncated, unreadable). */
typedef enum { TC_IMAGE_UNKNOWN, TC_IMAGE_PNG, TC_IMAGE_JPEG } tc_image_format;
tc_image_format tc_image_sniff(const void *data, size_t n);  /* from the first bytes */
tc_image_format tc_image_format_for(const char *path);       /* .jpg/.jpeg: JPEG, else PNG */
/* channels: 0 keeps the file's, 1/3/4 convert (gray <-> RGB; alpha dropped, or opaque when added) */
tc_tensor *tc_image_decode(const void *data, size_t n, int channels, const char *name);
tc_tensor *tc_image_read(const char *path, int channels);
/* img u8 [H, W, C] or [H, W]; *out is malloc'd. quality: JPEG 1-100, PNG zlib level 0-9;
 * -1: the defaults (JPEG 90, PNG 6) */
int tc_image_encode(tc_tensor *img, tc_image_format fmt, int quality, void **out, size_t *n);
/* PNG at zlib level 0-9 (-1: 6) with ntext text chunks keys[i] = values[i] (tEXt for ASCII
 * values, iTXt for UTF-8 ones); keys are 1-79 printable ASCII characters */
int tc_image_encode_png(tc_tensor *img, int level, const char *const *keys, const char *const *values, int ntext,
                        void **out, size_t *n);
int tc_image_write(const char *path, tc_tensor *img, int quality); /* format from the extension */
int tc_read_file(const char *path, void **data, size_t *n);        /* whole file, malloc'd */

/* transforms of u8 [H, W, C] images (any strides); each returns a new contiguous image */
typedef enum { TC_RESIZE_NEAREST, TC_RESIZE_BILINEAR, TC_RESIZE_BICUBIC, TC_RESIZE_AREA,
               TC_RESIZE_LANCZOS } tc_resize_mode;
/* PIL's Image.resize, bit for bit: separable filters widened by the scale when shrinking
 * (antialiasing; AREA is PIL's BOX). antialias = false keeps the filter's own width, which
 * for BILINEAR is torch's interpolate(align_corners = false) */
tc_tensor *tc_image_resize(tc_tensor *img, int64_t h, int64_t w, tc_resize_mode mode, bool antialias);
tc_tensor *tc_image_crop(tc_tensor *img, int64_t top, int64_t left, int64_t h, int64_t w); /* 0-based */
tc_tensor *tc_image_hflip(tc_tensor *img);
/* u8 [..., H, W, C] -> f32 [..., C, H, W] in [-1, 1] (v / 127.5 - 1) */
tc_tensor *tc_image_to_float(tc_tensor *img);
/* float [..., C, H, W] in [lo, hi] -> u8 [..., H, W, C]: floor(255 (x - lo) / (hi - lo) + 0.5), clamped */
tc_tensor *tc_image_to_u8(tc_tensor *x, double lo, double hi);

/* a pipeline: decode to `channels`, then ops in order. Random ops draw from Philox at
 * (seed, counter + op position), so a sample's augmentation is fixed by (seed, counter)
 * on whichever thread runs it. TO_FLOAT may only come last. */
typedef enum { TC_TF_RESIZE, TC_TF_CENTER_CROP, TC_TF_RANDOM_CROP, TC_TF_HFLIP, TC_TF_TO_FLOAT } tc_tf_kind;
typedef struct {
    tc_tf_kind kind;
    int64_t h, w;          /* RESIZE: w = 0 scales the shorter side to h (torchvision's Resize(int)) */
    tc_resize_mode mode;   /* RESIZE */
    bool antialias;        /* RESIZE */
    double p;              /* HFLIP: probability of flipping */
} tc_transform;
#define TC_MAX_TRANSFORMS 16
typedef struct {
    int channels;          /* decoding: 0 keeps the file's */
    int nops;
    tc_transform ops[TC_MAX_TRANSFORMS];
} tc_pipeline;
int tc_pipeline_check(const tc_pipeline *p);
tc_tensor *tc_pipeline_run(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter);
/* the same, writing into dst (contiguous, of exactly the output's shape and dtype) */
int tc_pipeline_run_into(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter, tc_tensor *dst);
/* when every image comes out the same shape (channels fixed, a resize to h x w or a crop
 * fixes the size): that shape ([C, H, W] after TO_FLOAT, else [H, W, C]) and dtype; else false */
bool tc_pipeline_out_shape(const tc_pipeline *p, int64_t shape[3], tc_dtype *dt);

/* zstd frames with a content checksum (shards hold one per sample) */
int tc_zstd_compress(const void *src, size_t n, int level, void **out, size_t *outn);
int tc_zstd_decompress(const void *src, size_t n, void **out, size_t *outn, const char *what);
#define TC_SHARD_MAGIC "TOCHASH1" /* the first 8 bytes of a shard file */

/* where samples' encoded image bytes live: files, or zstd frames in shard files */
typedef struct tc_source tc_source;
tc_source *tc_source_files(int64_t n, const char *const *paths);
/* sample i is the frame of size[i] bytes at offset[i] in shard_paths[shard[i]] (0-based) */
tc_source *tc_source_shards(int nshards, const char *const *shard_paths, int64_t n, const int32_t *shard,
                            const uint64_t *offset, const uint64_t *size, const char *const *names);
tc_source *tc_source_retain(tc_source *s);
void tc_source_release(tc_source *s);
int64_t tc_source_len(const tc_source *s);
const char *tc_source_name(const tc_source *s, int64_t i);
int tc_source_read(const tc_source *s, int64_t i, void **data, size_t *n); /* encoded bytes, malloc'd */
tc_tensor *tc_source_load(const tc_source *s, int64_t i, const tc_pipeline *p, uint64_t seed, uint64_t counter);

/* the data loader's worker pool: whole batches are decoded and transformed on pthreads
 * into a ring of `depth` slots; with 0 workers tc_loader_take runs the batch itself */
typedef struct tc_loader tc_loader;
typedef struct {
    tc_source *src;        /* NULL: the sample is bad and err says why */
    int64_t index;
    const tc_pipeline *pipe;
    uint64_t seed, counter;
    const char *err;
} tc_loader_sample;
typedef struct {
    int n;
    tc_tensor *batch;      /* [n, ...] when submitted with one, else NULL */
    tc_tensor **items;     /* else one result per sample (NULL where it failed) */
    char **errors;         /* per sample: NULL or why it failed */
} tc_loader_batch;
tc_loader *tc_loader_new(int workers, int depth);
void tc_loader_free(tc_loader *l);
int tc_loader_pending(const tc_loader *l);
/* queues a batch (copies samples); batch: a tensor [n, ...] to write into, or NULL */
int tc_loader_submit(tc_loader *l, int n, const tc_loader_sample *samples, tc_tensor *batch);
int tc_loader_take(tc_loader *l, tc_loader_batch *out); /* the oldest batch; the caller owns it */
void tc_loader_batch_free(tc_loader_batch *b);
/* epoch `epoch`'s order of n samples (0-based), a Fisher-Yates shuffle driven by Philox */
void tc_permutation(int64_t n, uint64_t seed, uint64_t epoch, int64_t *out);

/* ---- run logs (core/io/tensorboard.c, crc32c.c) -------------------------------------------------
 * A tc_logfile appends to one file through a memory buffer that a background thread writes out
 * every flush_secs (<= 0: no thread); tc_logfile_flush, close and process exit (atexit) write it
 * too. Only whole units (an event record, a JSON line) reach the file, so a killed process loses
 * at most the last interval and never leaves a unit half written. A failed write (a full disk)
 * is undone, its data kept for the next try, and its error returned by the next call. */
typedef struct tc_logfile tc_logfile;
int tc_mkdirs(const char *path);                                  /* mkdir -p */
tc_logfile *tc_logfile_open(const char *path, double flush_secs); /* appends; makes parent dirs */
int tc_logfile_write(tc_logfile *f, const void *data, size_t n);  /* one unit */
int tc_logfile_flush(tc_logfile *f);
int tc_logfile_close(tc_logfile *f); /* flushes and frees, also when the flush fails */
const char *tc_logfile_path(const tc_logfile *f);
int64_t tc_logfile_bytes(const tc_logfile *f); /* bytes written to the file so far */

/* TensorBoard event files: dir/events.out.tfevents.<secs>.<host>.<pid>.<n><suffix>, records of
 * Event protos (encoded here by hand) in TFRecord framing. wall_time < 0: now. */
tc_logfile *tc_tb_open(const char *dir, const char *suffix, double flush_secs);
int tc_tb_scalar(tc_logfile *f, const char *tag, double value, int64_t step, double wall_time);
/* img: u8 [H, W, C], C = 1 to 4, written as PNG */
int tc_tb_image(tc_logfile *f, const char *tag, tc_tensor *img, int64_t step, double wall_time);
/* `bins` equal-width buckets over the finite values (any float or integer dtype, any device);
 * *nonfinite (when not NULL) gets how many values were NaN or infinite and left out */
int tc_tb_histogram(tc_logfile *f, const char *tag, tc_tensor *x, int bins, int64_t step,
                    double wall_time, int64_t *nonfinite);
int tc_tb_text(tc_logfile *f, const char *tag, const char *text, size_t n, int64_t step, double wall_time);
typedef enum { TC_HPARAM_NUMBER, TC_HPARAM_STRING, TC_HPARAM_BOOL } tc_hparam_type;
typedef struct {
    const char *name;
    tc_hparam_type type;
    double number;
    const char *string;
    bool boolean;
} tc_hparam;
/* the HParams plugin's session data: an experiment (these hparams, these metric tags), a session
 * start with the values, a session end (success). Metric values are scalars of those tags. */
int tc_tb_hparams(tc_logfile *f, int n, const tc_hparam *hp, int nmetrics, const char *const *metric_tags,
                  double wall_time);
/* TFRecord reading: the record at data[*pos] (pos advances past it). Returns 1 with the record,
 * 0 at the end, 2 when the data ends inside a record (a file still being written), TC_ERR on a
 * CRC mismatch */
int tc_tfrecord_next(const void *data, size_t n, size_t *pos, const void **rec, size_t *len);
uint32_t tc_crc32c(uint32_t crc, const void *data, size_t n); /* crc: 0 to start */
uint32_t tc_crc32c_mask(uint32_t crc);

#ifdef __cplusplus
}
#endif

#endif
