// Elementwise activations, forward and backward. Contract for every path:
// x/y (and grad tensors) share one shape and one dtype (float32 or bfloat16),
// any strides; arithmetic is in float32, rounded once to the output dtype.
// Output may alias an input only exactly (same data and strides: in-place).
#pragma once

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

enum class Activation : uint8_t { relu, gelu, gelu_tanh, silu, sigmoid, tanh };

struct ActivationParams {
    Activation kind;
    TensorView x;
    TensorView y;  // written
};

// `saved` is what PyTorch's backward of the same op reads: the forward output
// for relu, sigmoid and tanh; the forward input for gelu, gelu_tanh and silu.
// relu: grad_in = grad_out where y > 0 (and where y is NaN, as PyTorch's
// threshold_backward), else 0.
struct ActivationBackwardParams {
    Activation kind;
    TensorView grad_out;
    TensorView saved;
    TensorView grad_in;  // written
};

void activation_forward(const ActivationParams& p);
void activation_backward(const ActivationBackwardParams& p);

struct ActivationKernels {
    void (*forward)(const ActivationParams&);
    void (*backward)(const ActivationBackwardParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(ActivationKernels, activation_kernels)

}  // namespace fastnn
