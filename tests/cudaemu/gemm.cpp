/* gemm.cpp (cudaemu): the cuda table's GEMM slot on the emulator. On a GPU it is a cuBLASLt
 * call queued on tocha's stream; here it is the CPU's kernel on "device" (host) memory, run at
 * once, or recorded when the stream captures (with copies of the tensor headers, whose memory
 * the capture's allocator keeps for the graph). */
#include "emu.h"

#include "tocha.h"

extern "C" int tc_cpu_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta);
extern "C" cudaStream_t tcu_stream(void);
extern "C" int tcu_emu_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta);

namespace {
/* a tensor header and its storage's, detached from the originals' lifetimes */
struct header {
    tc_tensor t;
    tc_storage s;
    void set(const tc_tensor *x) {
        t = *x;
        s = *x->storage;
        t.storage = &s;
        t.grad = NULL;
        t.grad_fn = NULL;
    }
};
struct recorded_gemm {
    header c, a, b;
    double alpha, beta;
};
void run_gemm(void *ctx) {
    recorded_gemm *g = (recorded_gemm *)ctx;
    (void)tc_cpu_gemm(&g->c.t, &g->a.t, &g->b.t, g->alpha, g->beta); /* it passed when it was recorded */
}
void free_gemm(void *ctx) { delete (recorded_gemm *)ctx; }
} // namespace

int tcu_emu_gemm(tc_tensor *c, const tc_tensor *a, const tc_tensor *b, double alpha, double beta) {
    cudaStream_t s = tcu_stream();
    if (!tcu_emu_capturing(s)) return tc_cpu_gemm(c, a, b, alpha, beta);
    recorded_gemm *g = new recorded_gemm;
    g->c.set(c);
    g->a.set(a);
    g->b.set(b);
    g->alpha = alpha;
    g->beta = beta;
    tcu_emu_record(s, dim3(0), dim3(1), 0, run_gemm, g, free_gemm);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return tc_error("gemm: %s", cudaGetErrorString(e));
    return TC_OK;
}
