// Softmax and log-softmax over the last dimension, forward and backward.
// Contract for every path: x, y (and dy, dx) share one shape (ndim >= 1) and
// one dtype (float32 or bfloat16), any strides, rows along the last dim;
// arithmetic and row statistics in float32, each output rounded once.
//   softmax:      y = exp(x - max) / sum(exp(x - max))
//   log_softmax:  y = (x - max) - log(sum(exp(x - max)))
//   backward:     softmax      dx = y * (dy - sum(dy * y))
//                 log_softmax  dx = dy - exp(y) * sum(dy)
// A row holding +inf or NaN, or only -inf, gives NaN everywhere (as PyTorch).
#pragma once

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

struct SoftmaxParams {
    TensorView x;
    TensorView y;  // written
    bool log;
};

struct SoftmaxBackwardParams {
    TensorView grad_out;
    TensorView y;         // the forward's output
    TensorView grad_in;   // written
    bool log;
};

void softmax_forward(const SoftmaxParams& p);
void softmax_backward(const SoftmaxBackwardParams& p);

struct SoftmaxKernels {
    void (*forward)(const SoftmaxParams&);
    void (*backward)(const SoftmaxBackwardParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(SoftmaxKernels, softmax_kernels)

}  // namespace fastnn
