// The CUDA extension module fastnn._cuda. Built only when CMake finds nvcc;
// its CUDA runtime is linked statically, so importing it needs no driver and
// reports "no GPU" instead of failing.
#include <nanobind/stl/string.h>

#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

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
    bind::bind_activation(m);
    bind::bind_attention(m);
    bind::bind_dropout(m);
    bind::bind_gemm(m);
    bind::bind_loss(m);
    bind::bind_norm(m);
    bind::bind_optim(m);
    bind::bind_quant(m);
    bind::bind_softmax(m);
}
