/* cudnn.h: the little of kernels/conv.cu (all of tocha's cuDNN code) that other files may use:
 * the status check, the library handle (created on first use, bound to tcu_stream()) and a
 * release of everything cuDNN holds (cached descriptors and algorithms, the workspace, the
 * handle), for the runtime to call at exit or before a device reset. */
#ifndef TOCHA_KERNELS_CUDNN_H
#define TOCHA_KERNELS_CUDNN_H

#include "cuda.h"

#include <cudnn.h> /* the library's header (this one is only ever included by its quoted name) */

/* TCU_CUDNN(call): on failure, return TC_ERR from the calling function with the error
 * "<function> failed: <cudnnGetErrorString> (<file>:<line>)" */
extern "C" int tcu_cudnn_fail(const char *call, cudnnStatus_t status, const char *file, int line);
#define TCU_CUDNN(call)                                                                   \
    do {                                                                                  \
        cudnnStatus_t tcu_s_ = (call);                                                    \
        if (tcu_s_ != CUDNN_STATUS_SUCCESS) return tcu_cudnn_fail(#call, tcu_s_, __FILE__, __LINE__); \
    } while (0)

/* the handle, on tcu_stream(); fails (tc_error set) where cuDNN cannot start */
extern "C" int tcu_cudnn_handle(cudnnHandle_t *out);
/* frees the cached plans, the workspace and the handle; the next conv starts afresh */
extern "C" void tcu_cudnn_release(void);
/* frees cudnn_attention.cu's cached plans (tcu_cudnn_release calls it) */
extern "C" void tcu_cudnn_attention_release(void);

#endif
