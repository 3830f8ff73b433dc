// LayerNorm and RMSNorm over the last dimension, forward and backward.
//
// Contract for every path: x is (..., N) float32 or bfloat16 with any strides;
// "rows" are the leading dimensions. Statistics are float32 and have x's
// leading shape (a 1-D x has 0-dim statistics). weight and bias are (N,),
// float32 or x's dtype (bias has weight's dtype). y and grad_x have x's shape
// and dtype; grad_weight and grad_bias have weight's (or bias's) dtype.
// Arithmetic is float32; every output is rounded once.
//
//   layer: mean = E[x], rstd = 1/sqrt(Var[x] + eps)  (biased variance)
//          y = (x - mean) * rstd * weight + bias
//   rms:   rstd = 1/sqrt(E[x^2] + eps),  y = x * rstd * weight
//
// grad_weight and grad_bias are sums over rows taken in a fixed order (row
// blocks whose size does not depend on the thread count), so they are
// bit-identical for any number of threads.
#pragma once

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

enum class NormKind : uint8_t { layer, rms };

struct NormForwardParams {
    NormKind kind;
    TensorView x;
    TensorView weight;  // read when has_weight
    TensorView bias;    // read when has_bias (layer only)
    TensorView y;       // written; may be x itself (same data and strides)
    TensorView mean;    // written (layer only)
    TensorView rstd;    // written
    float eps;
    bool has_weight;
    bool has_bias;
};

struct NormBackwardParams {
    NormKind kind;
    TensorView grad_out;
    TensorView x;
    TensorView mean;          // read (layer only)
    TensorView rstd;          // read
    TensorView weight;        // read when has_weight
    TensorView grad_x;        // written
    TensorView grad_weight;   // written when want_grad_weight (requires has_weight)
    TensorView grad_bias;     // written when want_grad_bias (layer only)
    bool has_weight;
    bool want_grad_weight;
    bool want_grad_bias;
};

void norm_forward(const NormForwardParams& p);
void norm_backward(const NormBackwardParams& p);

struct NormKernels {
    void (*forward)(const NormForwardParams&);
    void (*backward)(const NormBackwardParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(NormKernels, norm_kernels)

}  // namespace fastnn
