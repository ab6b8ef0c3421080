/* runtime.h: what the runtime files of the cuda device share (device.cu: stream, errors,
 * copies; alloc.cu: the caching allocators), and no kernel file needs: page-locked host
 * buffers, and holding one until the asynchronous copy that reads it is done. */
#ifndef TOCHA_KERNELS_RUNTIME_H
#define TOCHA_KERNELS_RUNTIME_H

#include "cuda.h"

/* ---- alloc.cu: page-locked host memory ---------------------------------------------------
 * tcu_pinned_empty: a contiguous CPU tensor in page-locked memory from the pinned cache
 * (storage->pinned set; its release puts the block back in the cache), or NULL with an
 * error set. tcu_pinned_hold: keeps s alive until the work queued on tcu_stream() so far
 * is done (an asynchronous copy reading it); tcu_pinned_reap gives back those now done
 * (all = true after a synchronize: every one). */
tc_tensor *tcu_pinned_empty(int ndim, const int64_t *shape, tc_dtype dt);
int tcu_pinned_hold(tc_storage *s);
void tcu_pinned_reap(bool all);

/* ---- alloc.cu: graph pools -------------------------------------------------------------------
 * A CUDA graph's private memory (graph.cu). _capture(pool): device allocations come from pool
 * until _capture(NULL); _release: frees the pool (its blocks still in use join the device pool). */
typedef struct tcu_graph_pool tcu_graph_pool;
tcu_graph_pool *tcu_graph_pool_new(void);
int tcu_graph_pool_capture(tcu_graph_pool *pool);
size_t tcu_graph_pool_reserved(tcu_graph_pool *pool);
int tcu_graph_pool_release(tcu_graph_pool *pool);

#endif
