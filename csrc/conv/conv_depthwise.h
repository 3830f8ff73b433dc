// Depthwise convolution (conv_depthwise.cpp, the planar paths in
// conv_depthwise_planar.cpp), compiled per ISA: one input and one output
// channel per group (groups == C == K), any filter size, stride, padding and
// dilation; the forward pass, the input gradient and the weight gradient.
// Include only from per-ISA kernel files.
#pragma once

#include "conv_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {

inline bool depthwise_applies(const Sizes& z) { return z.Cg == 1 && z.Kg == 1; }

// out = conv(x, weight) + bias (bias K floats or null); p.out written
// completely. Needs depthwise_applies.
template <class T>
void depthwise_forward(const ConvParams& p, const float* bias);

// grad_x and grad_weight where present (written completely); the bias
// gradient is left to the caller. Needs depthwise_applies.
template <class T>
void depthwise_backward(const ConvBackwardParams& p);

// The planar paths (NCHW-like: unit column stride in `in` and `out`, column
// stride 1), which depthwise_forward / depthwise_backward choose themselves.
bool planar_applies(const TensorView& in, const TensorView& out, int64_t col_stride);

template <class T>
void forward_planar(const ConvParams& p, const Sizes& z, const float* bias);

// grad_x at stride 1 (both directions), written completely.
template <class T>
void input_gradient_planar(const ConvBackwardParams& p, const Sizes& z);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
