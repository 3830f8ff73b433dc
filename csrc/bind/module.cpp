// The CPU extension module fastnn._C: the runtime (ISA, threads, build facts,
// roofline probes) and every CPU kernel family.
#include <nanobind/stl/string.h>

#include "bindings.h"
#include "checks.h"
#include "fastnn/cpu_features.h"
#include "fastnn/parallel.h"
#include "fastnn/roofline.h"

namespace fastnn::bind {

void bind_runtime(nb::module_& m) {
    m.def("isa_detected", [] { return std::string(isa_name(detected_isa())); },
          "The best kernel path this build and CPU support.");
    m.def("isa_active", [] { return std::string(isa_name(active_isa())); }, "The kernel path in use.");
    m.def("isa_requested", []() -> nb::object {
        const char* env = requested_isa_env();
        return env ? nb::object(nb::str(env)) : nb::none();
    }, "The value of FASTNN_ISA at start-up, or None.");
    m.def(
        "set_isa",
        [](const std::string& name) {
            Isa isa;
            if (!parse_isa(name.c_str(), &isa))
                throw_value_error(cat("isa must be one of generic, avx2, avx512, got '", name, "'"));
            if (!set_active_isa(isa))
                throw_value_error(cat("isa '", name, "' is not supported on this CPU or build (best: ",
                                      isa_name(detected_isa()), ")"));
        },
        nb::arg("isa"), "Select the kernel path; it must not be above isa_detected().");
    m.def("cpu_features", [] {
        const CpuFeatures& f = cpu_features();
        nb::dict d;
        d["avx2"] = f.avx2; d["fma"] = f.fma; d["f16c"] = f.f16c;
        d["avx512f"] = f.avx512f; d["avx512bw"] = f.avx512bw; d["avx512vl"] = f.avx512vl;
        d["avx512dq"] = f.avx512dq; d["avx512_vnni"] = f.avx512_vnni; d["avx512_bf16"] = f.avx512_bf16;
        d["avx_vnni"] = f.avx_vnni; d["amx_bf16"] = f.amx_bf16; d["amx_int8"] = f.amx_int8;
        return d;
    });
    m.def(
        "cache_sizes",
        [] {
            const CacheSizes& c = cache_sizes();
            nb::dict d;
            d["l1d"] = c.l1d; d["l2"] = c.l2; d["l3"] = c.l3;
            return d;
        },
        "Data cache sizes in bytes (L1d and L2 per core, L3 per shared slice) that the kernels' blocking and "
        "streaming-store choices are derived from.");
    m.def("num_threads", &num_threads);
    m.def("default_num_threads", &default_num_threads);
    m.def(
        "thread_runtime",
        []() -> std::string {
            const char* omp = openmp_runtime();
            return omp ? cat("OpenMP team of ", omp) : std::string("fastnn's own workers");
        },
        "Which threads run fastnn's parallel kernels: the OpenMP runtime already loaded in this process (PyTorch's), "
        "or fastnn's own workers (no runtime loaded, or FASTNN_THREAD_POOL=own).");
    m.def(
        "set_num_threads",
        [](int n) {
            if (n < 1) throw_value_error(cat("n must be >= 1, got ", n));
            nb::gil_scoped_release release;
            set_num_threads(n);
        },
        nb::arg("n"));
    m.def("build_info", [] {
        nb::dict d;
        d["compiler"] = FASTNN_COMPILER;
        d["build_type"] = FASTNN_BUILD_TYPE;
        d["x86_kernels"] = static_cast<bool>(FASTNN_X86_KERNELS);
        return d;
    });
    m.def(
        "fma_peak_gflops",
        [](double seconds) {
            nb::gil_scoped_release release;
            return measure_fma_peak_gflops(seconds);
        },
        nb::arg("seconds") = 0.2);
    m.def(
        "bf16_dot_peak_gflops",
        [](double seconds) {
            nb::gil_scoped_release release;
            return measure_bf16_dot_peak_gflops(seconds);
        },
        nb::arg("seconds") = 0.2,
        "Peak of the pool's threads on the bf16 GEMM's dot product (tdpbf16ps or vdpbf16ps); 0.0 where the active "
        "path has neither");
    m.def(
        "copy_bandwidth_gbps",
        [](std::size_t bytes, int repeats) {
            nb::gil_scoped_release release;
            return measure_copy_bandwidth_gbps(bytes, repeats);
        },
        nb::arg("bytes") = std::size_t(256) << 20, nb::arg("repeats") = 10);
}

}  // namespace fastnn::bind

NB_MODULE(_C, m) {
    m.doc() = "fastnn CPU kernels";
    fastnn::bind::bind_runtime(m);
    fastnn::bind::bind_activation(m);
    fastnn::bind::bind_gemm(m);
    fastnn::bind::bind_optim(m);
    fastnn::bind::bind_quant(m);
    fastnn::bind::bind_norm(m);
    fastnn::bind::bind_softmax(m);
    fastnn::bind::bind_loss(m);
    fastnn::bind::bind_dropout(m);
    fastnn::bind::bind_attention(m);
    fastnn::bind::bind_pool(m);
    fastnn::bind::bind_conv(m);
}
