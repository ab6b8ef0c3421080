/* PLACEHOLDER: replaced by the real implementation in this session */
#include "../internal.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

tc_tensor *tc_conv2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p) { tc_error("conv2d: not built yet"); return NULL; }
tc_tensor *tc_conv_transpose2d(tc_tensor *x, tc_tensor *w, tc_tensor *b, const tc_conv_params *p) { tc_error("conv_transpose2d: not built yet"); return NULL; }
tc_tensor *tc_avg_pool2d(tc_tensor *x, const tc_pool_params *p) { tc_error("avg_pool2d: not built yet"); return NULL; }
tc_tensor *tc_max_pool2d(tc_tensor *x, const tc_pool_params *p) { tc_error("max_pool2d: not built yet"); return NULL; }
tc_tensor *tc_interpolate(tc_tensor *x, int64_t out_h, int64_t out_w, tc_interp_mode mode, bool align_corners) { tc_error("interpolate: not built yet"); return NULL; }
tc_tensor *tc_pad(tc_tensor *x, int npairs, const int64_t *pads, tc_pad_mode mode, double value) { tc_error("pad: not built yet"); return NULL; }
