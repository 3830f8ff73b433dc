// fastnn._cuda softmax / log-softmax: the CPU module's names, arguments and
// checks (csrc/bind/softmax_args.h) plus a trailing stream.
#include "../../csrc/bind/softmax_args.h"
#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

void forward(nb::handle x, nb::handle out, bool log, uintptr_t stream) {
    softmax_args::forward_call(require_cuda, [stream](const SoftmaxParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::softmax_forward(p, as_stream(stream)), "softmax_forward");
    }, x, out, log);
}

void backward(nb::handle grad_out, nb::handle y, nb::handle out, bool log, uintptr_t stream) {
    softmax_args::backward_call(require_cuda, [stream](const SoftmaxBackwardParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::softmax_backward(p, as_stream(stream)), "softmax_backward");
    }, grad_out, y, out, log);
}

}  // namespace

void bind_softmax(nb::module_& m) {
    m.def("softmax_forward", [](nb::handle x, nb::handle out, uintptr_t s) { forward(x, out, false, s); },
          nb::arg("x"), nb::arg("out"), nb::arg("stream"), "out = softmax(x) over the last dimension.");
    m.def("log_softmax_forward", [](nb::handle x, nb::handle out, uintptr_t s) { forward(x, out, true, s); },
          nb::arg("x"), nb::arg("out"), nb::arg("stream"), "out = log_softmax(x) over the last dimension.");
    m.def(
        "softmax_backward",
        [](nb::handle g, nb::handle y, nb::handle out, uintptr_t s) { backward(g, y, out, false, s); },
        nb::arg("grad_out"), nb::arg("y"), nb::arg("out"), nb::arg("stream"),
        "out = y * (grad_out - sum(grad_out * y)); y = softmax(x).");
    m.def(
        "log_softmax_backward",
        [](nb::handle g, nb::handle y, nb::handle out, uintptr_t s) { backward(g, y, out, true, s); },
        nb::arg("grad_out"), nb::arg("y"), nb::arg("out"), nb::arg("stream"),
        "out = grad_out - exp(y) * sum(grad_out); y = log_softmax(x).");
}

}  // namespace fastnn::bind
