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
extern size_t tcu_emu_shared_limit; /* dynamic shared memory a launch may ask for */

#endif
