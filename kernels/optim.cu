/* optim.cu: the fused optimizer updates (SGD, Adam/AdamW) and the EMA blend over contiguous f32
 * or f64 tensors, as core/cpu/optim.c: the same order of operations, the same fused
 * multiply-adds and the same scalars (Adam's update is both devices' core/adam.h), so the
 * GPU's steps are the CPU's bit for bit. Each update has two launchers: one tensor per launch,
 * and the multi-tensor form that updates a list of tensors in chunks, many tensors per launch
 * (the per-element code is shared, so both give the same bits). */
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

/* ---- the multi-tensor launch ------------------------------------------------------------------
 * A launch's argument holds up to MT_TENSORS tensors (D pointers each: parameter, gradient,
 * state...; a pointer may be NULL for state the update does not keep) and up to MT_BLOCKS
 * blocks, each naming its tensor and its chunk of MT_CHUNK elements. The whole list travels
 * by value as the kernel's argument (under 4 KB), so a launch needs no copy to the device and
 * a captured graph replays it as it was. The host walks the tensors' chunks and launches
 * whenever the argument is full or the next tensor needs other scalars. */
#define MT_TENSORS 32
#define MT_BLOCKS 320
#define MT_CHUNK 65536

template <typename T, int D> struct mt_list {
    T *ptr[D][MT_TENSORS];
    int64_t n[MT_TENSORS];
    bool flag[MT_TENSORS]; /* a per-tensor flag (SGD: the momentum buffer's first step) */
    uint8_t tensor[MT_BLOCKS];
    int32_t chunk[MT_BLOCKS];
};

/* block b updates elements [chunk * MT_CHUNK, min(n, that + MT_CHUNK)) of its tensor with
 * f(pointers of the tensor, i, flag), f = op.load(): the op with its scalars, read once per
 * thread when they live in device memory */
template <typename T, int D, typename Op>
__global__ void mt_kernel(mt_list<T, D> l, Op op) {
    int t = l.tensor[blockIdx.x];
    int64_t start = (int64_t)l.chunk[blockIdx.x] * MT_CHUNK, n = l.n[t];
    int64_t end = start + MT_CHUNK < n ? start + MT_CHUNK : n;
    T *ps[D];
    for (int k = 0; k < D; k++) ps[k] = l.ptr[k][t];
    auto f = op.load();
    for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) f(ps, i, l.flag[t]);
}

/* ---- scalars in device memory -------------------------------------------------------------
 * A captured graph replays its kernels' arguments as they were; the per-step scalars of an
 * update (bias corrections, learning rate) must change from replay to replay, so the
 * multi-tensor updates can read them from a device buffer instead: slot r (of
 * TC_OPTIM_SCALARS_BYTES) holds run r's scalar struct, written by a one-thread kernel from
 * values the host computed exactly as for a kernel argument (the same bits either way). */
template <typename S> __global__ void scalars_set_kernel(S *dst, S v) { *dst = v; }

template <typename S> static int scalars_write(tc_tensor *buf, int slot, const S &v, const char *op) {
    static_assert(sizeof(S) <= TC_OPTIM_SCALARS_BYTES, "an update's scalars fit a slot");
    TCU_LAUNCH(scalars_set_kernel<S>, 1, 1, 0, (S *)((char *)tcu_ptr(buf) + (size_t)slot * TC_OPTIM_SCALARS_BYTES), v);
    TCU_LAUNCHED(op);
    return TC_OK;
}

static int check_scalars(const char *op, const tc_tensor *buf, int slots) {
    if (buf->storage->device.type != TC_CUDA || !tc_is_contiguous(buf))
        return tc_error("%s: the scalars buffer must be a contiguous CUDA tensor", op);
    size_t bytes = (size_t)tc_numel(buf) * tc_dtype_size(buf->dtype);
    if (bytes < (size_t)slots * TC_OPTIM_SCALARS_BYTES)
        return tc_error("%s: the scalars buffer holds %zu bytes, %d runs need %zu", op, bytes, slots,
                        (size_t)slots * TC_OPTIM_SCALARS_BYTES);
    return TC_OK;
}

/* an op reading its scalars S from device memory: Op{S} once per thread */
template <typename Op, typename S> struct dev_op {
    const S *s;
    __device__ Op load(void) const { return Op{*s}; }
};

/* the tensors [i, j) of the list: D arrays of n tensors (an array may be NULL: that pointer
 * is NULL for every tensor), flags (or NULL), launched with op in as few launches as fit */
template <typename T, int D, typename Op>
static int mt_apply(const char *name, int lo, int hi, tc_tensor *const *const *ts, const bool *flags, Op op) {
    mt_list<T, D> l;
    int nt = 0, nb = 0;
    for (int i = lo; i < hi; i++) {
        int64_t n = tc_numel(ts[0][i]);
        if (n == 0) continue;
        for (int k = 0; k < D; k++) l.ptr[k][nt] = ts[k] ? (T *)tcu_ptr(ts[k][i]) : (T *)NULL;
        l.n[nt] = n;
        l.flag[nt] = flags ? flags[i] : false;
        int64_t chunks = (n + MT_CHUNK - 1) / MT_CHUNK;
        for (int64_t c = 0; c < chunks; c++) {
            l.tensor[nb] = (uint8_t)nt;
            l.chunk[nb] = (int32_t)c;
            nb++;
            bool last = c == chunks - 1;
            if (nb == MT_BLOCKS || (last && nt + 1 == MT_TENSORS)) {
                TCU_LAUNCH((mt_kernel<T, D, Op>), nb, TCU_THREADS, 0, l, op);
                TCU_LAUNCHED(name);
                nb = 0;
                if (!last) { /* the tensor goes on in the next launch, as its entry 0 */
                    for (int k = 0; k < D; k++) l.ptr[k][0] = l.ptr[k][nt];
                    l.n[0] = l.n[nt];
                    l.flag[0] = l.flag[nt];
                    nt = 0;
                } else nt = -1;
            }
        }
        nt++;
    }
    if (nb > 0) {
        TCU_LAUNCH((mt_kernel<T, D, Op>), nb, TCU_THREADS, 0, l, op);
        TCU_LAUNCHED(name);
    }
    return TC_OK;
}

static int check_list(const char *op, int n, tc_tensor *const *p, const tc_tensor *const *g) {
    for (int i = 0; i < n; i++) {
        if (check_tensors(op, p[i], g[i]) != TC_OK) return TC_ERR;
        if (p[i]->dtype != p[0]->dtype)
            return tc_error("%s: tensor %d is %s, tensor 1 %s (one dtype per list)", op, i + 1,
                            tc_dtype_name(p[i]->dtype), tc_dtype_name(p[0]->dtype));
    }
    return TC_OK;
}

/* ---- SGD: grad.add(p, alpha=wd); buf.mul_(m).add_(d, 1-damp) (buf = d on the first step);
 * nesterov: d.add(buf, alpha=m); p.add_(d, alpha=-lr). buf is NULL without momentum. -------- */
template <typename T> struct sgd_t { T wd, mom, damp1, neg_lr; bool nesterov; };

template <typename T>
__device__ static inline void sgd_elem(T *p, const T *g, T *buf, int64_t i, const sgd_t<T> &s, bool first) {
    T pi = p[i], d = fma(pi, s.wd, g[i]);
    if (buf) {
        T b = first ? d : fma(d, s.damp1, buf[i] * s.mom);
        buf[i] = b;
        d = s.nesterov ? fma(b, s.mom, d) : b;
    }
    p[i] = fma(d, s.neg_lr, pi);
}

template <typename T> static sgd_t<T> sgd_scalars(const tc_sgd_opts *o) {
    sgd_t<T> s = {(T)o->weight_decay, (T)o->momentum, (T)(1 - o->dampening), (T)-o->lr, o->nesterov};
    return s;
}

template <typename T>
__global__ void sgd_kernel(T *p, const T *g, T *buf, int64_t n, sgd_t<T> s, bool first) {
    TCU_GRID_STRIDE(i, n) sgd_elem(p, g, buf, i, s, first);
}

template <typename T> struct sgd_op {
    sgd_t<T> s;
    __device__ sgd_op load(void) const { return *this; }
    __device__ void operator()(T **t, int64_t i, bool first) const { sgd_elem(t[0], t[1], t[2], i, s, first); }
};

template <typename T>
static int sgd_launch(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o, int64_t n) {
    TCU_LAUNCH(sgd_kernel<T>, tcu_blocks(n), TCU_THREADS, 0, (T *)tcu_ptr(p), (const T *)tcu_ptr(g),
               buf ? (T *)tcu_ptr(buf) : (T *)NULL, n, sgd_scalars<T>(o), o->first);
    TCU_LAUNCHED("sgd");
    return TC_OK;
}

extern "C" int tc_cuda_sgd_step(tc_tensor *p, const tc_tensor *g, tc_tensor *buf, const tc_sgd_opts *o) {
    if (check_tensors("sgd", p, g) != TC_OK) return TC_ERR;
    int64_t n = tc_numel(p);
    if (n == 0) return TC_OK;
    return p->dtype == TC_F32 ? sgd_launch<float>(p, g, buf, o, n) : sgd_launch<double>(p, g, buf, o, n);
}

extern "C" int tc_cuda_sgd_multi(int n, tc_tensor *const *p, const tc_tensor *const *g, tc_tensor *const *buf,
                                 const bool *first, const tc_sgd_opts *o) {
    if (n == 0) return TC_OK;
    if (check_list("sgd", n, p, g) != TC_OK) return TC_ERR;
    tc_tensor *const *ts[3] = {p, (tc_tensor *const *)g, buf};
    bool f32 = p[0]->dtype == TC_F32;
    if (o->scalars) {
        if (!o->scalars_ready && tc_cuda_sgd_scalars(o->scalars, o, p[0]->dtype) != TC_OK) return TC_ERR;
        if (check_scalars("sgd", o->scalars, 1) != TC_OK) return TC_ERR;
        void *s = tcu_ptr(o->scalars);
        if (f32) return mt_apply<float, 3>("sgd", 0, n, ts, first, dev_op<sgd_op<float>, sgd_t<float>>{(const sgd_t<float> *)s});
        return mt_apply<double, 3>("sgd", 0, n, ts, first, dev_op<sgd_op<double>, sgd_t<double>>{(const sgd_t<double> *)s});
    }
    if (f32) return mt_apply<float, 3>("sgd", 0, n, ts, first, sgd_op<float>{sgd_scalars<float>(o)});
    return mt_apply<double, 3>("sgd", 0, n, ts, first, sgd_op<double>{sgd_scalars<double>(o)});
}

extern "C" int tc_cuda_sgd_scalars(tc_tensor *scalars, const tc_sgd_opts *o, tc_dtype dt) {
    if (check_scalars("sgd", scalars, 1) != TC_OK) return TC_ERR;
    if (dt == TC_F32) return scalars_write(scalars, 0, sgd_scalars<float>(o), "sgd scalars");
    if (dt == TC_F64) return scalars_write(scalars, 0, sgd_scalars<double>(o), "sgd scalars");
    return tc_error("sgd: unsupported dtype %s", tc_dtype_name(dt));
}

/* ---- Adam and AdamW: core/adam.h's update; the scalars in double on the host ---------------- */
template <typename T> struct adam_t { TC_ADAM_FIELDS(T) };

template <typename T>
__global__ void adam_kernel(T *p, const T *g, T *m, T *v, T *vmax, int64_t n, adam_t<T> s) {
    TCU_GRID_STRIDE(i, n) TC_ADAM_UPDATE(T, fma, tcu_mul_rn, sqrt, s, p, g, m, v, vmax, i);
}

template <typename T> struct adam_op {
    adam_t<T> s;
    __device__ adam_op load(void) const { return *this; }
    __device__ void operator()(T **t, int64_t i, bool) const {
        TC_ADAM_UPDATE(T, fma, tcu_mul_rn, sqrt, s, t[0], t[1], t[2], t[3], t[4], i);
    }
};

template <typename T> static adam_t<T> adam_scalars(const tc_adam_opts *o) {
    tc_adam_scalars c = tc_adam_scalars_of(o, sizeof(T) == 4);
    adam_t<T> k = TC_ADAM_ROUND(T, c);
    return k;
}

template <typename T>
static int adam_launch(tc_tensor *p, const tc_tensor *g, tc_tensor *m, tc_tensor *v, tc_tensor *vmax,
                       const tc_adam_opts *o, int64_t n) {
    TCU_LAUNCH(adam_kernel<T>, tcu_blocks(n), TCU_THREADS, 0, (T *)tcu_ptr(p), (const T *)tcu_ptr(g), (T *)tcu_ptr(m),
               (T *)tcu_ptr(v), vmax ? (T *)tcu_ptr(vmax) : (T *)NULL, n, adam_scalars<T>(o));
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

/* the tensors in runs of one step count (their scalars), each run in as few launches as fit;
 * with o->scalars, run r reads its scalars from slot r there (written first unless ready) */
template <typename T>
static int adam_multi(int n, tc_tensor *const *const *ts, const int64_t *steps, const tc_adam_opts *o) {
    const char *name = o->decoupled ? "adamw" : "adam";
    for (int lo = 0, hi, r = 0; lo < n; lo = hi, r++) {
        for (hi = lo + 1; hi < n && steps[hi] == steps[lo];) hi++;
        tc_adam_opts run = *o;
        run.step = steps[lo];
        int rc;
        if (o->scalars) {
            if (check_scalars(name, o->scalars, r + 1) != TC_OK) return TC_ERR;
            if (!o->scalars_ready && scalars_write(o->scalars, r, adam_scalars<T>(&run), name) != TC_OK) return TC_ERR;
            const adam_t<T> *s = (const adam_t<T> *)((char *)tcu_ptr(o->scalars) + (size_t)r * TC_OPTIM_SCALARS_BYTES);
            rc = mt_apply<T, 5>(name, lo, hi, ts, NULL, dev_op<adam_op<T>, adam_t<T>>{s});
        } else rc = mt_apply<T, 5>(name, lo, hi, ts, NULL, adam_op<T>{adam_scalars<T>(&run)});
        if (rc != TC_OK) return TC_ERR;
    }
    return TC_OK;
}

template <typename T> static int adam_scalars_runs(tc_tensor *buf, int n, const int64_t *steps, const tc_adam_opts *o) {
    for (int lo = 0, hi, r = 0; lo < n; lo = hi, r++) {
        for (hi = lo + 1; hi < n && steps[hi] == steps[lo];) hi++;
        tc_adam_opts run = *o;
        run.step = steps[lo];
        if (check_scalars("adam", buf, r + 1) != TC_OK ||
            scalars_write(buf, r, adam_scalars<T>(&run), o->decoupled ? "adamw scalars" : "adam scalars") != TC_OK)
            return TC_ERR;
    }
    return TC_OK;
}

extern "C" int tc_cuda_adam_scalars(tc_tensor *scalars, int n, const int64_t *steps, const tc_adam_opts *o,
                                    tc_dtype dt) {
    for (int i = 0; i < n; i++)
        if (steps[i] < 1) return tc_error("adam: step must be at least 1 (got %lld)", (long long)steps[i]);
    if (dt == TC_F32) return adam_scalars_runs<float>(scalars, n, steps, o);
    if (dt == TC_F64) return adam_scalars_runs<double>(scalars, n, steps, o);
    return tc_error("adam: unsupported dtype %s", tc_dtype_name(dt));
}

extern "C" int tc_cuda_adam_multi(int n, tc_tensor *const *p, const tc_tensor *const *g, tc_tensor *const *m,
                                  tc_tensor *const *v, tc_tensor *const *vmax, const int64_t *steps,
                                  const tc_adam_opts *o) {
    if (n == 0) return TC_OK;
    if (check_list("adam", n, p, g) != TC_OK) return TC_ERR;
    tc_tensor *const *ts[5] = {p, (tc_tensor *const *)g, m, v, vmax};
    return p[0]->dtype == TC_F32 ? adam_multi<float>(n, ts, steps, o) : adam_multi<double>(n, ts, steps, o);
}

/* ---- EMA: s.sub_((1 - decay) * (s - p)) ------------------------------------------------------ */
template <typename T> __device__ static inline void ema_elem(T *s, const T *p, int64_t i, T w) {
    s[i] = s[i] - tcu_mul_rn(w, s[i] - p[i]);
}

template <typename T>
__global__ void ema_kernel(T *s, const T *p, int64_t n, T w) {
    TCU_GRID_STRIDE(i, n) ema_elem(s, p, i, w);
}

template <typename T> struct ema_op {
    T w;
    __device__ ema_op load(void) const { return *this; }
    __device__ void operator()(T **t, int64_t i, bool) const { ema_elem(t[0], t[1], i, w); }
};

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

extern "C" int tc_cuda_ema_multi(int n, tc_tensor *const *shadow, const tc_tensor *const *p, double decay) {
    if (n == 0) return TC_OK;
    if (check_list("ema", n, shadow, p) != TC_OK) return TC_ERR;
    tc_tensor *const *ts[2] = {shadow, (tc_tensor *const *)p};
    if (shadow[0]->dtype == TC_F32) return mt_apply<float, 2>("ema", 0, n, ts, NULL, ema_op<float>{(float)(1 - decay)});
    return mt_apply<double, 2>("ema", 0, n, ts, NULL, ema_op<double>{1 - decay});
}
