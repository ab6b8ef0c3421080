/* attention.cu: scaled dot-product attention, forward and backward, computing what
 * core/cpu/attention.c does without an [L, S] buffer: tiles of 32 queries by 32 keys whose dot
 * products run over shared-memory chunks of the head dim, an online softmax forward, and a
 * backward that recomputes the probabilities from each row's logsumexp. Dropout follows the
 * Philox rule of kernels->dropout over the [B.., L, S] probabilities. Math in float (double for f64).
 * The entries send f16 and bf16 problems that tcu_flash_fits takes to cuDNN's fused attention
 * (cudnn_attention.cu) where it takes them, else to the tensor-core kernels of flash.cu; this
 * kernel serves f32, f64 and the rest. */
#include "attention.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- tiles --------------------------------------------------------------------------------------
 * A block of ATT_THREADS threads works on a TILE x TILE tile of (row, column) pairs: thread t
 * holds row t / 8 and the columns t % 8 + 8 c, c < 4; the 8 threads of a row are neighbouring
 * lanes of one warp, so row reductions are three shuffles. Products with a value matrix run
 * over passes of COLS output columns, each thread holding the columns t % 8 + 8 u. */
#define TILE 32
#define ATT_THREADS 256
#define ATT_NC(A) (sizeof(A) == 4 ? 16 : 8) /* output columns per thread in a pass: float, double */
/* loops over a thread's accumulators are unrolled so that they stay in registers (g++ knows
 * no such pragma, and the emulator needs none) */
#ifdef TCU_EMU
#define ATT_UNROLL
#else
#define ATT_UNROLL _Pragma("unroll")
#endif

/* sum and max over the 8 threads of a row */
template <typename A> __device__ static inline A row_sum(A v) {
    for (int o = 1; o < 8; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename A> __device__ static inline A row_max(A v) {
    for (int o = 1; o < 8; o <<= 1) v = tcu_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* t[i][e] = X(r0 + i, c0 + e) for i < TILE, e < w (w <= W), 0 outside rows < nr and columns < nc;
 * consecutive threads take consecutive elements along X's unit-stride dim */
template <typename T, typename A, int W>
__device__ static void load_tile(A (*t)[W], int w, const T *x, int64_t rs, int64_t cs, int64_t r0, int64_t nr,
                                 int64_t c0, int64_t nc) {
    bool by_rows = rs == 1 && cs != 1;
    for (int idx = threadIdx.x; idx < TILE * w; idx += blockDim.x) {
        int i = by_rows ? idx % TILE : idx / w, e = by_rows ? idx / TILE : idx % w;
        int64_t r = r0 + i, c = c0 + e;
        t[i][e] = r < nr && c < nc ? (A)tcu_float(x[r * rs + c * cs]) : (A)0;
    }
}

/* acc[c] += sum_e X(r0 + t / 8, e) Y(s0 + t % 8 + 8 c, e) over e < K: the dot products of
 * X's rows r0.. (nx rows) with Y's rows s0.. (ny rows), K at a time in xs and ys */
template <typename T, typename A>
__device__ static void dot_tile(A acc[4], const T *x, int64_t xrs, int64_t xcs, int64_t r0, int64_t nx, const T *y,
                                int64_t yrs, int64_t ycs, int64_t s0, int64_t ny, int64_t K, A (*xs)[TILE + 1],
                                A (*ys)[TILE + 1]) {
    int r = threadIdx.x / 8, j = threadIdx.x % 8;
    for (int64_t e0 = 0; e0 < K; e0 += TILE) {
        load_tile(xs, TILE, x, xrs, xcs, r0, nx, e0, K);
        load_tile(ys, TILE, y, yrs, ycs, s0, ny, e0, K);
        __syncthreads();
        int ne = K - e0 < TILE ? (int)(K - e0) : TILE;
        for (int e = 0; e < ne; e++) {
            A xv = xs[r][e];
            ATT_UNROLL
            for (int c = 0; c < 4; c++) acc[c] += xv * ys[j + 8 * c][e];
        }
        __syncthreads();
    }
}

/* acc[u] += sum_i ps[t / 8][i] zs[i][t % 8 + 8 u] for the nu = ceil(ncols / 8) columns of a pass */
template <typename A, int W>
__device__ static void mul_tile(A *acc, int nu, A (*ps)[TILE + 1], A (*zs)[W]) {
    int r = threadIdx.x / 8, j = threadIdx.x % 8;
    for (int i = 0; i < TILE; i++) {
        A p = ps[r][i];
        ATT_UNROLL
        for (int u = 0; u < W / 8; u++)
            if (u < nu) acc[u] += p * zs[i][j + 8 * u];
    }
}

/* the keys the query tile at l0 sees: with causal, those past its last query are hidden from it */
__device__ static inline int64_t keys_seen(const attn &a, int64_t l0) {
    return a.causal && l0 + TILE < a.S ? l0 + TILE : a.S;
}

/* ---- forward --------------------------------------------------------------------------------------
 * A block per (slice b, tile of 32 queries), over the keys 32 at a time: scores, the online
 * softmax (running max m and sum of exp(score - m) per row, the accumulated output rescaled
 * when m grows), then out += p v. A pass per COLS output columns. out [B.., L, Ev],
 * lse [B.., L]: contiguous. */
template <typename T> __global__ void sdpa_forward(T *out, typename tcu_acc<T>::type *lse, attn a) {
    typedef typename tcu_acc<T>::type A;
    const int NC = ATT_NC(A), COLS = 8 * NC;
    __shared__ A xs[TILE][TILE + 1], ys[TILE][TILE + 1], ps[TILE][TILE + 1];
    __shared__ A zs[TILE][8 * ATT_NC(A)];
    int r = threadIdx.x / 8, j = threadIdx.x % 8;
    int64_t nq = (a.L + TILE - 1) / TILE;
    for (int64_t bid = blockIdx.x; bid < a.B * nq; bid += gridDim.x) {
        int64_t b = bid / nq, l0 = bid % nq * TILE, l = l0 + r, send = keys_seen(a, l0);
        slice<T> sl = slice_at<T>(a, b);
        for (int64_t c0 = 0; c0 == 0 || c0 < a.Ev; c0 += COLS) { /* one pass at least, for lse */
            int nu = (int)((a.Ev - c0 < COLS ? a.Ev - c0 : COLS) + 7) / 8;
            A m = -INFINITY, sum = 0, acc[ATT_NC(A)];
            ATT_UNROLL
            for (int u = 0; u < NC; u++) acc[u] = 0;
            for (int64_t s0 = 0; s0 < send; s0 += TILE) {
                A sc[4] = {0, 0, 0, 0};
                dot_tile(sc, sl.q, a.q.rs, a.q.cs, l0, a.L, sl.k, a.k.rs, a.k.cs, s0, a.S, a.E, xs, ys);
                for (int c = 0; c < 4; c++) sc[c] = score(a, sl.moff, l, s0 + j + 8 * c, sc[c]);
                A mnew = tcu_max(m, row_max(tcu_max(tcu_max(sc[0], sc[1]), tcu_max(sc[2], sc[3]))));
                A alpha = mnew == -INFINITY ? 1 : tcu_exp(m - mnew), psum = 0;
                for (int c = 0; c < 4; c++) {
                    A pr = mnew == -INFINITY ? 0 : tcu_exp(sc[c] - mnew);
                    psum += pr;
                    if (pr != 0 && a.p > 0) pr *= drop_mul<A>(a, b, l, s0 + j + 8 * c);
                    ps[r][j + 8 * c] = pr;
                }
                sum = sum * alpha + row_sum(psum);
                m = mnew;
                ATT_UNROLL
                for (int u = 0; u < NC; u++) acc[u] *= alpha;
                load_tile(zs, 8 * nu, sl.v, a.v.rs, a.v.cs, s0, a.S, c0, a.Ev);
                __syncthreads();
                mul_tile(acc, nu, ps, zs);
                __syncthreads();
            }
            if (l >= a.L) continue;
            A f = m == -INFINITY ? 0 : 1 / sum; /* a row with nothing to attend gives 0 */
            ATT_UNROLL
            for (int u = 0; u < NC; u++) { /* fixed bounds keep acc in registers */
                int64_t col = c0 + j + 8 * u;
                if (u < nu && col < a.Ev) tcu_put(out[(b * a.L + l) * a.Ev + col], acc[u] * f);
            }
            if (c0 == 0 && j == 0) lse[b * a.L + l] = m == -INFINITY ? (A)-INFINITY : m + tcu_log(sum);
        }
    }
}

/* blocks for a loop of one block per item over n items */
static unsigned grid_of(int64_t n) { return (unsigned)(n < 1 ? 1 : n > 65535 * 8 ? 65535 * 8 : n); }

template <typename T> static int sdpa_run(tc_tensor *out, tc_tensor *lse, const attn &a) {
    typedef typename tcu_acc<T>::type A;
    int64_t blocks = a.B * ((a.L + TILE - 1) / TILE);
    if (blocks == 0) return TC_OK;
    TCU_LAUNCH(sdpa_forward<T>, grid_of(blocks), ATT_THREADS, 0, (T *)tcu_ptr(out),
               (A *)tcu_ptr(lse), a);
    TCU_LAUNCHED("scaled_dot_product_attention");
    return TC_OK;
}

/* ---- backward ---------------------------------------------------------------------------------------
 * With P the probabilities (recomputed from lse), Pd = P after dropout, dP = (gout v^T) after
 * dropout and D = rowsum(P dP): dS = P (dP - D); gq = scale dS k, gk = scale dS^T q,
 * gv = Pd^T gout, gmask = dS. A block per query tile finds D (into dsum) and then gq and gmask;
 * a block per key tile then gk and gv. Outputs contiguous, with the full batch dims. */
/* P and dP of the thread's query l0 + t / 8 with keys s0 + t % 8 + 8 c, into pr and dp; ls: the query's lse */
template <typename T, typename A>
__device__ static void probs_and_dp(A pr[4], A dp[4], const attn &a, const slice<T> &sl, int64_t l0, int64_t s0, A ls,
                                    A (*xs)[TILE + 1], A (*ys)[TILE + 1]) {
    int64_t l = l0 + threadIdx.x / 8;
    for (int c = 0; c < 4; c++) pr[c] = dp[c] = 0;
    dot_tile(pr, sl.q, a.q.rs, a.q.cs, l0, a.L, sl.k, a.k.rs, a.k.cs, s0, a.S, a.E, xs, ys);
    dot_tile(dp, sl.go, a.go.rs, a.go.cs, l0, a.L, sl.v, a.v.rs, a.v.cs, s0, a.S, a.Ev, xs, ys);
    for (int c = 0; c < 4; c++) {
        int64_t s = s0 + threadIdx.x % 8 + 8 * c;
        pr[c] = prob(score(a, sl.moff, l, s, pr[c]), ls);
        if (pr[c] != 0) dp[c] *= drop_mul<A>(a, sl.b, l, s);
    }
}

template <typename T>
__global__ void sdpa_backward_q(T *gq, void *gmask, tc_dtype gmdt, typename tcu_acc<T>::type *dsum,
                                const typename tcu_acc<T>::type *lse, attn a) {
    typedef typename tcu_acc<T>::type A;
    const int NC = ATT_NC(A), COLS = 8 * NC;
    __shared__ A xs[TILE][TILE + 1], ys[TILE][TILE + 1], ps[TILE][TILE + 1];
    __shared__ A zs[TILE][8 * ATT_NC(A)];
    int r = threadIdx.x / 8, j = threadIdx.x % 8;
    int64_t nq = (a.L + TILE - 1) / TILE;
    for (int64_t bid = blockIdx.x; bid < a.B * nq; bid += gridDim.x) {
        int64_t b = bid / nq, l0 = bid % nq * TILE, l = l0 + r, send = gmask ? a.S : keys_seen(a, l0);
        slice<T> sl = slice_at<T>(a, b);
        A ls = l < a.L ? lse[b * a.L + l] : (A)-INFINITY, D = 0;
        for (int64_t s0 = 0; s0 < send; s0 += TILE) {
            A pr[4], dp[4];
            probs_and_dp(pr, dp, a, sl, l0, s0, ls, xs, ys);
            for (int c = 0; c < 4; c++) D += pr[c] * dp[c];
        }
        D = row_sum(D);
        if (j == 0 && l < a.L) dsum[b * a.L + l] = D;
        if (!gq && !gmask) continue;
        for (int64_t c0 = 0; c0 == 0 || (gq && c0 < a.E); c0 += COLS) {
            int nu = gq ? (int)((a.E - c0 < COLS ? a.E - c0 : COLS) + 7) / 8 : 0;
            A acc[ATT_NC(A)];
            ATT_UNROLL
            for (int u = 0; u < NC; u++) acc[u] = 0;
            for (int64_t s0 = 0; s0 < send; s0 += TILE) {
                A pr[4], dp[4];
                probs_and_dp(pr, dp, a, sl, l0, s0, ls, xs, ys);
                for (int c = 0; c < 4; c++) {
                    int64_t s = s0 + j + 8 * c;
                    A ds = pr[c] * (dp[c] - D);
                    ps[r][j + 8 * c] = ds;
                    if (gmask && c0 == 0 && l < a.L && s < a.S) tcu_store(gmask, gmdt, (b * a.L + l) * a.S + s, ds);
                }
                if (!gq) continue;
                load_tile(zs, 8 * nu, sl.k, a.k.rs, a.k.cs, s0, a.S, c0, a.E);
                __syncthreads();
                mul_tile(acc, nu, ps, zs);
                __syncthreads();
            }
            ATT_UNROLL
            for (int u = 0; u < NC; u++) {
                int64_t col = c0 + j + 8 * u;
                if (u < nu && l < a.L && col < a.E) tcu_put(gq[(b * a.L + l) * a.E + col], acc[u] * (A)a.scale);
            }
        }
    }
}

/* thread rows are keys s0 + t / 8 here, columns queries; a pass per COLS columns of gk, then of gv */
template <typename T>
__global__ void sdpa_backward_kv(T *gk, T *gv, const typename tcu_acc<T>::type *dsum,
                                 const typename tcu_acc<T>::type *lse, attn a) {
    typedef typename tcu_acc<T>::type A;
    const int NC = ATT_NC(A), COLS = 8 * NC;
    __shared__ A xs[TILE][TILE + 1], ys[TILE][TILE + 1], ps[TILE][TILE + 1];
    __shared__ A zs[TILE][8 * ATT_NC(A)];
    int r = threadIdx.x / 8, j = threadIdx.x % 8;
    int64_t nk = (a.S + TILE - 1) / TILE;
    int64_t npk = gk ? (a.E + COLS - 1) / COLS : 0, npv = gv ? (a.Ev + COLS - 1) / COLS : 0;
    for (int64_t bid = blockIdx.x; bid < a.B * nk; bid += gridDim.x) {
        int64_t b = bid / nk, s0 = bid % nk * TILE, s = s0 + r;
        slice<T> sl = slice_at<T>(a, b);
        for (int64_t pass = 0; pass < npk + npv; pass++) {
            bool isk = pass < npk;
            int64_t c0 = (isk ? pass : pass - npk) * COLS, ncol = isk ? a.E : a.Ev;
            int nu = (int)((ncol - c0 < COLS ? ncol - c0 : COLS) + 7) / 8;
            A acc[ATT_NC(A)];
            ATT_UNROLL
            for (int u = 0; u < NC; u++) acc[u] = 0;
            /* with causal, queries before s0 see none of these keys */
            for (int64_t l0 = a.causal ? s0 : 0; l0 < a.L; l0 += TILE) {
                A pr[4] = {0, 0, 0, 0}, dp[4] = {0, 0, 0, 0};
                dot_tile(pr, sl.k, a.k.rs, a.k.cs, s0, a.S, sl.q, a.q.rs, a.q.cs, l0, a.L, a.E, xs, ys);
                if (isk) dot_tile(dp, sl.v, a.v.rs, a.v.cs, s0, a.S, sl.go, a.go.rs, a.go.cs, l0, a.L, a.Ev, xs, ys);
                for (int c = 0; c < 4; c++) {
                    int64_t l = l0 + j + 8 * c;
                    A ls = l < a.L ? lse[b * a.L + l] : (A)-INFINITY;
                    A p = prob(score(a, sl.moff, l, s, pr[c]), ls), dm = p != 0 ? drop_mul<A>(a, b, l, s) : (A)0;
                    ps[r][j + 8 * c] = isk ? (p != 0 ? p * (dp[c] * dm - dsum[b * a.L + l]) : (A)0) : p * dm;
                }
                if (isk) load_tile(zs, 8 * nu, sl.q, a.q.rs, a.q.cs, l0, a.L, c0, a.E);
                else load_tile(zs, 8 * nu, sl.go, a.go.rs, a.go.cs, l0, a.L, c0, a.Ev);
                __syncthreads();
                mul_tile(acc, nu, ps, zs);
                __syncthreads();
            }
            ATT_UNROLL
            for (int u = 0; u < NC; u++) {
                int64_t col = c0 + j + 8 * u;
                if (u >= nu || s >= a.S || col >= ncol) continue;
                if (isk) tcu_put(gk[(b * a.S + s) * a.E + col], acc[u] * (A)a.scale);
                else tcu_put(gv[(b * a.S + s) * a.Ev + col], acc[u]);
            }
        }
    }
}

/* dsum: B L values of the statistic dtype, a workspace */
template <typename T>
static int sdpa_backward_run(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *lse,
                             const attn &a, void *dsum) {
    typedef typename tcu_acc<T>::type A;
    int64_t qblocks = a.B * ((a.L + TILE - 1) / TILE), kblocks = a.B * ((a.S + TILE - 1) / TILE);
    const A *lp = (const A *)tcu_ptr(lse);
    if ((gq || gk || gmask) && qblocks > 0) {
        TCU_LAUNCH(sdpa_backward_q<T>, grid_of(qblocks), ATT_THREADS, 0,
                   gq ? (T *)tcu_ptr(gq) : NULL, gmask ? tcu_ptr(gmask) : NULL, gmask ? gmask->dtype : TC_F32,
                   (A *)dsum, lp, a);
        TCU_LAUNCHED("scaled_dot_product_attention backward");
    }
    if ((gk || gv) && kblocks > 0) {
        TCU_LAUNCH(sdpa_backward_kv<T>, grid_of(kblocks), ATT_THREADS, 0,
                   gk ? (T *)tcu_ptr(gk) : NULL, gv ? (T *)tcu_ptr(gv) : NULL, (const A *)dsum, lp, a);
        TCU_LAUNCHED("scaled_dot_product_attention backward");
    }
    return TC_OK;
}

/* the launches for q's dtype */
static int sdpa_typed(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const attn &a) {
    TCU_FLOAT_DISPATCH(q->dtype, T, "scaled_dot_product_attention", return sdpa_run<T>(out, lse, a));
    return TC_OK;
}

static int sdpa_backward_typed(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *q,
                               const tc_tensor *lse, const attn &a, void *dsum) {
    TCU_FLOAT_DISPATCH(q->dtype, T, "scaled_dot_product_attention backward",
                       return sdpa_backward_run<T>(gq, gk, gv, gmask, lse, a, dsum));
    return TC_OK;
}

/* ---- the choice for f16 and bf16: cuDNN's fused attention or flash.cu -----------------------------
 * "cudnn" (the default): cuDNN where its plan for the problem finalizes, flash.cu where cuDNN
 * declines it (kept with the reason); "flash": flash.cu always. TOCHA_SDPA_BACKEND sets the
 * first value; T.backends.sdpa_backend changes it. The last choice of each direction is kept
 * for tc_cuda_sdpa_last. */
static int backend = -1; /* -1: not read from the environment yet; 0: cudnn, 1: flash */
static const char *last_backend[2] = {"none", "none"};
static char last_reason[2][240];

static int backend_now(void) {
    if (backend < 0) {
        const char *e = getenv("TOCHA_SDPA_BACKEND");
        backend = e && !strcmp(e, "flash") ? 1 : 0;
    }
    return backend;
}

static void chose(int dir, const char *name, const char *why) {
    last_backend[dir] = name;
    snprintf(last_reason[dir], sizeof last_reason[dir], "%s", why ? why : "");
}

/* whether to try cuDNN; the choice is recorded either way */
static bool use_cudnn(int dir) {
    if (backend_now() == 0) return true;
    chose(dir, "flash", "T.backends.sdpa_backend (or TOCHA_SDPA_BACKEND) is \"flash\"");
    return false;
}

/* ---- exported entries ---------------------------------------------------------------------------- */
extern "C" {
int tc_cuda_set_sdpa_backend(const char *name) {
    if (strcmp(name, "cudnn") && strcmp(name, "flash"))
        return tc_error("sdpa_backend: expected \"cudnn\" or \"flash\", got \"%s\"", name);
    backend = !strcmp(name, "flash");
    return TC_OK;
}

const char *tc_cuda_sdpa_backend(void) { return backend_now() ? "flash" : "cudnn"; }

const char *tc_cuda_sdpa_last(bool backward, const char **reason) {
    if (reason) *reason = last_reason[backward];
    return last_backend[backward];
}

int tc_cuda_sdpa(tc_tensor *out, tc_tensor *lse, const tc_tensor *q, const tc_tensor *k, const tc_tensor *v,
                 const tc_tensor *mask, const tc_sdpa_params *p) {
    attn a = attn_of(q, k, v, mask, NULL, p);
    if (!tcu_flash_fits(q->dtype, a, false)) return sdpa_typed(out, lse, q, a);
    if (use_cudnn(0)) {
        const char *why = NULL;
        int rc = tcu_cudnn_sdpa_forward(out, lse, q->dtype, a, &why);
        if (rc != TCU_DECLINED) return chose(0, "cudnn", why), rc;
        chose(0, "flash", why);
    }
    return tcu_flash_forward(out, lse, q->dtype, a);
}

int tc_cuda_sdpa_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_tensor *gmask, const tc_tensor *gout,
                          const tc_tensor *q, const tc_tensor *k, const tc_tensor *v, const tc_tensor *mask,
                          const tc_tensor *lse, const tc_sdpa_params *p) {
    if (gout->dtype != q->dtype)
        return tc_error("scaled_dot_product_attention backward: gout is %s, q is %s", tc_dtype_name(gout->dtype),
                        tc_dtype_name(q->dtype));
    attn a = attn_of(q, k, v, mask, gout, p);
    size_t n = (size_t)(a.B * a.L > 0 ? a.B * a.L : 1) * tc_dtype_size(lse->dtype);
    void *dsum = tc_cuda_alloc(n);
    if (!dsum) return tc_error("scaled_dot_product_attention backward: out of GPU memory for a %zu-byte workspace", n);
    int rc = TCU_DECLINED;
    if (tcu_flash_fits(q->dtype, a, gmask != NULL) && use_cudnn(1)) {
        const char *why = NULL;
        rc = tcu_cudnn_sdpa_backward(gq, gk, gv, q->dtype, a, p->out, lse, (float *)dsum, &why);
        chose(1, rc == TCU_DECLINED ? "flash" : "cudnn", why);
    }
    if (rc == TCU_DECLINED)
        rc = tcu_flash_fits(q->dtype, a, gmask != NULL) ? tcu_flash_backward(gq, gk, gv, q->dtype, a, lse, (float *)dsum)
                                                        : sdpa_backward_typed(gq, gk, gv, gmask, q, lse, a, dsum);
    tc_cuda_free(dsum);
    return rc;
}
}
