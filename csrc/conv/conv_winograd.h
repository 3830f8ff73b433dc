// Winograd F(2x2, 3x3) convolution (conv_winograd.cpp): 3x3 filters, stride
// 1, dilation 1; the forward pass, the input gradient (the forward pass with
// the filter flipped and its channel dimensions swapped) and the weight
// gradient. Compiled per ISA: include
// only from per-ISA kernel files.
#pragma once

#include "fastnn/conv.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {

// Filter tap (row, col) of output channel k and input channel c of group g
// is data[g * group + k * out + c * in + row * this->row + col * this->col]
// (element strides; negative strides read the filter reversed).
struct WinogradWeights {
    const void* data;
    int64_t group, out, in, row, col;
};

// out (N, K, OH, OW) = conv(x (N, C, H, W), weight) + bias with top/left
// padding pad_top, pad_left (reads outside x are zeros). x, weight and out
// share the dtype (float32 or bf16) and may have any strides; bias is K
// floats or null.
struct WinogradConv {
    TensorView x;
    WinogradWeights weight;
    const float* bias;
    TensorView out;
    int64_t groups, pad_top, pad_left;
};

// Where the Winograd path beats the direct one: GEMMs over at least 16
// channels each way (depthwise and RGB layers stay direct), and outputs of
// at least 3x3 pixels. On 1- and 2-pixel outputs most of every patch is
// padding, so the direct sum has few terms while the transforms still add
// and cancel all nine taps: the error reached 1.0-1.6x the accuracy rule's
// bound there, 0.3-0.7x from 3x3 up.
inline bool winograd_applies(int64_t in_per_group, int64_t out_per_group, int64_t out_h, int64_t out_w) {
    return in_per_group >= 16 && out_per_group >= 16 && out_h >= 3 && out_w >= 3;
}

void winograd_forward(const WinogradConv& p);

// grad_weight (K, C / groups, 3, 3) of the convolution WinogradConv computes,
// from its input x (N, C, H, W) and the gradient of its output grad_out
// (N, K, OH, OW); all three of one dtype, any strides. Written completely.
struct WinogradGradWeight {
    TensorView x, grad_out, grad_weight;
    int64_t groups, pad_top, pad_left;
};

void winograd_grad_weight(const WinogradGradWeight& p);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
