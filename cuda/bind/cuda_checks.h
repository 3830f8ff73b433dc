// Validation helpers shared by the CUDA bindings: CUDA status to exception,
// the device check, and a guard that launches on an argument's own device.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>

#include "../../csrc/bind/checks.h"

namespace fastnn::bind {

inline void check_cuda(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(cat(what, ": ", cudaGetErrorString(status)));
}

inline void require_cuda(const ArrayArg& a) {
    if (a.device_type() != 2) throw_value_error(cat(a.name(), " must be on a CUDA device, got ", a.device_str()));
}

inline cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Launches on the array's own device and restores the caller's current device.
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
        if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceGuard() { cudaSetDevice(previous_); }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = 0;
};

// One registration function per CUDA kernel family; module.cpp calls them.
// Each binds its kernels under the names and argument order of their
// fastnn._C counterparts, plus a trailing `stream` (the raw cudaStream_t the
// kernels run on), with the same checks (csrc/bind/*_args.h).
void bind_activation(nb::module_& m);
void bind_attention(nb::module_& m);
void bind_dropout(nb::module_& m);
void bind_gemm(nb::module_& m);
void bind_loss(nb::module_& m);
void bind_norm(nb::module_& m);
void bind_optim(nb::module_& m);
void bind_quant(nb::module_& m);
void bind_softmax(nb::module_& m);

}  // namespace fastnn::bind
