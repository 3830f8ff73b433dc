// The CUDA module's contract, free of nanobind and of any framework: device
// queries and one launcher per kernel family. Launchers enqueue on the
// caller's stream and never synchronize; they return the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "fastnn/activation.h"

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

}  // namespace fastnn::cuda
