/* selftest.cpp (cudaemu): checks the emulator itself, through kernels/cuda.h's launch macros
 * as tocha's kernels use them: block and warp reductions, grid-stride loops on 2D grids,
 * dynamic shared memory, atomics, half rounding, warp exchanges and the tensor-core
 * instructions of kernels/mma.h, cuDNN's graph API (checks and a small graph), launch errors, deadlock reports and the host API. Run: make EMU=1 cudaemu-selftest (it runs twice, once with TOCHA_EMU_ORDER=reverse). */
#include "../../kernels/cuda.h"
#include "../../kernels/mma.h"

#include <cudnn.h>

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures, checks;

/* the stream TCU_LAUNCH queues on (tocha's runtime, kernels/device.cu, is not linked here):
 * the legacy default stream, except while test_graph captures */
static cudaStream_t launch_stream;
extern "C" cudaStream_t tcu_stream(void) { return launch_stream; }
#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        checks++;                                                                         \
        if (!(cond)) {                                                                    \
            failures++;                                                                   \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            printf(__VA_ARGS__);                                                          \
            printf("\n");                                                                 \
        }                                                                                 \
    } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* the machine may be busy */
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

template <typename T> static T *dev_alloc(size_t n) {
    T *p = NULL;
    cudaError_t e = cudaMalloc(&p, n * sizeof(T));
    if (e != cudaSuccess) { printf("cudaMalloc: %s\n", cudaGetErrorString(e)); exit(1); }
    return p;
}

/* ---- block reduction: __shared__ + __syncthreads ----------------------------------------- */
__global__ void block_sum(const float *x, float *out, int n) {
    __shared__ float s[1024];
    unsigned t = threadIdx.x;
    float v = 0;
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += blockDim.x * gridDim.x) v += x[i];
    s[t] = v;
    __syncthreads();
    for (unsigned k = blockDim.x / 2; k > 0; k /= 2) { /* blockDim a power of two */
        if (t < k) s[t] += s[t + k];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

static void test_block_reduction(void) {
    const int n = 100000;
    float *x = dev_alloc<float>(n), *out = dev_alloc<float>(64);
    for (int i = 0; i < n; i++) x[i] = (float)(i % 7);
    double want = 0;
    for (int i = 0; i < n; i++) want += i % 7;
    int sizes[] = {32, 256, 1024};
    for (int threads : sizes) {
        TCU_LAUNCH(block_sum, 64, threads, 0, x, out, n);
        CHECK(cudaGetLastError() == cudaSuccess, "launch");
        double got = 0;
        for (int b = 0; b < 64; b++) got += out[b];
        CHECK(got == want, "block sum with %d threads: %g, want %g", threads, got, want);
    }
    cudaFree(x);
    cudaFree(out);
}

/* threads past 100 return at once; the others meet at barriers (returned threads count as
 * arrived) */
__global__ void barrier_after_return(int *out) {
    __shared__ int s[128];
    unsigned t = threadIdx.x;
    if (t >= 100) return;
    s[t] = (int)t;
    __syncthreads();
    int v = s[99 - t];
    __syncthreads();
    s[t] = v * 2;
    __syncthreads();
    out[t] = s[t];
}

static void test_barrier_after_return(void) {
    int *out = dev_alloc<int>(128);
    TCU_LAUNCH(barrier_after_return, 1, 128, 0, out);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    bool ok = true;
    for (int t = 0; t < 100; t++) ok &= out[t] == 2 * (99 - t);
    CHECK(ok, "barrier with returned threads");
    cudaFree(out);
}

/* ---- warp reductions: __shfl_xor_sync, __shfl_down_sync --------------------------------- */
template <typename T> __global__ void warp_sums(const T *x, T *xor_out, T *down_out) {
    unsigned t = threadIdx.x;
    T v = x[t], w = x[t];
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    for (int o = 16; o > 0; o /= 2) w += __shfl_down_sync(0xffffffffu, w, o);
    xor_out[t] = v; /* every lane: the warp's total */
    down_out[t] = w; /* lane 0: the warp's total */
}

template <typename T> static void check_warp_sums(const char *name) {
    const int n = 256;
    T *x = dev_alloc<T>(n), *a = dev_alloc<T>(n), *b = dev_alloc<T>(n);
    for (int i = 0; i < n; i++) x[i] = (T)((i * 37) % 101);
    TCU_LAUNCH(warp_sums<T>, 1, n, 0, x, a, b);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    bool ok_xor = true, ok_down = true;
    for (int w = 0; w < n / 32; w++) {
        T total = 0;
        for (int l = 0; l < 32; l++) total += x[w * 32 + l];
        for (int l = 0; l < 32; l++) ok_xor &= a[w * 32 + l] == total;
        ok_down &= b[w * 32] == total;
        /* lane l of the down reduction: lanes past 31 read their own value */
        T want = x[w * 32 + 31];
        for (int o = 16; o > 0; o /= 2) want += want; /* lane 31 always reads itself */
        ok_down &= b[w * 32 + 31] == want;
    }
    CHECK(ok_xor, "%s: __shfl_xor_sync reduction", name);
    CHECK(ok_down, "%s: __shfl_down_sync reduction", name);
    cudaFree(x);
    cudaFree(a);
    cudaFree(b);
}

/* every shuffle mode and width against the PTX rule computed on the host */
__global__ void shuffle_modes(int *out) {
    int lane = (int)(threadIdx.x & 31), v = 100 + (int)threadIdx.x, k = 0;
    int widths[] = {32, 16, 8};
    for (int w : widths) {
        out[threadIdx.x * 16 + k++] = __shfl_down_sync(0xffffffffu, v, 5, w);
        out[threadIdx.x * 16 + k++] = __shfl_up_sync(0xffffffffu, v, 3, w);
        out[threadIdx.x * 16 + k++] = __shfl_xor_sync(0xffffffffu, v, 6, w);
        out[threadIdx.x * 16 + k++] = __shfl_sync(0xffffffffu, v, 13, w);
    }
    __syncwarp();
    out[threadIdx.x * 16 + k++] = __shfl_sync(0xffffffffu, v, lane + 33); /* modulo 32 */
}

static void test_shuffle_modes(void) {
    int *out = dev_alloc<int>(64 * 16);
    TCU_LAUNCH(shuffle_modes, 1, 64, 0, out);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    bool ok = true;
    int widths[] = {32, 16, 8};
    for (int t = 0; t < 64; t++) {
        int lane = t & 31, base = t & ~31, k = 0;
        for (int w : widths) {
            int seg = lane / w * w; /* first lane of the segment */
            int down = lane + 5 < seg + w ? lane + 5 : lane;
            int up = lane - 3 >= seg ? lane - 3 : lane;
            int bfly = (lane ^ 6) < seg + w ? lane ^ 6 : lane;
            int idx = seg + 13 % w;
            int want[4] = {down, up, bfly, idx};
            for (int m = 0; m < 4; m++) ok &= out[t * 16 + k++] == 100 + base + want[m];
        }
        ok &= out[t * 16 + k] == 100 + base + (lane + 1) % 32;
    }
    CHECK(ok, "shuffle modes and widths follow shfl.sync");
    cudaFree(out);
}

/* a partial last warp: lanes past blockDim do not exist, reading one gives all-ones bits */
__global__ void partial_warp(float *out) {
    float v = (float)threadIdx.x;
    float s = v;
    for (int o = 8; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o); /* within 16 lanes */
    out[threadIdx.x] = s;
    out[64 + threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 8);
}

static void test_partial_warp(void) {
    float *out = dev_alloc<float>(128);
    TCU_LAUNCH(partial_warp, 1, 48, 0, out);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    float s1 = 0;
    for (int i = 32; i < 48; i++) s1 += (float)i;
    bool ok = true;
    for (int i = 32; i < 48; i++) ok &= out[i] == s1;
    CHECK(ok, "xor reduction over the 16 lanes of a partial warp");
    CHECK(out[64 + 32] == 40.0f, "lane 0 of warp 1 reads lane 8: %g", out[64 + 32]);
    CHECK(isnan(out[64 + 40]), "lane 8 of warp 1 reads non-existent lane 16: %g", out[64 + 40]);
    cudaFree(out);
}

/* ---- warp exchanges, and mma.sync / ldmatrix built on them -------------------------------- */
__global__ void exchange_all(int *out) {
    int mine[2] = {(int)threadIdx.x * 3, -(int)threadIdx.x}, all[32][2];
    tcu_emu_warp_exchange(mine, sizeof mine, all);
    for (int u = 0; u < 32; u++) out[threadIdx.x * 32 + u] = all[u][0] + all[u][1];
}
/* lanes 0..15 shuffle while 16..31 exchange: a deadlock on the GPU's terms */
__global__ void exchange_mixed(int *out) {
    int all[32];
    if (threadIdx.x < 16) out[0] = __shfl_xor_sync(0xffffffffu, 1, 1);
    else tcu_emu_warp_exchange(&out, sizeof(int), all);
}

/* d = a b (16 x 16 times 16 x 8) on one warp, from row-major a [16][16] and b given as b [16][8]
 * (ldmatrix .trans) and as its transpose bt [8][16] (plain ldmatrix); d [2][16][8]: the two */
template <typename T> __global__ void mma_tile(const T *a, const T *b, const T *bt, float *d) {
    __shared__ T as[16][16], bs[16][8], bts[8][16];
    int l = threadIdx.x;
    for (int i = l; i < 256; i += 32) as[i / 16][i % 16] = a[i];
    for (int i = l; i < 128; i += 32) {
        bs[i / 8][i % 8] = b[i];
        bts[i / 16][i % 16] = bt[i];
    }
    __syncwarp();
    uint32_t af[4], bf[2], btf[2];
    tcu_ldmatrix_x4(af, &as[(l & 7) + 8 * ((l >> 3) & 1)][8 * (l >> 4)]);
    tcu_ldmatrix_x2_trans(bf, &bs[(l & 7) + 8 * ((l >> 3) & 1)][0]);
    tcu_ldmatrix_x2(btf, &bts[l & 7][8 * ((l >> 3) & 1)]);
    float c[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    tcu_mma<T>(c[0], af, bf);
    tcu_mma<T>(c[1], af, btf);
    int g = l >> 2, t = l & 3;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 4; i++) d[k * 128 + (g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = c[k][i];
}

/* ldmatrix from a row 2 bytes off 16: the GPU faults */
__global__ void ldmatrix_misaligned(uint32_t *out) {
    alignas(16) __shared__ __half s[8][24];
    uint32_t r[4];
    tcu_ldmatrix_x4(r, &s[threadIdx.x & 7][1]);
    out[threadIdx.x] = r[0];
}

template <typename T> static void check_mma(const char *name, T (*from)(float)) {
    T *a = dev_alloc<T>(256), *b = dev_alloc<T>(128), *bt = dev_alloc<T>(128);
    float *d = dev_alloc<float>(256), av[256], bv[128];
    for (int i = 0; i < 256; i++) a[i] = from(av[i] = (float)((i * 7) % 13) - 6);
    for (int i = 0; i < 128; i++) b[i] = from(bv[i] = (float)((i * 5) % 11) * 0.5f - 2);
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 8; n++) bt[n * 16 + k] = b[k * 8 + n];
    TCU_LAUNCH(mma_tile<T>, 1, 32, 0, a, b, bt, d);
    CHECK(cudaGetLastError() == cudaSuccess, "%s mma launch", name);
    int bad = 0;
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) {
            float e = 0;
            for (int k = 0; k < 16; k++) e += av[r * 16 + k] * bv[k * 8 + n];
            bad += d[r * 8 + n] != e; /* small integers and halves: exact */
            bad += d[128 + r * 8 + n] != e;
        }
    CHECK(bad == 0, "%s: ldmatrix (plain, .trans) + mma.sync m16n8k16 give a b (%d of 256 differ)", name, bad);
    cudaFree(a);
    cudaFree(b);
    cudaFree(bt);
    cudaFree(d);
}
static __half half_of(float v) { return __float2half_rn(v); }
static __nv_bfloat16 bf16_of(float v) { return __float2bfloat16_rn(v); }

static void test_exchange_and_mma(void) {
    int *out = dev_alloc<int>(64 * 32);
    TCU_LAUNCH(exchange_all, 1, 64, 0, out);
    CHECK(cudaGetLastError() == cudaSuccess, "exchange launch");
    bool ok = true;
    for (int t = 0; t < 64; t++)
        for (int u = 0; u < 32; u++) ok &= out[t * 32 + u] == 2 * ((t & ~31) + u);
    CHECK(ok, "every lane of each warp gets its warp's 32 values in lane order");
    TCU_LAUNCH(exchange_mixed, 1, 32, 0, out);
    cudaError_t e = cudaGetLastError();
    CHECK(e == cudaErrorLaunchFailure, "half a warp in a shuffle, half in an exchange: %s", cudaGetErrorName(e));
    printf("  mixed collectives: %s\n", cudaGetErrorString(e));
    TCU_LAUNCH(ldmatrix_misaligned, 1, 32, 0, (uint32_t *)out);
    e = cudaGetLastError();
    CHECK(e == cudaErrorMisalignedAddress, "ldmatrix from a misaligned row: %s", cudaGetErrorName(e));
    printf("  misaligned: %s\n", cudaGetErrorString(e));
    cudaFree(out);
    check_mma<__half>("f16", half_of);
    check_mma<__nv_bfloat16>("bf16", bf16_of);
}

/* ---- grid-stride loop over 1e6 elements, 2D grid and 2D blocks --------------------------- */
__global__ void grid_stride_2d(const float *x, float *y, int *hits, int64_t n) {
    int64_t nthreads = (int64_t)gridDim.x * gridDim.y * blockDim.x * blockDim.y;
    int64_t block = (int64_t)blockIdx.y * gridDim.x + blockIdx.x;
    int64_t tid = block * blockDim.x * blockDim.y + threadIdx.y * blockDim.x + threadIdx.x;
    for (int64_t i = tid; i < n; i += nthreads) {
        y[i] = 2 * x[i] + 1;
        hits[i]++;
    }
}

__global__ void grid_stride_1d(const float *x, float *y, int64_t n) {
    TCU_GRID_STRIDE(i, n) y[i] = x[i] * x[i];
}

static void test_grid_stride(void) {
    const int64_t n = 1000000;
    float *x = dev_alloc<float>(n), *y = dev_alloc<float>(n);
    int *hits = dev_alloc<int>(n);
    cudaMemset(hits, 0, n * sizeof(int));
    for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 1000);
    double t0 = now();
    TCU_LAUNCH(grid_stride_2d, dim3(37, 11), dim3(16, 8), 0, x, y, hits, n);
    double t1 = now();
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    bool ok = true;
    for (int64_t i = 0; i < n; i++) ok &= y[i] == 2 * x[i] + 1 && hits[i] == 1;
    CHECK(ok, "every element once, 2D grid of 2D blocks");
    TCU_LAUNCH(grid_stride_1d, tcu_blocks(n), TCU_THREADS, 0, x, y, n);
    double t2 = now();
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    ok = true;
    for (int64_t i = 0; i < n; i++) ok &= y[i] == x[i] * x[i];
    CHECK(ok, "TCU_GRID_STRIDE with tcu_blocks");
    printf("  1e6 elements, CPU time: 2D grid-stride %.1f ms, one thread per element (%u blocks) %.1f ms\n",
           (t1 - t0) * 1e3, tcu_blocks(n), (t2 - t1) * 1e3);
    cudaFree(x);
    cudaFree(y);
    cudaFree(hits);
}

/* threadIdx of a 3D block, and warps by linear thread index */
__global__ void block_3d(int *out) {
    unsigned lin = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
    unsigned first = __shfl_sync(0xffffffffu, lin, 0);
    out[lin] = (int)(lin * 100 + first / 32);
}

static void test_block_3d(void) {
    int *out = dev_alloc<int>(64);
    TCU_LAUNCH(block_3d, 1, dim3(4, 4, 4), 0, out);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    bool ok = true;
    for (int i = 0; i < 64; i++) ok &= out[i] == i * 100 + i / 32;
    CHECK(ok, "3D block: each linear index once, warps of 32 linear threads");
    cudaFree(out);
}

/* ---- dynamic shared memory --------------------------------------------------------------- */
__global__ void reverse_blocks(const double *x, double *y) {
    TCU_DYNAMIC_SHARED(double, s);
    unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = x[i];
    __syncthreads();
    y[i] = s[blockDim.x - 1 - t];
}

__global__ void shared_is_garbage(float *out) {
    TCU_DYNAMIC_SHARED(float, s);
    out[threadIdx.x] = s[threadIdx.x];
}

static void test_dynamic_shared(void) {
    const int threads = 512, blocks = 10;
    double *x = dev_alloc<double>(threads * blocks), *y = dev_alloc<double>(threads * blocks);
    for (int i = 0; i < threads * blocks; i++) x[i] = i;
    TCU_LAUNCH(reverse_blocks, blocks, threads, threads * sizeof(double), x, y);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    bool ok = true;
    for (int b = 0; b < blocks; b++)
        for (int t = 0; t < threads; t++) ok &= y[b * threads + t] == x[b * threads + threads - 1 - t];
    CHECK(ok, "reverse through dynamic shared memory");
    float *out = dev_alloc<float>(32);
    TCU_LAUNCH(shared_is_garbage, 1, 32, 32 * sizeof(float), out);
    CHECK(cudaGetLastError() == cudaSuccess && isnan(out[5]), "fresh shared memory reads NaN");
    cudaFree(x);
    cudaFree(y);
    cudaFree(out);
}

/* ---- atomics ------------------------------------------------------------------------------ */
struct counters {
    float f;
    double d;
    int i, imax, imin;
    unsigned u;
    unsigned long long ull;
    float fmax;
    int exch;
};

__global__ void atomics(counters *c) {
    int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    atomicAdd(&c->f, 1.0f);
    atomicAdd(&c->d, 0.5);
    atomicAdd(&c->i, t);
    atomicAdd(&c->u, 2u);
    atomicAdd(&c->ull, 1ull << 33);
    atomicMax(&c->imax, (t * 7919) % 10007);
    atomicMin(&c->imin, -((t * 7919) % 10007));
    /* float max through atomicCAS */
    float v = (float)((t * 31) % 1000) / 10;
    int *addr = (int *)&c->fmax, old = *addr, assumed;
    do {
        assumed = old;
        old = atomicCAS(addr, assumed, __float_as_int(fmaxf(v, __int_as_float(assumed))));
    } while (assumed != old);
    atomicExch(&c->exch, t);
}

static void test_atomics(void) {
    counters *c = dev_alloc<counters>(1);
    cudaMemset(c, 0, sizeof *c);
    c->imin = 0;
    c->fmax = -1;
    TCU_LAUNCH(atomics, 40, 256, 0, c);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    int n = 40 * 256, wmax = 0, wmin = 0;
    float wf = -1;
    for (int t = 0; t < n; t++) {
        if ((t * 7919) % 10007 > wmax) wmax = (t * 7919) % 10007;
        if (-((t * 7919) % 10007) < wmin) wmin = -((t * 7919) % 10007);
        wf = fmaxf(wf, (float)((t * 31) % 1000) / 10);
    }
    CHECK(c->f == n && c->d == n * 0.5 && c->i == n * (n - 1) / 2 && c->u == 2u * n &&
              c->ull == (unsigned long long)n << 33,
          "atomicAdd float %g double %g int %d unsigned %u ull %llu", c->f, c->d, c->i, c->u, c->ull);
    CHECK(c->imax == wmax && c->imin == wmin, "atomicMax %d (want %d), atomicMin %d (want %d)", c->imax, wmax, c->imin, wmin);
    CHECK(c->fmax == wf, "atomicCAS float max %g, want %g", c->fmax, wf);
    CHECK(c->exch >= 0 && c->exch < n, "atomicExch %d", c->exch);
    cudaFree(c);
}

/* ---- half precision ------------------------------------------------------------------------ */
static unsigned short h16(float f) { return __half_as_ushort(__float2half_rn(f)); }
static unsigned short b16(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }

/* float to bf16 by comparing distances in double: a reference independent of bit tricks.
 * lo truncates the magnitude, hi is the next bf16 up (2^128 past the largest finite). */
static unsigned short bf16_ref(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return 0x7fff;
    uint32_t lo = x & 0xffff0000u, hi = lo + 0x10000;
    if ((lo & 0x7fffffff) == 0x7f800000) return (unsigned short)(lo >> 16); /* inf */
    float flo, fhi;
    memcpy(&flo, &lo, 4);
    memcpy(&fhi, &hi, 4);
    double dlo = flo, dhi = (hi & 0x7fffffff) == 0x7f800000 ? copysign(ldexp(1.0, 128), f) : fhi;
    double dl = fabs((double)f - dlo), dh = fabs(dhi - (double)f);
    if (dl < dh || (dl == dh && !((lo >> 16) & 1))) return (unsigned short)(lo >> 16);
    return (unsigned short)(hi >> 16);
}

static void test_half(void) {
    CHECK(h16(1.0f) == 0x3c00, "1");
    CHECK(h16(-2.0f) == 0xc000, "-2");
    CHECK(h16(65504.0f) == 0x7bff, "max");
    CHECK(h16(65519.99f) == 0x7bff, "below the overflow threshold");
    CHECK(h16(65520.0f) == 0x7c00, "65520 rounds to inf");
    CHECK(h16(INFINITY) == 0x7c00 && h16(-INFINITY) == 0xfc00, "inf");
    CHECK(h16(1.0f + ldexpf(1, -11)) == 0x3c00, "tie to even (down)");
    CHECK(h16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02, "tie to even (up)");
    CHECK(h16(ldexpf(1, -24)) == 0x0001, "smallest subnormal");
    CHECK(h16(ldexpf(1, -25)) == 0x0000, "half the smallest subnormal: tie to 0");
    CHECK(h16(ldexpf(1.5f, -25)) == 0x0001, "above the tie");
    CHECK(h16(ldexpf(3, -25)) == 0x0002, "subnormal tie to even (up)");
    CHECK(h16(ldexpf(1023, -24)) == 0x03ff && h16(ldexpf(1, -14)) == 0x0400, "subnormal/normal boundary");
    CHECK(h16(-0.0f) == 0x8000, "-0");
    CHECK(h16(NAN) == 0x7fff, "NaN is CUDA's canonical NaN");
    CHECK(__half2float(__ushort_as_half(0x3555)) == 0.333251953125f, "0x3555");
    CHECK(__half2float(__ushort_as_half(0x0001)) == ldexpf(1, -24), "subnormal to float");
    CHECK(isnan(__half2float(__ushort_as_half(0x7e00))), "NaN to float");
    int bad = 0;
    for (unsigned h = 0; h < 0x10000; h++) {
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (!nan && h16(__half2float(__ushort_as_half((unsigned short)h))) != h) bad++;
    }
    CHECK(bad == 0, "%d of 65536 halves do not round-trip through float", bad);
#ifdef __FLT16_MAX__
    bad = 0;
    for (uint64_t b = 0; b < 0x100000000ull; b += 9973) { /* a sweep of float bit patterns */
        uint32_t u = (uint32_t)b;
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f)) continue;
        _Float16 r = (_Float16)f;
        unsigned short want;
        memcpy(&want, &r, 2);
        if (h16(f) != want) bad++;
    }
    CHECK(bad == 0, "%d floats round to half unlike the compiler's _Float16", bad);
#endif
    CHECK(b16(1.0f) == 0x3f80, "bf16 1");
    CHECK(b16(1.0f + ldexpf(1, -8)) == 0x3f80, "bf16 tie to even (down)");
    CHECK(b16(1.0f + 3 * ldexpf(1, -8)) == 0x3f82, "bf16 tie to even (up)");
    CHECK(b16(FLT_MAX) == 0x7f80, "bf16 FLT_MAX rounds to inf");
    CHECK(b16(NAN) == 0x7fff, "bf16 NaN");
    CHECK(__bfloat162float(__ushort_as_bfloat16(0x4049)) == 3.140625f, "bf16 to float");
    bad = 0;
    for (uint64_t b = 0; b < 0x100000000ull; b += 7919) {
        uint32_t u = (uint32_t)b;
        float f;
        memcpy(&f, &u, 4);
        if (b16(f) != bf16_ref(f)) bad++;
    }
    CHECK(bad == 0, "%d floats round to bf16 unlike the reference", bad);
    /* double converts with one rounding: 1 + 2^-11 + 2^-40 is above the tie */
    CHECK(__half_as_ushort(__double2half(1.0 + ldexp(1, -11) + ldexp(1, -40))) == 0x3c01, "double to half");
    CHECK(__half_as_ushort(__double2half(1.0 + ldexp(1, -11))) == 0x3c00, "double to half, tie");
    CHECK(__bfloat16_as_ushort(__double2bfloat16(1.0 + ldexp(1, -8) + ldexp(1, -40))) == 0x3f81, "double to bf16");
    CHECK(__half_as_ushort(__double2half(1e300)) == 0x7c00, "double to half overflow");
}

/* ---- launch errors, deadlocks ------------------------------------------------------------- */
__global__ void empty_kernel(int *p) { (void)p; }

__global__ void shuffle_after_return(float *out) {
    if (threadIdx.x == 3) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
/* warp 1's lower half shuffles while its upper half waits at the barrier */
__global__ void divergent_barrier(int *out) {
    if (threadIdx.x < 32 || threadIdx.x >= 48) __syncthreads();
    else out[0] = __shfl_down_sync(0xffffffffu, 1, 1);
}

static void test_errors(void) {
    int *p = dev_alloc<int>(4);
    TCU_LAUNCH(empty_kernel, 1, 2048, 0, p);
    cudaError_t e = cudaGetLastError();
    CHECK(e == cudaErrorInvalidConfiguration, "2048 threads: %s", cudaGetErrorName(e));
    printf("  2048 threads: %s\n", cudaGetErrorString(e));
    CHECK(cudaGetLastError() == cudaSuccess, "the error is cleared");
    TCU_LAUNCH(empty_kernel, 1, dim3(1, 1, 128), 0, p);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "block z 128");
    TCU_LAUNCH(empty_kernel, dim3(1, 65536), 1, 0, p);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid y 65536");
    TCU_LAUNCH(empty_kernel, 0, 32, 0, p);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "empty grid");
    TCU_LAUNCH(empty_kernel, dim3(2147483648u), 1, 0, p);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid x 2^31");
    TCU_LAUNCH(empty_kernel, 1, 32, 64 << 10, p);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "64 KB dynamic shared without opt-in");

    float *out = dev_alloc<float>(64);
    TCU_LAUNCH(shuffle_after_return, 2, 32, 0, out);
    e = cudaGetLastError();
    CHECK(e == cudaErrorLaunchFailure, "a lane returns before a shuffle: %s", cudaGetErrorName(e));
    printf("  deadlock: %s\n", cudaGetErrorString(e));
    TCU_LAUNCH(divergent_barrier, 1, 64, 0, p);
    e = cudaGetLastError();
    CHECK(e == cudaErrorLaunchFailure, "half a warp at a barrier, half at a shuffle: %s", cudaGetErrorName(e));
    printf("  deadlock: %s\n", cudaGetErrorString(e));
    test_block_reduction(); /* the emulator recovers */

    int v = 0;
    CHECK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 << 10) == cudaErrorInvalidValue, "opt-in past 227 KB");
    cudaGetLastError();
    CHECK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 << 10) == cudaSuccess, "opt-in");
    TCU_LAUNCH(empty_kernel, 1, 32, 227 << 10, p);
    CHECK(cudaGetLastError() == cudaSuccess, "227 KB after opt-in");
    TCU_LAUNCH(empty_kernel, 1, 32, (227 << 10) + 1, p);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "past 227 KB");
    CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess && v == 227 << 10, "opt-in attribute %d", v);
    cudaFree(p);
    cudaFree(out);
}

/* ---- host API ------------------------------------------------------------------------------- */
static void test_host_api(void) {
    int n = -1, d = -1, v = 0;
    CHECK(cudaGetDeviceCount(&n) == cudaSuccess && n == 1, "one device: %d", n);
    CHECK(cudaSetDevice(0) == cudaSuccess && cudaGetDevice(&d) == cudaSuccess && d == 0, "device 0");
    CHECK(cudaSetDevice(1) == cudaErrorInvalidDevice, "no device 1");
    CHECK(cudaGetLastError() == cudaErrorInvalidDevice && cudaGetLastError() == cudaSuccess, "a failed call sets the last error");
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major == 9 && prop.warpSize == 32 &&
              prop.totalGlobalMem == (64u << 20) && prop.multiProcessorCount > 0, "properties");
    CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess && v == prop.multiProcessorCount, "attribute");
    int drv = 0, rt = 0;
    CHECK(cudaDriverGetVersion(&drv) == cudaSuccess && cudaRuntimeGetVersion(&rt) == cudaSuccess && drv >= rt && rt > 0, "versions");

    /* TOCHA_EMU_MEMORY=64M (set by main) */
    size_t free0, total;
    CHECK(cudaMemGetInfo(&free0, &total) == cudaSuccess && total == 64u << 20, "total %zu", total);
    void *a = NULL, *b = NULL;
    CHECK(cudaMalloc(&a, 40 << 20) == cudaSuccess && a && ((uintptr_t)a & 255) == 0, "40 MB");
    CHECK(cudaMalloc(&b, 40 << 20) == cudaErrorMemoryAllocation && !b, "40 MB more: out of memory");
    CHECK(cudaGetLastError() == cudaErrorMemoryAllocation, "OOM is the last error");
    CHECK(cudaGetLastError() == cudaSuccess, "and not sticky");
    size_t free1;
    cudaMemGetInfo(&free1, &total);
    CHECK(free0 - free1 == 40u << 20, "free fell by 40 MB");
    CHECK(cudaFree(a) == cudaSuccess, "free");
    CHECK(cudaFree(a) == cudaErrorInvalidValue, "double free");
    CHECK(cudaMalloc(&b, 0) == cudaSuccess && !b, "0 bytes");
    cudaGetLastError();

    float *dv = dev_alloc<float>(16), *pin = NULL, host[16];
    CHECK(cudaMallocHost(&pin, 16 * sizeof(float)) == cudaSuccess && pin, "pinned");
    cudaPointerAttributes at;
    CHECK(cudaPointerGetAttributes(&at, dv + 3) == cudaSuccess && at.type == cudaMemoryTypeDevice, "device pointer");
    CHECK(cudaPointerGetAttributes(&at, pin) == cudaSuccess && at.type == cudaMemoryTypeHost, "pinned pointer");
    CHECK(cudaPointerGetAttributes(&at, host) == cudaSuccess && at.type == cudaMemoryTypeUnregistered, "host pointer");
    for (int i = 0; i < 16; i++) host[i] = (float)i;
    CHECK(cudaMemcpy(dv, host, sizeof host, cudaMemcpyHostToDevice) == cudaSuccess, "H2D");
    CHECK(cudaMemcpyAsync(pin, dv, sizeof host, cudaMemcpyDeviceToHost, 0) == cudaSuccess && pin[7] == 7, "D2H");
    CHECK(cudaMemcpy(host, dv, sizeof host, cudaMemcpyHostToDevice) == cudaErrorInvalidValue, "H2D onto host memory");
    CHECK(cudaMemcpy(dv + 1, host, sizeof host, cudaMemcpyHostToDevice) == cudaErrorInvalidValue, "H2D past the allocation");
    CHECK(cudaMemcpy(dv, host, sizeof host, cudaMemcpyDefault) == cudaSuccess, "default kind");
    CHECK(cudaMemset(host, 0, 4) == cudaErrorInvalidValue, "memset on host memory");
    CHECK(cudaMemsetAsync(dv, 0, sizeof host, 0) == cudaSuccess && dv[5] == 0, "memset");
    float grid2[4][8];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 8; c++) grid2[r][c] = (float)(r * 10 + c);
    CHECK(cudaMemcpy2DAsync(dv, 3 * sizeof(float), &grid2[0][2], 8 * sizeof(float), 3 * sizeof(float), 4,
                            cudaMemcpyHostToDevice, 0) == cudaSuccess && dv[0] == 2 && dv[4] == 13 && dv[11] == 34,
          "2D copy");
    CHECK(cudaMemcpy2D(dv, 2, host, 8, 3, 2, cudaMemcpyHostToDevice) == cudaErrorInvalidPitchValue, "pitch below width");
    cudaGetLastError();

    cudaStream_t s;
    cudaEvent_t e0, e1;
    float ms = -1;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess, "stream");
    CHECK(cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess, "events");
    CHECK(cudaEventElapsedTime(&ms, e0, e1) == cudaErrorInvalidResourceHandle, "unrecorded events");
    CHECK(cudaEventRecord(e0, s) == cudaSuccess && cudaMemcpyAsync(dv, host, sizeof host, cudaMemcpyHostToDevice, s) == cudaSuccess &&
              cudaEventRecord(e1, s) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess,
          "record");
    CHECK(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms >= 0, "elapsed %g ms", ms);
    CHECK(cudaStreamSynchronize(s) == cudaSuccess && cudaStreamDestroy(s) == cudaSuccess, "destroy stream");
    CHECK(cudaStreamSynchronize(s) == cudaErrorInvalidResourceHandle, "destroyed stream");
    CHECK(cudaEventDestroy(e0) == cudaSuccess && cudaEventDestroy(e1) == cudaSuccess, "destroy events");
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "sync");
    cudaGetLastError();
    CHECK(cudaFreeHost(dv) == cudaErrorInvalidValue && cudaFree(pin) == cudaErrorInvalidValue, "frees of the other kind");
    cudaGetLastError();
    cudaFree(dv);
    cudaFreeHost(pin);
    CHECK(strcmp(cudaGetErrorString(cudaErrorMemoryAllocation), "out of memory") == 0, "error string");
    CHECK(strcmp(cudaGetErrorName(cudaErrorNoDevice), "cudaErrorNoDevice") == 0, "error name");
}

/* ---- stream capture and graphs ------------------------------------------------------------- */
__global__ void add_one(float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1;
}

static void test_graph(void) {
    const int n = 100;
    float *x = dev_alloc<float>(n), *y = dev_alloc<float>(n), host[n];
    for (int i = 0; i < n; i++) host[i] = (float)i;
    cudaMemcpy(x, host, sizeof host, cudaMemcpyHostToDevice);
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaStreamCaptureStatus st;
    CHECK(cudaStreamBeginCapture(NULL, cudaStreamCaptureModeGlobal) == cudaErrorStreamCaptureUnsupported,
          "the legacy stream cannot capture");
    cudaGetLastError();

    /* a capture records: nothing runs until the graph is launched */
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin");
    CHECK(cudaStreamIsCapturing(s, &st) == cudaSuccess && st == cudaStreamCaptureStatusActive, "capturing");
    launch_stream = s;
    TCU_LAUNCH(add_one, 1, 128, 0, x, n);
    CHECK(cudaMemcpyAsync(y, x, sizeof host, cudaMemcpyDeviceToDevice, s) == cudaSuccess, "recorded copy");
    CHECK(cudaMemsetAsync(x, 0, 4 * sizeof(float), s) == cudaSuccess, "recorded memset");
    launch_stream = NULL;
    CHECK(x[5] == 5 && y[5] != 5, "nothing ran during the capture");
    cudaGraph_t g;
    cudaGraphExec_t e;
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g, "end");
    CHECK(cudaStreamIsCapturing(s, &st) == cudaSuccess && st == cudaStreamCaptureStatusNone, "not capturing");
    CHECK(cudaGraphInstantiate(&e, g, 0) == cudaSuccess, "instantiate");
    CHECK(cudaGraphLaunch(e, s) == cudaSuccess && x[5] == 6 && y[5] == 6 && x[0] == 0 && y[0] == 1, "first launch");
    CHECK(cudaGraphLaunch(e, s) == cudaSuccess && x[5] == 7 && y[5] == 7 && x[3] == 0 && y[3] == 1, "second launch");
    CHECK(cudaGraphExecDestroy(e) == cudaSuccess && cudaGraphDestroy(g) == cudaSuccess, "destroy");
    CHECK(cudaGraphLaunch(e, s) == cudaErrorInvalidValue, "a destroyed graph");
    cudaGetLastError();

    /* forbidden calls fail and invalidate the capture; relaxed mode allows cudaMalloc */
    void *p = NULL;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin again");
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    CHECK(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess && mode == cudaStreamCaptureModeGlobal, "relax");
    CHECK(cudaMalloc(&p, 256) == cudaSuccess && p, "cudaMalloc in relaxed mode");
    CHECK(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess && mode == cudaStreamCaptureModeRelaxed, "restore");
    CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "synchronizing the capturing stream");
    CHECK(cudaStreamIsCapturing(s, &st) == cudaSuccess && st == cudaStreamCaptureStatusInvalidated, "invalidated");
    CHECK(cudaMemcpyAsync(y, x, 4, cudaMemcpyDeviceToDevice, s) == cudaErrorStreamCaptureInvalidated, "no more work");
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g, "the capture fails");
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin a third time");
    CHECK(cudaFree(p) == cudaErrorStreamCaptureUnsupported, "cudaFree");
    CHECK(cudaMemcpy(host, x, 4, cudaMemcpyDeviceToHost) == cudaErrorStreamCaptureUnsupported, "a synchronous copy");
    CHECK(cudaDeviceSynchronize() == cudaErrorStreamCaptureUnsupported, "cudaDeviceSynchronize");
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated, "fails");
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorIllegalState, "ending twice");
    cudaGetLastError();
    CHECK(cudaFree(p) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess, "usable afterwards");
    cudaStreamDestroy(s);
    cudaFree(x);
    cudaFree(y);
}

/* TOCHA_EMU_DEVICES=0, in a child process (the count is read once) */
static void test_no_device(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("TOCHA_EMU_DEVICES", "0", 1);
        int n = -1, bad = 0;
        void *p = NULL;
        bad += cudaGetDeviceCount(&n) != cudaErrorNoDevice || n != 0;
        bad += cudaMalloc(&p, 16) != cudaErrorNoDevice;
        TCU_LAUNCH(empty_kernel, 1, 1, 0, (int *)NULL);
        bad += cudaGetLastError() != cudaErrorNoDevice;
        _exit(bad);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "TOCHA_EMU_DEVICES=0: no device (status %d)", status);
}

/* ---- cost of a barrier --------------------------------------------------------------------- */
__global__ void many_barriers(float *x, int rounds) {
    __shared__ float s[256];
    s[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    for (int r = 0; r < rounds; r++) {
        __syncthreads();
        float v = s[(threadIdx.x + 1) % blockDim.x];
        __syncthreads();
        s[threadIdx.x] = v;
    }
    __syncthreads();
    x[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];
}

static void test_barrier_cost(void) {
    float *x = dev_alloc<float>(256 * 16);
    for (int i = 0; i < 256 * 16; i++) x[i] = (float)(i % 256);
    double t0 = now();
    TCU_LAUNCH(many_barriers, 16, 256, 0, x, 50);
    double t1 = now();
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    bool ok = true;
    for (int b = 0; b < 16; b++)
        for (int i = 0; i < 256; i++) ok &= x[b * 256 + i] == (float)((i + 50) % 256);
    CHECK(ok, "rotation through 100 barriers");
    printf("  %d thread-barrier waits, CPU time: %.1f ms (%.0f ns each)\n", 16 * 256 * 101, (t1 - t0) * 1e3,
           (t1 - t0) * 1e9 / (16 * 256 * 101));
    cudaFree(x);
}

/* ---- cuDNN's graph API (cudnn_graph.cpp) -------------------------------------------------------- */
static cudnnBackendDescriptor_t gtensor(int64_t uid, cudnnDataType_t dt, int64_t d2, int64_t d3, bool virt,
                                        bool byval = false, bool fin = true) {
    cudnnBackendDescriptor_t t;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t);
    int64_t dim[4] = {1, 1, d2, d3}, str[4] = {d2 * d3, d2 * d3, d3, 1}, align = 16;
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim);
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str);
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &byval);
    if (fin) cudnnBackendFinalize(t);
    return t;
}

/* a matmul operation a b -> c; returns its finalize's status */
static cudnnStatus_t gmatmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
                             cudnnBackendDescriptor_t *op) {
    cudnnBackendDescriptor_t mm;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_MATMUL_DESCRIPTOR, &mm);
    cudnnBackendSetAttribute(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    cudnnBackendFinalize(mm);
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, op);
    cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm);
    cudnnBackendDestroyDescriptor(mm); /* the operation holds what it needs */
    return cudnnBackendFinalize(*op);
}

/* graph -> heuristics -> plan; returns the plan's finalize status */
static cudnnStatus_t gplan(cudnnHandle_t h, int n, cudnnBackendDescriptor_t *ops, cudnnBackendDescriptor_t *plan) {
    cudnnBackendDescriptor_t g, heur, cfg;
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &g);
    cudnnBackendSetAttribute(g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    cudnnBackendSetAttribute(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, ops);
    cudnnStatus_t st = cudnnBackendFinalize(g);
    if (st != CUDNN_STATUS_SUCCESS) {
        cudnnBackendDestroyDescriptor(g);
        return st;
    }
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur);
    cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g);
    cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    cudnnBackendFinalize(heur);
    int64_t got = 0;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfg);
    cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &cfg);
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, plan);
    cudnnBackendSetAttribute(*plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    cudnnBackendSetAttribute(*plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg);
    st = cudnnBackendFinalize(*plan);
    cudnnBackendDestroyDescriptor(cfg);
    cudnnBackendDestroyDescriptor(heur);
    cudnnBackendDestroyDescriptor(g);
    return st;
}

static void test_cudnn_graph(void) {
    cudnnHandle_t h;
    CHECK(cudnnCreate(&h) == CUDNN_STATUS_SUCCESS, "cudnnCreate");
    /* finalize checks: a tensor without its id; an unfinalized tensor as an operand; shapes */
    cudnnBackendDescriptor_t t;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t);
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    CHECK(cudnnBackendFinalize(t) == CUDNN_STATUS_BAD_PARAM, "a tensor without dims, strides, id");
    cudnnBackendDestroyDescriptor(t);
    cudnnBackendDescriptor_t a = gtensor(1, f32, 2, 3, false), b = gtensor(2, f32, 3, 2, false);
    cudnnBackendDescriptor_t c = gtensor(3, f32, 2, 2, false), open = gtensor(9, f32, 3, 2, false, false, false);
    cudnnBackendDescriptor_t op, bad;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, &bad);
    CHECK(cudnnBackendSetAttribute(bad, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &open) ==
              CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "an unfinalized tensor as an operand");
    cudnnBackendDestroyDescriptor(bad);
    CHECK(gmatmul(a, a, c, &bad) == CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, "matmul [2, 3] x [2, 3]");
    cudnnBackendDestroyDescriptor(bad);
    /* C = (A B) * s, s by value, through a virtual tensor */
    cudnnBackendDescriptor_t v = gtensor(10, f32, 2, 2, true), s = gtensor(4, f32, 1, 1, false, true);
    CHECK(gmatmul(a, b, v, &op) == CUDNN_STATUS_SUCCESS, "matmul");
    cudnnBackendDescriptor_t pw, pop;
    cudnnPointwiseMode_t mul = CUDNN_POINTWISE_MUL;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw);
    cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mul);
    cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    cudnnBackendFinalize(pw);
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, &pop);
    cudnnBackendSetAttribute(pop, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    cudnnBackendSetAttribute(pop, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
    cudnnBackendSetAttribute(pop, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &s);
    cudnnBackendSetAttribute(pop, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    CHECK(cudnnBackendFinalize(pop) == CUDNN_STATUS_SUCCESS, "pointwise");
    cudnnBackendDescriptor_t ops[2] = {pop, op}, plan; /* out of order: execute orders them */
    CHECK(gplan(h, 1, &pop, &plan) == CUDNN_STATUS_BAD_PARAM, "a graph reading a virtual tensor nothing writes");
    CHECK(gplan(h, 2, ops, &plan) == CUDNN_STATUS_SUCCESS, "plan");
    int64_t ws = -1, n = 0;
    cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
    CHECK(ws > 0, "the plan asks for a workspace (%lld bytes)", (long long)ws);
    float ha[6] = {1, 2, 3, 4, 5, 6}, hb[6] = {1, 0, 0, 1, 1, 1}, hc[4] = {0}, scale = 0.5f;
    float *da, *db, *dc;
    void *dws;
    cudaMalloc((void **)&da, sizeof ha);
    cudaMalloc((void **)&db, sizeof hb);
    cudaMalloc((void **)&dc, sizeof hc);
    cudaMalloc(&dws, (size_t)ws);
    cudaMemcpy(da, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(db, hb, sizeof hb, cudaMemcpyHostToDevice);
    int64_t uids[4] = {1, 2, 3, 4};
    void *ptrs[4] = {da, db, dc, &scale};
    for (int missing = 1; missing >= 0; missing--) { /* first without the scale's pointer */
        cudnnBackendDescriptor_t pack;
        cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
        cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 4 - missing, uids);
        cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 4 - missing, ptrs);
        cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &dws);
        cudnnBackendFinalize(pack);
        cudnnStatus_t st = cudnnBackendExecute(h, plan, pack);
        CHECK(st == (missing ? CUDNN_STATUS_BAD_PARAM : CUDNN_STATUS_SUCCESS), "execute %s the scale's pointer: %d",
              missing ? "without" : "with", (int)st);
        cudnnBackendDestroyDescriptor(pack);
    }
    cudaMemcpy(hc, dc, sizeof hc, cudaMemcpyDeviceToHost);
    /* A B = [[4, 5], [10, 11]] */
    CHECK(hc[0] == 2 && hc[1] == 2.5f && hc[2] == 5 && hc[3] == 5.5f, "(A B) * 0.5: %g %g %g %g", hc[0], hc[1],
          hc[2], hc[3]);
    cudnnBackendDestroyDescriptor(plan);
    /* the support rule: f16 operands of a matmul with head dim 12 */
    cudnnDataType_t f16 = CUDNN_DATA_HALF;
    cudnnBackendDescriptor_t ha16 = gtensor(21, f16, 8, 12, false), hb16 = gtensor(22, f16, 12, 8, false);
    cudnnBackendDescriptor_t hc16 = gtensor(23, f16, 8, 8, false), hop;
    CHECK(gmatmul(ha16, hb16, hc16, &hop) == CUDNN_STATUS_SUCCESS, "f16 matmul");
    CHECK(gplan(h, 1, &hop, &plan) == CUDNN_STATUS_NOT_SUPPORTED, "head dim 12: the plan is refused");
    cudnnBackendDestroyDescriptor(plan);
    cudnnBackendDescriptor_t all[] = {a, b, c, open, v, s, op, pw, pop, ha16, hb16, hc16, hop};
    for (cudnnBackendDescriptor_t d : all) cudnnBackendDestroyDescriptor(d);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    cudaFree(dws);
    cudnnDestroy(h);
}

int main(void) {
    setenv("TOCHA_EMU_MEMORY", "64M", 1);
    const char *order = getenv("TOCHA_EMU_ORDER");
    printf("cudaemu selftest%s\n", order && !strcmp(order, "reverse") ? " (TOCHA_EMU_ORDER=reverse)" : "");
    test_no_device();
    test_host_api();
    test_graph();
    test_block_reduction();
    test_barrier_after_return();
    check_warp_sums<float>("float");
    check_warp_sums<double>("double");
    check_warp_sums<int>("int");
    check_warp_sums<unsigned>("unsigned");
    check_warp_sums<long long>("long long");
    test_shuffle_modes();
    test_partial_warp();
    test_grid_stride();
    test_block_3d();
    test_dynamic_shared();
    test_atomics();
    test_half();
    test_exchange_and_mma();
    test_errors();
    test_cudnn_graph();
    test_barrier_cost();
    printf("%d checks, %d failed\n", checks, failures);
    return failures != 0;
}
