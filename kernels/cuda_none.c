/* cuda_none.c: the CUDA API of tocha.h when tocha is built without CUDA (no nvcc, or
 * CUDA=0; the Makefile then builds this file instead of the others of kernels/): nothing is
 * available, the memory stats are 0, and what needs a GPU fails saying so. With CUDA these
 * come from device.cu and alloc.cu instead. */
#include "../core/internal.h"

#include <stdio.h>
#include <string.h>

#define WHY "tocha was built without CUDA: nvcc was not found, or CUDA=0"
#define NO_CUDA "cuda is not available (" WHY ")"

bool tc_cuda_is_available(void) { return false; }
const char *tc_cuda_unavailable_reason(void) { return WHY; }
int tc_cuda_device_count(void) { return 0; }
int tc_cuda_device_name(int index, char *buf, size_t n) {
    (void)index; (void)buf; (void)n;
    return tc_error("get_device_name: %s", NO_CUDA);
}
int tc_cuda_synchronize(void) { return tc_error("synchronize: %s", NO_CUDA); }
int tc_cuda_memory(tc_cuda_memory_stats *out) { memset(out, 0, sizeof *out); return TC_OK; }
int tc_cuda_empty_cache(void) { return TC_OK; }
void tc_cuda_reset_peak(void) {}
int tc_cuda_memory_summary(char *buf, size_t n) {
    if (n) snprintf(buf, n, "cuda memory: %s\n", NO_CUDA);
    return TC_OK;
}
void tc_cuda_set_oom_hook(void (*hook)(void *ctx), void *ctx) { (void)hook; (void)ctx; }
/* the flags are kept, so scripts that set them run unchanged on the CPU */
static bool tf32, bench;
void tc_cuda_set_allow_tf32(bool on) { tf32 = on; }
bool tc_cuda_allow_tf32(void) { return tf32; }
void tc_cuda_set_cudnn_benchmark(bool on) { bench = on; }
static bool sdpa_flash;
int tc_cuda_set_sdpa_backend(const char *name) {
    if (strcmp(name, "cudnn") && strcmp(name, "flash"))
        return tc_error("sdpa_backend: expected \"cudnn\" or \"flash\", got \"%s\"", name);
    sdpa_flash = !strcmp(name, "flash");
    return TC_OK;
}
const char *tc_cuda_sdpa_backend(void) { return sdpa_flash ? "flash" : "cudnn"; }
const char *tc_cuda_sdpa_last(bool backward, const char **reason) {
    (void)backward;
    if (reason) *reason = "tocha was built without CUDA";
    return "none";
}
bool tc_cuda_cudnn_benchmark(void) { return bench; }
tc_tensor *tc_pin_memory(tc_tensor *x) { (void)x; tc_error("pin_memory: %s", NO_CUDA); return NULL; }
bool tc_is_pinned(const tc_tensor *x) { return x->storage->pinned; }
tc_cuda_graph *tc_cuda_graph_begin(void) { tc_error("cuda graph: %s", NO_CUDA); return NULL; }
int tc_cuda_graph_end(tc_cuda_graph *g) { (void)g; return tc_error("cuda graph: %s", NO_CUDA); }
int tc_cuda_graph_replay(tc_cuda_graph *g) { (void)g; return tc_error("cuda graph: %s", NO_CUDA); }
int tc_cuda_graph_free(tc_cuda_graph *g) { (void)g; return TC_OK; }
size_t tc_cuda_graph_pool_bytes(const tc_cuda_graph *g) { (void)g; return 0; }
bool tc_cuda_is_capturing(void) { return false; }
int tc_cuda_capture_error(const char *what) { return tc_error("%s: %s", what, NO_CUDA); }
int tc_cuda_adam_scalars(tc_tensor *scalars, int n, const int64_t *steps, const tc_adam_opts *o, tc_dtype dt) {
    (void)scalars; (void)n; (void)steps; (void)o; (void)dt;
    return tc_error("adam: %s", NO_CUDA);
}
int tc_cuda_sgd_scalars(tc_tensor *scalars, const tc_sgd_opts *o, tc_dtype dt) {
    (void)scalars; (void)o; (void)dt;
    return tc_error("sgd: %s", NO_CUDA);
}
