// fastnn._cuda dropout: the CPU module's names, arguments and checks
// (csrc/bind/dropout_args.h) plus a trailing stream; the same mask bit for
// bit (cuda/elementwise/dropout.cu).
#include "../../csrc/bind/dropout_args.h"
#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

void dropout(nb::handle x, nb::handle out, double p, uint64_t seed, uint64_t offset, const char* x_name,
             uintptr_t stream) {
    dropout_args::call(require_cuda, [stream](const DropoutParams& params, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::dropout_apply(params, as_stream(stream)), "dropout");
    }, x, out, p, seed, offset, x_name);
}

}  // namespace

void bind_dropout(nb::module_& m) {
    m.def(
        "dropout_forward",
        [](nb::handle x, nb::handle out, double p, uint64_t seed, uint64_t offset, uintptr_t stream) {
            dropout(x, out, p, seed, offset, "x", stream);
        },
        nb::arg("x"), nb::arg("out"), nb::arg("p"), nb::arg("seed"), nb::arg("offset"), nb::arg("stream"),
        "out = x * mask / (1 - p); the mask is Philox4x32-10 of (seed, offset, element index), as on the CPU.");
    m.def(
        "dropout_backward",
        [](nb::handle grad_out, nb::handle out, double p, uint64_t seed, uint64_t offset, uintptr_t stream) {
            dropout(grad_out, out, p, seed, offset, "grad_out", stream);
        },
        nb::arg("grad_out"), nb::arg("out"), nb::arg("p"), nb::arg("seed"), nb::arg("offset"), nb::arg("stream"),
        "out = grad_out * mask / (1 - p), the forward's mask regenerated from (seed, offset).");
}

}  // namespace fastnn::bind
