/* flash.cu: scaled dot-product attention for f16 and bf16 on tensor cores (mma.sync m16n8k16,
 * f32 accumulators), forward and backward, in the manner of FlashAttention-2: never an [L, S]
 * buffer. The forward keeps a tile of 64 queries in shared memory and walks the keys 64 at a time
 * with an online softmax (running max and sum per row, the output rescaled when the max grows),
 * saving each row's logsumexp. The backward recomputes the probabilities tile by tile from it:
 * a pass per query tile for D = rowsum(P dP), then a block per tile of 64 keys that walks the
 * queries, accumulating gk and gv in registers and adding gq into a float buffer (where key
 * tiles are few, a key tile's query tiles are shared out to several blocks, which add gk and gv
 * into float buffers too; above head dim 64, gk and gv take a launch each). Probabilities
 * and dS are rounded to the input dtype for their products, as the mma takes 16-bit operands.
 * Scores, masks, causal and dropout follow attention.h, as the tiled float kernel does.
 *
 * A block is 4 warps; warp w owns rows 16 w..16 w + 15 of the block's 64. Tiles sit in shared
 * memory as rows of W = D + 8 16-bit elements (D: the wider head dim rounded up to 16, zero-padded),
 * which ldmatrix turns into fragments (mma.h has the layouts). */
#include "attention.h"
#include "mma.h"

#define FL_WARPS 4
#define FL_THREADS (32 * FL_WARPS)
#define FL_TILE 64 /* the rows of a block, and of the tiles it walks */

#ifdef TCU_EMU
#define FL_UNROLL
#else
#define FL_UNROLL _Pragma("unroll")
#endif

/* the problem's geometry: head dims E (q, k) and Ev (v, out), each rounded up to 16 (dk, dv), the
 * shared-memory row W, and which operands can be copied 16 bytes at a time */
typedef struct {
    int dk, dv, w;
    bool vq, vk, vv, vgo;
} flash_geom;

static inline int round16(int64_t n) { return (int)((n + 15) / 16 * 16); }

/* ---- tiles -------------------------------------------------------------------------------------------- */
/* rows r0.. of X (nr rows, ncol columns, strides rs, cs) into the tile s (rows of w): columns
 * < ncol from X, zeros up to d and in rows past nr. vec: 16-byte copies (cs 1, rows aligned) */
template <typename T>
__device__ static void fl_load(T *s, int w, const T *x, int64_t rs, int64_t cs, int64_t r0, int64_t nr, int64_t ncol,
                               int d, bool vec) {
    int chunks = d / 8;
    for (int idx = threadIdx.x; idx < FL_TILE * chunks; idx += blockDim.x) {
        int i = idx / chunks, c = idx % chunks * 8;
        int64_t r = r0 + i;
        bool in = r < nr && c < ncol; /* ncol is a multiple of 8: the chunk is whole */
        T *dst = s + i * w + c;
        if (vec) {
            tcu_cp_async16(dst, in ? x + r * rs + c : x, in);
        } else {
            for (int e = 0; e < 8; e++) dst[e] = tcu_from_float<T>(in ? tcu_float(x[r * rs + (c + e) * cs]) : 0.f);
        }
    }
}
/* after the fl_loads of a step: their copies complete and visible to the block */
__device__ static inline void fl_loaded(void) {
    tcu_cp_async_commit();
    tcu_cp_async_wait<0>();
    __syncthreads();
}

/* fragments of this warp from tiles of rows of w elements:
 * fl_a: the A fragment of the 16 x 16 block at (r0, k0) of a tile (rows are A's rows);
 * fl_at: the same of the transposed tile, A(i, k) = s[k][i];
 * fl_bnk: the B fragment of the 16 x 8 block at (k0, n0) of B = s^T (rows of s are B's columns);
 * fl_bkn: the same of B = s (rows of s are B's rows) */
template <typename T> __device__ static inline void fl_a(uint32_t a[4], const T *s, int w, int r0, int k0) {
    int l = threadIdx.x & 31;
    tcu_ldmatrix_x4(a, s + (r0 + (l & 7) + 8 * ((l >> 3) & 1)) * w + k0 + 8 * (l >> 4));
}
template <typename T> __device__ static inline void fl_at(uint32_t a[4], const T *s, int w, int i0, int k0) {
    int l = threadIdx.x & 31;
    tcu_ldmatrix_x4_trans(a, s + (k0 + (l & 7) + 8 * (l >> 4)) * w + i0 + 8 * ((l >> 3) & 1));
}
template <typename T> __device__ static inline void fl_bnk(uint32_t b[2], const T *s, int w, int k0, int n0) {
    int l = threadIdx.x & 31;
    tcu_ldmatrix_x2(b, s + (n0 + (l & 7)) * w + k0 + 8 * ((l >> 3) & 1));
}
template <typename T> __device__ static inline void fl_bkn(uint32_t b[2], const T *s, int w, int k0, int n0) {
    int l = threadIdx.x & 31;
    tcu_ldmatrix_x2_trans(b, s + (k0 + (l & 7) + 8 * ((l >> 3) & 1)) * w + n0);
}

/* acc[nt] (16 x 8 blocks at columns 8 nt, nt < 8) = the warp's 16 rows (from r0) of x times the
 * tile y^T over the first d columns of both: scores (q k^T) or dP (gout v^T) */
template <typename T>
__device__ static void fl_dots(float acc[8][4], const T *x, const T *y, int w, int r0, int d) {
    FL_UNROLL
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0;
    for (int k0 = 0; k0 < d; k0 += 16) {
        uint32_t a[4];
        fl_a(a, x, w, r0, k0);
        FL_UNROLL
        for (int nt = 0; nt < 8; nt++) {
            uint32_t b[2];
            fl_bnk(b, y, w, k0, 8 * nt);
            tcu_mma<T>(acc[nt], a, b);
        }
    }
}

/* o[nt] += p z over the 64 columns of p (16 x 64 in accumulator layout, rounded to T) and the
 * first 8 nn columns of the tile z (64 rows): the C fragments of p become A fragments in place */
template <typename T, int NT>
__device__ static void fl_pz(float o[NT][4], const float p[8][4], const T *z, int w, int nn) {
    FL_UNROLL
    for (int kk = 0; kk < 4; kk++) {
        uint32_t a[4] = {tcu_pack2<T>(p[2 * kk][0], p[2 * kk][1]), tcu_pack2<T>(p[2 * kk][2], p[2 * kk][3]),
                         tcu_pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                         tcu_pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
        FL_UNROLL
        for (int nt = 0; nt < NT; nt++) {
            if (nt >= nn) break; /* the same for every lane of the warp */
            uint32_t b[2];
            fl_bkn(b, z, w, 16 * kk, 8 * nt);
            tcu_mma<T>(o[nt], a, b);
        }
    }
}

/* sum and max over the 4 lanes that share a row */
__device__ static inline float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ static inline float quad_max(float v) {
    v = tcu_max(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return tcu_max(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

/* the keys a query tile at l0 sees: with causal, none past its last query */
__device__ static inline int64_t fl_keys_seen(const attn &a, int64_t l0) {
    return a.causal && l0 + FL_TILE < a.S ? l0 + FL_TILE : a.S;
}

/* ---- forward --------------------------------------------------------------------------------------------
 * A block per (slice b, 64 queries); shared: the q tile, then the k and v tiles. A lane's
 * accumulators hold rows g and g + 8 of its warp's 16 (lane = 4 g + t), columns 8 nt + 2 t, + 1. */
template <typename T, int NT>
__global__ void flash_forward(T *out, float *lse, attn a, flash_geom fg) {
    TCU_DYNAMIC_SHARED(T, sm);
    const int w = fg.w;
    T *qs = sm, *ks = sm + FL_TILE * w, *vs = sm + 2 * FL_TILE * w;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int nv = (int)(a.Ev / 8);
    int64_t nq = (a.L + FL_TILE - 1) / FL_TILE;
    for (int64_t bid = blockIdx.x; bid < a.B * nq; bid += gridDim.x) {
        int64_t b = bid / nq, l0 = bid % nq * FL_TILE, send = fl_keys_seen(a, l0);
        int64_t row[2] = {l0 + 16 * warp + g, l0 + 16 * warp + g + 8};
        slice<T> sl = slice_at<T>(a, b);
        __syncthreads(); /* the last item's readers are done with the tiles */
        fl_load(qs, w, sl.q, a.q.rs, a.q.cs, l0, a.L, a.E, fg.dk, fg.vq);
        float o[NT][4], m[2] = {-INFINITY, -INFINITY}, sum[2] = {0, 0};
        FL_UNROLL
        for (int nt = 0; nt < NT; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0;
        for (int64_t s0 = 0; s0 < send; s0 += FL_TILE) {
            __syncthreads();
            fl_load(ks, w, sl.k, a.k.rs, a.k.cs, s0, a.S, a.E, fg.dk, fg.vk);
            fl_load(vs, w, sl.v, a.v.rs, a.v.cs, s0, a.S, a.Ev, fg.dv, fg.vv);
            fl_loaded();
            float s[8][4];
            fl_dots(s, qs, ks, w, 16 * warp, fg.dk);
            FL_UNROLL
            for (int r = 0; r < 2; r++) { /* the online softmax of row g + 8 r */
                float mx = -INFINITY;
                FL_UNROLL
                for (int nt = 0; nt < 8; nt++) {
                    FL_UNROLL
                    for (int i = 2 * r; i < 2 * r + 2; i++) {
                        s[nt][i] = score(a, sl.moff, row[r], s0 + 8 * nt + 2 * t + (i & 1), s[nt][i]);
                        mx = tcu_max(mx, s[nt][i]);
                    }
                }
                float mnew = tcu_max(m[r], quad_max(mx));
                float alpha = mnew == -INFINITY ? 1.f : tcu_exp(m[r] - mnew), psum = 0;
                FL_UNROLL
                for (int nt = 0; nt < 8; nt++) {
                    FL_UNROLL
                    for (int i = 2 * r; i < 2 * r + 2; i++) {
                        float p = mnew == -INFINITY ? 0.f : tcu_exp(s[nt][i] - mnew);
                        psum += p;
                        if (p != 0 && a.p > 0) p *= drop_mul<float>(a, b, row[r], s0 + 8 * nt + 2 * t + (i & 1));
                        s[nt][i] = p;
                    }
                }
                sum[r] = sum[r] * alpha + psum; /* this lane's share of the row's sum */
                m[r] = mnew;
                FL_UNROLL
                for (int nt = 0; nt < NT; nt++) {
                    o[nt][2 * r] *= alpha;
                    o[nt][2 * r + 1] *= alpha;
                }
            }
            fl_pz<T, NT>(o, s, vs, w, nv);
        }
        FL_UNROLL
        for (int r = 0; r < 2; r++) {
            float total = quad_sum(sum[r]);
            if (row[r] >= a.L) continue;
            float f = m[r] == -INFINITY ? 0.f : 1 / total; /* a row with nothing to attend gives 0 */
            T *orow = out + (b * a.L + row[r]) * a.Ev;
            FL_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                if (nt >= nv) break;
                tcu_put(orow[8 * nt + 2 * t], o[nt][2 * r] * f);
                tcu_put(orow[8 * nt + 2 * t + 1], o[nt][2 * r + 1] * f);
            }
            if (t == 0) lse[b * a.L + row[r]] = m[r] == -INFINITY ? -INFINITY : m[r] + tcu_log(total);
        }
    }
}

/* ---- backward ----------------------------------------------------------------------------------------------
 * With P the probabilities from lse, Pd = P after dropout, dP = (gout v^T) after dropout and
 * D = rowsum(P dP): dS = P (dP - D); gq = scale dS k, gk = scale dS^T q, gv = Pd^T gout. */

/* D per query: a block per (slice b, 64 queries) as the forward; shared: q, gout, k, v tiles */
template <typename T>
__global__ void flash_dsum(float *dsum, const float *lse, attn a, flash_geom fg) {
    TCU_DYNAMIC_SHARED(T, sm);
    const int w = fg.w;
    T *qs = sm, *gos = sm + FL_TILE * w, *ks = sm + 2 * FL_TILE * w, *vs = sm + 3 * FL_TILE * w;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int64_t nq = (a.L + FL_TILE - 1) / FL_TILE;
    for (int64_t bid = blockIdx.x; bid < a.B * nq; bid += gridDim.x) {
        int64_t b = bid / nq, l0 = bid % nq * FL_TILE, send = fl_keys_seen(a, l0);
        int64_t row[2] = {l0 + 16 * warp + g, l0 + 16 * warp + g + 8};
        slice<T> sl = slice_at<T>(a, b);
        float ls[2], d[2] = {0, 0};
        FL_UNROLL
        for (int r = 0; r < 2; r++) ls[r] = row[r] < a.L ? lse[b * a.L + row[r]] : -INFINITY;
        __syncthreads();
        fl_load(qs, w, sl.q, a.q.rs, a.q.cs, l0, a.L, a.E, fg.dk, fg.vq);
        fl_load(gos, w, sl.go, a.go.rs, a.go.cs, l0, a.L, a.Ev, fg.dv, fg.vgo);
        for (int64_t s0 = 0; s0 < send; s0 += FL_TILE) {
            __syncthreads();
            fl_load(ks, w, sl.k, a.k.rs, a.k.cs, s0, a.S, a.E, fg.dk, fg.vk);
            fl_load(vs, w, sl.v, a.v.rs, a.v.cs, s0, a.S, a.Ev, fg.dv, fg.vv);
            fl_loaded();
            float p[8][4], dp[8][4];
            fl_dots(p, qs, ks, w, 16 * warp, fg.dk);
            fl_dots(dp, gos, vs, w, 16 * warp, fg.dv);
            FL_UNROLL
            for (int nt = 0; nt < 8; nt++) {
                FL_UNROLL
                for (int i = 0; i < 4; i++) {
                    int64_t s = s0 + 8 * nt + 2 * t + (i & 1), l = row[i >> 1];
                    float pr = prob(score(a, sl.moff, l, s, p[nt][i]), ls[i >> 1]);
                    if (pr != 0) d[i >> 1] += pr * (a.p > 0 ? dp[nt][i] * drop_mul<float>(a, b, l, s) : dp[nt][i]);
                }
            }
        }
        FL_UNROLL
        for (int r = 0; r < 2; r++) {
            float total = quad_sum(d[r]);
            if (t == 0 && row[r] < a.L) dsum[b * a.L + row[r]] = total;
        }
    }
}

/* the float sums of the backward: gq always (every key tile adds to it); gk and gv when the
 * query tiles of a key tile are split over nsplit blocks (else NULL: each block writes its own) */
typedef struct {
    float *gq, *gk, *gv;
    int nsplit;
} flash_sums;

/* gk, gv and (added into sums.gq) gq: a block per (slice b, 64 keys, split j) over the query tiles
 * j, j + nsplit, ... that see the keys. Shared: the k and v tiles, then per query tile the q and
 * gout tiles, its lse and D, and dS^T (64 keys x 64 queries, rows of 72) for gq. Warp w's rows
 * are keys here for gk, gv, and queries 16 w.. of the tile for gq. WHICH: FL_GK (gk and gq),
 * FL_GV (gv: no dP nor dS) or both; wide head dims take two launches, one of each, as gk's and
 * gv's accumulators together would not fit in registers. */
enum { FL_GK = 1, FL_GV = 2 };
template <typename T, int NT, int WHICH>
__global__ void flash_backward_kv(T *gk, T *gv, flash_sums sums, const float *dsum, const float *lse, attn a,
                                  flash_geom fg) {
    constexpr bool DK = (WHICH & FL_GK) != 0, DV = (WHICH & FL_GV) != 0;
    TCU_DYNAMIC_SHARED(T, sm);
    const int w = fg.w, ws = FL_TILE + 8;
    T *ks = sm, *vs = sm + FL_TILE * w, *qs = sm + 2 * FL_TILE * w, *gos = sm + 3 * FL_TILE * w;
    T *dss = sm + 4 * FL_TILE * w;
    float *lse_s = (float *)(dss + FL_TILE * ws), *d_s = lse_s + FL_TILE;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int nk = (int)(a.E / 8), nv = (int)(a.Ev / 8);
    int64_t ns = (a.S + FL_TILE - 1) / FL_TILE, nq = (a.L + FL_TILE - 1) / FL_TILE;
    float *gq32 = sums.gq;
    for (int64_t bid = blockIdx.x; bid < a.B * ns * sums.nsplit; bid += gridDim.x) {
        int64_t b = bid / (ns * sums.nsplit), s0 = bid / sums.nsplit % ns * FL_TILE, split = bid % sums.nsplit;
        int64_t key[2] = {s0 + 16 * warp + g, s0 + 16 * warp + g + 8};
        slice<T> sl = slice_at<T>(a, b);
        float dk[DK ? NT : 1][4], dv[DV ? NT : 1][4];
        FL_UNROLL
        for (int nt = 0; nt < NT; nt++) {
            FL_UNROLL
            for (int i = 0; i < 4; i++) {
                if (DK) dk[nt][i] = 0;
                if (DV) dv[nt][i] = 0;
            }
        }
        __syncthreads();
        fl_load(ks, w, sl.k, a.k.rs, a.k.cs, s0, a.S, a.E, fg.dk, fg.vk);
        if (DK) fl_load(vs, w, sl.v, a.v.rs, a.v.cs, s0, a.S, a.Ev, fg.dv, fg.vv);
        fl_loaded(); /* complete even where no query tile follows */
        /* with causal, queries before s0 see none of these keys */
        for (int64_t qt = (a.causal ? s0 / FL_TILE : 0) + split; qt < nq; qt += sums.nsplit) {
            int64_t l0 = qt * FL_TILE;
            __syncthreads();
            fl_load(qs, w, sl.q, a.q.rs, a.q.cs, l0, a.L, a.E, fg.dk, fg.vq);
            fl_load(gos, w, sl.go, a.go.rs, a.go.cs, l0, a.L, a.Ev, fg.dv, fg.vgo);
            for (int i = threadIdx.x; i < FL_TILE; i += blockDim.x) {
                bool in = l0 + i < a.L;
                lse_s[i] = in ? lse[b * a.L + l0 + i] : -INFINITY;
                if (DK) d_s[i] = in ? dsum[b * a.L + l0 + i] : 0;
            }
            fl_loaded();
            float p[8][4], dp[8][4]; /* P^T, then dS^T: rows keys, columns queries l0.. */
            fl_dots(p, ks, qs, w, 16 * warp, fg.dk);
            if (DK) fl_dots(dp, vs, gos, w, 16 * warp, fg.dv);
            FL_UNROLL
            for (int nt = 0; nt < 8; nt++) {
                FL_UNROLL
                for (int i = 0; i < 4; i++) {
                    int c = 8 * nt + 2 * t + (i & 1);
                    int64_t l = l0 + c, s = key[i >> 1];
                    float pr = prob(score(a, sl.moff, l, s, p[nt][i]), lse_s[c]);
                    float dm = pr != 0 && a.p > 0 ? drop_mul<float>(a, b, l, s) : 1.f;
                    p[nt][i] = pr * dm; /* Pd^T, for gv */
                    if (DK) dp[nt][i] = pr != 0 ? pr * (dp[nt][i] * dm - d_s[c]) : 0.f; /* dS^T */
                }
            }
            if constexpr (DV) {
                if (gv) fl_pz<T, NT>(dv, p, gos, w, nv);
            }
            if constexpr (!DK) continue;
            else if (gk) fl_pz<T, NT>(dk, dp, qs, w, nk);
            if (!gq32) continue;
            FL_UNROLL
            for (int nt = 0; nt < 8; nt++) {
                FL_UNROLL
                for (int r = 0; r < 2; r++) {
                    T *d = dss + (16 * warp + g + 8 * r) * ws + 8 * nt + 2 * t;
                    d[0] = tcu_from_float<T>(dp[nt][2 * r]);
                    d[1] = tcu_from_float<T>(dp[nt][2 * r + 1]);
                }
            }
            __syncthreads();
            /* gq rows 16 warp.. of the tile: dS (queries x keys) k, a column block at a time */
            for (int nt = 0; nt < nk; nt++) {
                float acc[4] = {0, 0, 0, 0};
                FL_UNROLL
                for (int kk = 0; kk < 4; kk++) {
                    uint32_t af[4], bf[2];
                    fl_at(af, dss, ws, 16 * warp, 16 * kk);
                    fl_bkn(bf, ks, w, 16 * kk, 8 * nt);
                    tcu_mma<T>(acc, af, bf);
                }
                FL_UNROLL
                for (int i = 0; i < 4; i++) {
                    int64_t l = l0 + 16 * warp + g + 8 * (i >> 1);
                    if (l < a.L) atomicAdd(&gq32[(b * a.L + l) * a.E + 8 * nt + 2 * t + (i & 1)], acc[i] * (float)a.scale);
                }
            }
        }
        FL_UNROLL
        for (int r = 0; r < 2; r++) {
            if (key[r] >= a.S) continue;
            FL_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                int64_t ok = (b * a.S + key[r]) * a.E + 8 * nt + 2 * t, ov = (b * a.S + key[r]) * a.Ev + 8 * nt + 2 * t;
                FL_UNROLL
                for (int e = 0; e < 2; e++) {
                    if constexpr (DK) {
                        float vk = dk[nt][2 * r + e] * (float)a.scale;
                        if (gk && nt < nk) {
                            if (sums.gk) atomicAdd(&sums.gk[ok + e], vk);
                            else tcu_put(gk[ok + e], vk);
                        }
                    }
                    if constexpr (DV) {
                        float vv = dv[nt][2 * r + e];
                        if (gv && nt < nv) {
                            if (sums.gv) atomicAdd(&sums.gv[ov + e], vv);
                            else tcu_put(gv[ov + e], vv);
                        }
                    }
                }
            }
        }
    }
}

/* a gradient from its float sums */
template <typename T> __global__ void flash_cast(T *g, const float *g32, int64_t n) {
    TCU_GRID_STRIDE(i, n) tcu_put(g[i], g32[i]);
}

/* ---- launches ---------------------------------------------------------------------------------------------- */
static unsigned fl_grid(int64_t n) { return (unsigned)(n < 1 ? 1 : n > 65535 * 8 ? 65535 * 8 : n); }

/* whether an operand's rows can be copied 16 bytes at a time: a unit inner stride, and every row
 * of every batch slice 16-byte aligned */
static bool fl_vec(const operand &o, int nb) {
    bool ok = o.p && o.cs == 1 && o.rs % 8 == 0 && ((uintptr_t)o.p & 15) == 0;
    for (int d = 0; d < nb; d++) ok = ok && o.bs[d] % 8 == 0;
    return ok;
}

static flash_geom geom_of(const attn &a) {
    flash_geom fg;
    fg.dk = round16(a.E);
    fg.dv = round16(a.Ev);
    fg.w = (fg.dk > fg.dv ? fg.dk : fg.dv) + 8;
    fg.vq = fl_vec(a.q, a.nb);
    fg.vk = fl_vec(a.k, a.nb);
    fg.vv = fl_vec(a.v, a.nb);
    fg.vgo = fl_vec(a.go, a.nb);
    return fg;
}

/* shared bytes past the default 48 KB need the kernel's consent */
template <typename K> static int fl_shared(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        TCU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return TC_OK;
}

template <typename T, int NT> static int flash_forward_run(tc_tensor *out, tc_tensor *lse, const attn &a) {
    flash_geom fg = geom_of(a);
    size_t bytes = (size_t)3 * FL_TILE * fg.w * sizeof(T);
    if (fl_shared(flash_forward<T, NT>, bytes) != TC_OK) return TC_ERR;
    TCU_LAUNCH((flash_forward<T, NT>), fl_grid(a.B * ((a.L + FL_TILE - 1) / FL_TILE)), FL_THREADS, bytes,
               (T *)tcu_ptr(out), (float *)tcu_ptr(lse), a, fg);
    TCU_LAUNCHED("scaled_dot_product_attention");
    return TC_OK;
}

/* g (when wanted) from its float sums */
template <typename T> static int fl_cast(tc_tensor *g, const float *g32, int64_t n) {
    if (!g || !g32) return TC_OK;
    TCU_LAUNCH(flash_cast<T>, tcu_blocks(n), TCU_THREADS, 0, (T *)tcu_ptr(g), g32, n);
    TCU_LAUNCHED("scaled_dot_product_attention backward");
    return TC_OK;
}

template <typename T, int NT, int WHICH>
static int fl_kv(T *gk, T *gv, const flash_sums &sums, const float *dsum, const float *lse, const attn &a,
                 const flash_geom &fg, size_t bytes) {
    if (fl_shared(flash_backward_kv<T, NT, WHICH>, bytes) != TC_OK) return TC_ERR;
    TCU_LAUNCH((flash_backward_kv<T, NT, WHICH>), fl_grid(a.B * ((a.S + FL_TILE - 1) / FL_TILE) * sums.nsplit),
               FL_THREADS, bytes, gk, gv, sums, dsum, lse, a, fg);
    TCU_LAUNCHED("scaled_dot_product_attention backward");
    return TC_OK;
}

template <typename T, int NT>
static int flash_backward_run(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, const attn &a, float *dsum,
                              const flash_sums &sums, const float *lse) {
    flash_geom fg = geom_of(a);
    size_t bytes = (size_t)4 * FL_TILE * fg.w * sizeof(T);
    if (fl_shared(flash_dsum<T>, bytes) != TC_OK) return TC_ERR;
    TCU_LAUNCH(flash_dsum<T>, fl_grid(a.B * ((a.L + FL_TILE - 1) / FL_TILE)), FL_THREADS, bytes, dsum, lse, a, fg);
    TCU_LAUNCHED("scaled_dot_product_attention backward");
    bytes += (size_t)FL_TILE * (FL_TILE + 8) * sizeof(T) + 2 * FL_TILE * sizeof(float);
    T *k = gk ? (T *)tcu_ptr(gk) : NULL, *v = gv ? (T *)tcu_ptr(gv) : NULL;
    if constexpr (NT <= 8) {
        if (fl_kv<T, NT, FL_GK | FL_GV>(k, v, sums, dsum, lse, a, fg, bytes) != TC_OK) return TC_ERR;
    } else {
        if ((gq || gk) && fl_kv<T, NT, FL_GK>(k, NULL, sums, dsum, lse, a, fg, bytes) != TC_OK) return TC_ERR;
        if (gv && fl_kv<T, NT, FL_GV>(NULL, v, sums, dsum, lse, a, fg, bytes) != TC_OK) return TC_ERR;
    }
    if (fl_cast<T>(gq, sums.gq, a.B * a.L * a.E) != TC_OK || fl_cast<T>(gk, sums.gk, a.B * a.S * a.E) != TC_OK ||
        fl_cast<T>(gv, sums.gv, a.B * a.S * a.Ev) != TC_OK)
        return TC_ERR;
    return TC_OK;
}

/* the register tiles by the widest head dim: 64, 128 or 256 columns */
#define FL_BY_DIM(a, T, call)                                                    \
    do {                                                                         \
        int64_t dmax_ = (a).E > (a).Ev ? (a).E : (a).Ev;                         \
        if (dmax_ <= 64) { const int NT = 8; return call; }                      \
        if (dmax_ <= 128) { const int NT = 16; return call; }                    \
        { const int NT = 32; return call; }                                      \
    } while (0)

bool tcu_flash_fits(tc_dtype dt, const attn &a, bool gmask) {
    return (dt == TC_F16 || dt == TC_BF16) && !gmask && a.B > 0 && a.L > 0 && a.S > 0 && a.E > 0 && a.Ev > 0 &&
           a.E % 8 == 0 && a.Ev % 8 == 0 && a.E <= TCU_FLASH_MAX_DIM && a.Ev <= TCU_FLASH_MAX_DIM;
}

int tcu_flash_forward(tc_tensor *out, tc_tensor *lse, tc_dtype dt, const attn &a) {
    if (dt == TC_F16) FL_BY_DIM(a, T, (flash_forward_run<__half, NT>(out, lse, a)));
    FL_BY_DIM(a, T, (flash_forward_run<__nv_bfloat16, NT>(out, lse, a)));
}

template <typename T>
static int flash_backward_by_dim(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, const attn &a, float *dsum,
                                 const flash_sums &sums, const float *lse) {
    FL_BY_DIM(a, T, (flash_backward_run<T, NT>(gq, gk, gv, a, dsum, sums, lse)));
}

/* a zeroed float workspace of n elements into *p (NULL when n is 0) */
static int fl_zeros(float **p, int64_t n) {
    *p = NULL;
    if (n == 0) return TC_OK;
    size_t bytes = (size_t)n * sizeof(float);
    if (!(*p = (float *)tc_cuda_alloc(bytes)))
        return tc_error("scaled_dot_product_attention backward: out of GPU memory for a %zu-byte workspace", bytes);
    TCU_CHECK(cudaMemsetAsync(*p, 0, bytes, tcu_stream()));
    return TC_OK;
}

/* blocks the key-tile kernel aims for: fewer key tiles than this (short or cross-attention keys)
 * split their query tiles over several blocks, which then add gk and gv into float sums */
#define FL_BLOCKS_WANTED 1024

int tcu_flash_backward(tc_tensor *gq, tc_tensor *gk, tc_tensor *gv, tc_dtype dt, const attn &a, const tc_tensor *lse,
                       float *dsum) {
    int64_t kblocks = a.B * ((a.S + FL_TILE - 1) / FL_TILE), nq = (a.L + FL_TILE - 1) / FL_TILE;
    int64_t split = (FL_BLOCKS_WANTED + kblocks - 1) / kblocks;
    flash_sums sums = {NULL, NULL, NULL, (int)(split < 1 ? 1 : split > nq ? nq : split)};
    int rc = fl_zeros(&sums.gq, gq ? a.B * a.L * a.E : 0);
    if (rc == TC_OK && sums.nsplit > 1) rc = fl_zeros(&sums.gk, gk ? a.B * a.S * a.E : 0);
    if (rc == TC_OK && sums.nsplit > 1) rc = fl_zeros(&sums.gv, gv ? a.B * a.S * a.Ev : 0);
    const float *lp = (const float *)tcu_ptr(lse);
    if (rc == TC_OK && dt == TC_F16) rc = flash_backward_by_dim<__half>(gq, gk, gv, a, dsum, sums, lp);
    else if (rc == TC_OK) rc = flash_backward_by_dim<__nv_bfloat16>(gq, gk, gv, a, dsum, sums, lp);
    float *ws[3] = {sums.gq, sums.gk, sums.gv};
    for (int i = 0; i < 3; i++)
        if (ws[i]) tc_cuda_free(ws[i]);
    return rc;
}
