// Depthwise convolution (conv_depthwise.cpp), compiled per ISA: one input
// and one output channel per group (groups == C == K), any filter size,
// stride, padding and dilation; the forward pass, the input gradient and the
// weight gradient. Include only from per-ISA kernel files.
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

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
