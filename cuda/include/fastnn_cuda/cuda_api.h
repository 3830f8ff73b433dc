// The CUDA module's contract, free of nanobind and of any framework: device
// queries and one launcher per kernel family. Launchers enqueue on the
// caller's stream and never synchronize; they return the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "fastnn/activation.h"
#include "fastnn/dropout.h"
#include "fastnn/loss.h"
#include "fastnn/norm.h"
#include "fastnn/optim.h"
#include "fastnn/quant.h"
#include "fastnn/softmax.h"

namespace fastnn::cuda {

struct DeviceInfo {
    std::string name;
    int major = 0, minor = 0;
    int multiprocessors = 0;
    size_t total_memory = 0;
};

// Number of visible GPUs; 0 with a reason when there is no driver or device.
int device_count(std::string* reason);
cudaError_t device_info(int device, DeviceInfo* info);

// Roofline probes for the bench (they synchronize their own stream).
cudaError_t measure_fma_peak_gflops(int device, double* gflops);
cudaError_t measure_copy_bandwidth_gbps(int device, size_t bytes, double* gbps);

cudaError_t activation_forward(const ActivationParams& p, cudaStream_t stream);
cudaError_t activation_backward(const ActivationBackwardParams& p, cudaStream_t stream);

// The families below follow the CPU contracts of the same params structs
// (fastnn/<family>.h) element for element; where a CUDA kernel differs
// (reduction orders, device-side argument checks) its header comment says so.
cudaError_t norm_forward(const NormForwardParams& p, cudaStream_t stream);
cudaError_t norm_backward(const NormBackwardParams& p, cudaStream_t stream);
cudaError_t softmax_forward(const SoftmaxParams& p, cudaStream_t stream);
cudaError_t softmax_backward(const SoftmaxBackwardParams& p, cudaStream_t stream);
// target and stats on the device: see cuda/loss/cross_entropy.cu for targets
// out of range (NaN rows instead of a host-side check).
cudaError_t cross_entropy_forward(const CrossEntropyParams& p, cudaStream_t stream);
cudaError_t cross_entropy_backward(const CrossEntropyBackwardParams& p, cudaStream_t stream);
cudaError_t dropout_apply(const DropoutParams& p, cudaStream_t stream);
// Scales on the device are the caller's contract (positive, finite).
cudaError_t quantize(const QuantizeParams& p, cudaStream_t stream);
cudaError_t dequantize(const DequantizeParams& p, cudaStream_t stream);
cudaError_t quantize_rows(const QuantizeRowsParams& p, cudaStream_t stream);

// y = act(x + bias) over rows (..., N), bias (N,) float32 or x's dtype; the
// backward writes grad_in = act'(x + bias) * grad_out and, when grad_bias.data
// is set, grad_bias = the column sums of grad_in (bias's dtype), reduced in a
// fixed order.
struct BiasActivationParams {
    Activation kind;
    TensorView x;
    TensorView bias;
    TensorView y;  // written; may be x itself
};

struct BiasActivationBackwardParams {
    Activation kind;
    TensorView grad_out;
    TensorView x;
    TensorView bias;
    TensorView grad_in;    // written
    TensorView grad_bias;  // written when data != nullptr
};

cudaError_t bias_activation_forward(const BiasActivationParams& p, cudaStream_t stream);
cudaError_t bias_activation_backward(const BiasActivationBackwardParams& p, cudaStream_t stream);

// Every pointer of p (step counts, grad_scale and found_inf included) is
// device memory on the current device.
cudaError_t optim_step(const OptimStepParams& p, cudaStream_t stream);
// out (one element, float32 or bfloat16, device) = the p-norm of all the
// tensors' elements together, root applied: no value returns to the host.
cudaError_t grad_norm(const GradNormParams& p, const TensorView& out, cudaStream_t stream);
// Every tensor *= coef, a one-element float32 or bfloat16 device tensor;
// nothing is written when coef is exactly 1.
cudaError_t grad_scale(const GradNormTensor* tensors, int64_t num_tensors, const TensorView& coef,
                       cudaStream_t stream);

}  // namespace fastnn::cuda
