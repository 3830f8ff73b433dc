// Convolution as GEMMs over gathered patches (conv_im2col.cpp), compiled per
// ISA: one group, any filter size, stride, padding and dilation; the
// forward pass, the input gradient and the weight gradient. Include only
// from per-ISA kernel files.
#pragma once

#include "conv_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {

// Where the gathered-patch GEMMs beat the other paths
// (bench/notes/conv_pool.md): one group, a GEMM reduction of at least 64
// filter taps (C R S) and at least 32 output channels; strided filters with
// at most 256 output pixels per image (the direct path runs one output row
// per product), and 3x3 stride-1 layers with few 2x2 output tiles for their
// channels (Winograd's per-call 16 C K weight transform dominates there).
// One image's patch matrix must fit the gather budget (32 MiB), so that the
// input gradient gathers whole images.
bool im2col_applies(const Sizes& z, const ConvGeometry& geo, DType dtype);

// out = conv(x, weight) + bias (bias K floats or null); p.out written
// completely. Needs im2col_applies.
template <class T>
void im2col_forward(const ConvParams& p, const float* bias);

// grad_x and grad_weight where present (written completely); the bias
// gradient is left to the caller. Needs im2col_applies.
template <class T>
void im2col_backward(const ConvBackwardParams& p);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
