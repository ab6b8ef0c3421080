/* PLACEHOLDER: replaced by the real implementation in this session */
#include "../internal.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

tc_tensor *tc_index_select(tc_tensor *x, int dim, tc_tensor *index) { tc_error("index_select: not built yet"); return NULL; }
tc_tensor *tc_gather(tc_tensor *x, int dim, tc_tensor *index) { tc_error("gather: not built yet"); return NULL; }
tc_tensor *tc_scatter_add(tc_tensor *x, int dim, tc_tensor *index, tc_tensor *src) { tc_error("scatter_add: not built yet"); return NULL; }
tc_tensor *tc_masked_fill(tc_tensor *x, tc_tensor *mask, double value) { tc_error("masked_fill: not built yet"); return NULL; }
tc_tensor *tc_cat(int n, tc_tensor **xs, int dim) { tc_error("cat: not built yet"); return NULL; }
tc_tensor *tc_stack(int n, tc_tensor **xs, int dim) { tc_error("stack: not built yet"); return NULL; }
tc_tensor *tc_embedding(tc_tensor *index, tc_tensor *weight, int64_t padding_idx) { tc_error("embedding: not built yet"); return NULL; }
