/* emu.h (cudaemu): what emu.cpp (host API) and exec.cpp (launches) share. */
#ifndef TCU_EMU_EMU_H
#define TCU_EMU_EMU_H

#include <cuda_runtime.h>
#include <stdarg.h>

#define TCU_EMU_SHARED_DEFAULT ((size_t)48 << 10) /* a launch's shared memory without opt-in */
#define TCU_EMU_SHARED_OPTIN ((size_t)227 << 10)  /* with cudaFuncSetAttribute (sm_90) */

/* sets the last error to e, with a detail (printf format, may be NULL) that
 * cudaGetErrorString(e) appends; returns e */
cudaError_t tcu_emu_fail(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool tcu_emu_no_device(void);
bool tcu_emu_is_device(const void *p, size_t n); /* [p, p + n) lies in one cudaMalloc block */
bool tcu_emu_stream_ok(cudaStream_t s);
/* graph.cpp: a call CUDA forbids while a stream captures (what names it) fails with
 * cudaErrorStreamCaptureUnsupported and invalidates the capture: true then. relaxed_ok: relaxed
 * mode allows it. _sync: a synchronization of stream s, forbidden on the capturing stream. */
bool tcu_emu_capture_forbids(const char *what, bool relaxed_ok);
bool tcu_emu_capture_forbids_sync(cudaStream_t s, const char *what);
extern size_t tcu_emu_shared_limit;
/* cudnn.cpp: the stream a cuDNN handle works on (cudnn_graph.cpp's executes follow it) */
struct tcu_emu_cudnn_context;
cudaStream_t tcu_emu_cudnn_stream(struct tcu_emu_cudnn_context *h); /* dynamic shared memory a launch may ask for */

#endif
