/* PLACEHOLDER: replaced by the real implementation in this session */
#include "../internal.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

tc_tensor *tc_softmax(tc_tensor *x, int dim) { tc_error("softmax: not built yet"); return NULL; }
tc_tensor *tc_log_softmax(tc_tensor *x, int dim) { tc_error("log_softmax: not built yet"); return NULL; }
tc_tensor *tc_cross_entropy(tc_tensor *logits, tc_tensor *target, tc_tensor *weight,
                            int64_t ignore_index, double label_smoothing, tc_reduction red) { tc_error("cross_entropy: not built yet"); return NULL; }
tc_tensor *tc_mse_loss(tc_tensor *a, tc_tensor *b, tc_reduction red) { tc_error("mse_loss: not built yet"); return NULL; }
tc_tensor *tc_l1_loss(tc_tensor *a, tc_tensor *b, tc_reduction red) { tc_error("l1_loss: not built yet"); return NULL; }
tc_tensor *tc_layer_norm(tc_tensor *x, int nnorm, tc_tensor *w, tc_tensor *b, double eps) { tc_error("layer_norm: not built yet"); return NULL; }
tc_tensor *tc_group_norm(tc_tensor *x, int groups, tc_tensor *w, tc_tensor *b, double eps) { tc_error("group_norm: not built yet"); return NULL; }
tc_tensor *tc_dropout(tc_tensor *x, double p, bool training) { tc_error("dropout: not built yet"); return NULL; }
tc_tensor *tc_sdpa(tc_tensor *q, tc_tensor *k, tc_tensor *v, tc_tensor *mask, bool is_causal,
                   double dropout_p, double scale ) { tc_error("sdpa: not built yet"); return NULL; }
