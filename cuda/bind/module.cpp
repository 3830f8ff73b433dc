// The CUDA extension module fastnn._cuda. Built only when CMake finds nvcc;
// its CUDA runtime is linked statically, so importing it needs no driver and
// reports "no GPU" instead of failing.
#include <nanobind/stl/string.h>

#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

void check_pair(const ArrayArg& in, const ArrayArg& out, std::initializer_list<const ArrayArg*> inputs) {
    require_cuda(in);
    require_dtype(in, {DType::f32, DType::bf16});
    require_same_device(in, out);
    require_same_dtype(in, out);
    require_same_shape(in, out);
    require_output(out, inputs, Alias::exact_allowed);
}

void relu_forward(nb::handle x, nb::handle out, uintptr_t stream) {
    const ArrayArg X(x, "x", false), Y(out, "out", true);
    check_pair(X, Y, {&X});
    const ActivationParams p{Activation::relu, X.view(), Y.view()};
    DeviceGuard guard(X.device_id());
    check_cuda(cuda::activation_forward(p, reinterpret_cast<cudaStream_t>(stream)), "relu_forward");
}

void relu_backward(nb::handle grad_out, nb::handle y, nb::handle out, uintptr_t stream) {
    const ArrayArg G(grad_out, "grad_out", false), Y(y, "y", false), R(out, "out", true);
    check_pair(G, R, {&G, &Y});
    require_same_device(G, Y);
    require_same_dtype(G, Y);
    require_same_shape(G, Y);
    const ActivationBackwardParams p{Activation::relu, G.view(), Y.view(), R.view()};
    DeviceGuard guard(G.device_id());
    check_cuda(cuda::activation_backward(p, reinterpret_cast<cudaStream_t>(stream)), "relu_backward");
}

}  // namespace
}  // namespace fastnn::bind

NB_MODULE(_cuda, m) {
    namespace nb = nanobind;
    using namespace fastnn;
    m.doc() = "fastnn CUDA kernels";
    m.def("device_count", [] {
        std::string reason;
        const int count = cuda::device_count(&reason);
        return nb::make_tuple(count, reason.empty() ? nb::object(nb::none()) : nb::object(nb::str(reason.c_str())));
    }, "(number of GPUs, reason when there are none)");
    m.def("device_info", [](int device) {
        cuda::DeviceInfo info;
        bind::check_cuda(cuda::device_info(device, &info), "cudaGetDeviceProperties");
        nb::dict d;
        d["name"] = info.name;
        d["capability"] = nb::make_tuple(info.major, info.minor);
        d["multiprocessors"] = info.multiprocessors;
        d["total_memory"] = info.total_memory;
        return d;
    }, nb::arg("device"));
    m.def("runtime_version", [] {
        int v = 0;
        cudaRuntimeGetVersion(&v);
        return v;
    });
    m.def("fma_peak_gflops", [](int device) {
        double v = 0.0;
        nb::gil_scoped_release release;
        bind::check_cuda(cuda::measure_fma_peak_gflops(device, &v), "fma_peak_gflops");
        return v;
    }, nb::arg("device") = 0);
    m.def("copy_bandwidth_gbps", [](int device, size_t bytes) {
        double v = 0.0;
        nb::gil_scoped_release release;
        bind::check_cuda(cuda::measure_copy_bandwidth_gbps(device, bytes, &v), "copy_bandwidth_gbps");
        return v;
    }, nb::arg("device") = 0, nb::arg("bytes") = size_t(1) << 30);
    m.def("relu_forward", &bind::relu_forward, nb::arg("x"), nb::arg("out"), nb::arg("stream"));
    m.def("relu_backward", &bind::relu_backward, nb::arg("grad_out"), nb::arg("y"), nb::arg("out"), nb::arg("stream"));
    bind::bind_attention(m);
    bind::bind_gemm(m);
}
