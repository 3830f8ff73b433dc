// Losses: fused softmax cross-entropy and mean squared error, forward and
// backward. Arithmetic in float32 per element, row and batch sums in float64;
// outputs rounded once to the input dtype (float32 or bfloat16).
//
// Cross-entropy, logits (N, C) with any strides, target int64 (N,) in [0, C)
// or == ignore_index (the binding layer checks), smoothing e in [0, 1]:
//   lse_i  = log(sum_j exp(x_ij))
//   loss_i = (1 - e) (lse_i - x_i,t) + e (lse_i - mean_j x_ij),  0 if ignored
//   mean: sum_i loss_i / (rows not ignored) (NaN when all are), sum, or none.
// Forward reads the logits once and saves lse (float64, (N,): a float32 lse
// of a large-magnitude row would put its rounding error, relative to lse,
// into every probability) for backward,
// which reads them once more and writes
//   dlogits_ij = g_i (exp(x_ij - lse_i) - (1 - e) [j == t_i] - e / C)
// directly (g_i: the loss gradient, / count for mean; 0 for ignored rows).
// The probabilities are never stored.
#pragma once

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

enum class Reduction : uint8_t { none, mean, sum };

struct CrossEntropyParams {
    TensorView logits;
    TensorView target;
    TensorView loss;  // written: (N,) for none, () otherwise; the logits' dtype
    TensorView stats;  // written: (N, 2) float64
    Reduction reduction;
    int64_t ignore_index;
    float label_smoothing;
};

struct CrossEntropyBackwardParams {
    TensorView logits;
    TensorView target;
    TensorView stats;  // the forward's
    TensorView grad_loss;  // the loss's shape and dtype
    TensorView grad_logits;  // written
    Reduction reduction;
    int64_t ignore_index;
    float label_smoothing;
};

// mse: (x - t)^2 elementwise (none) or its mean or sum, as a () tensor.
struct MseParams {
    TensorView x;
    TensorView target;
    TensorView loss;  // written
    Reduction reduction;
};

// dx = 2 (x - t) g, / numel for mean; g is () for mean and sum.
struct MseBackwardParams {
    TensorView x;
    TensorView target;
    TensorView grad_loss;
    TensorView grad_x;  // written
    Reduction reduction;
};

void cross_entropy_forward(const CrossEntropyParams& p);
void cross_entropy_backward(const CrossEntropyBackwardParams& p);
void mse_forward(const MseParams& p);
void mse_backward(const MseBackwardParams& p);

struct LossKernels {
    void (*cross_entropy_forward)(const CrossEntropyParams&);
    void (*cross_entropy_backward)(const CrossEntropyBackwardParams&);
    void (*mse_forward)(const MseParams&);
    void (*mse_backward)(const MseBackwardParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(LossKernels, loss_kernels)

}  // namespace fastnn
