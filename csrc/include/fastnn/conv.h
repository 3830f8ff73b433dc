// 2-D convolution (cross-correlation, as torch.nn.functional.conv2d), forward
// and backward, float32 or bfloat16 with float32 accumulation.
//
// Contract for every path: x (N, C, H, W), weight (K, C / groups, R, S),
// bias (K) or absent, out (N, K, OH, OW); any strides (NCHW and channels-last
// are both just strides). Output pixel (oh, ow) reads input rows
// oh * stride_h - pad_h + r * dilation_h (and likewise columns); reads
// outside the input are zeros. pad is the top/left padding; the bottom/right
// padding is implied by OH, OW (so asymmetric 'same' padding works).
#pragma once

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

struct ConvGeometry {
    int64_t stride[2], pad[2], dilation[2];
    int64_t groups;
};

struct ConvParams {
    ConvGeometry geo;
    TensorView x, weight;
    TensorView bias;  // optional (data == nullptr)
    TensorView out;   // written
};

// Each gradient is optional (data == nullptr: not computed) and written
// completely when present.
struct ConvBackwardParams {
    ConvGeometry geo;
    TensorView x, weight, grad_out;
    TensorView grad_x, grad_weight, grad_bias;
};

void conv2d_forward(const ConvParams& p);
void conv2d_backward(const ConvBackwardParams& p);

struct ConvKernels {
    void (*forward)(const ConvParams&);
    void (*backward)(const ConvBackwardParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(ConvKernels, conv_kernels)

}  // namespace fastnn
