#include "bindings.h"
#include "softmax_args.h"

namespace fastnn::bind {
namespace {

void softmax_forward_py(nb::handle x, nb::handle out, bool log) {
    softmax_args::forward_call(require_cpu, [](const SoftmaxParams& p, const ArrayArg&) {
        nb::gil_scoped_release release;
        softmax_forward(p);
    }, x, out, log);
}

void softmax_backward_py(nb::handle grad_out, nb::handle y, nb::handle out, bool log) {
    softmax_args::backward_call(require_cpu, [](const SoftmaxBackwardParams& p, const ArrayArg&) {
        nb::gil_scoped_release release;
        softmax_backward(p);
    }, grad_out, y, out, log);
}

}  // namespace

void bind_softmax(nb::module_& m) {
    m.def("softmax_forward", [](nb::handle x, nb::handle out) { softmax_forward_py(x, out, false); },
          nb::arg("x"), nb::arg("out"), "out = softmax(x) over the last dimension.");
    m.def("log_softmax_forward", [](nb::handle x, nb::handle out) { softmax_forward_py(x, out, true); },
          nb::arg("x"), nb::arg("out"), "out = log_softmax(x) over the last dimension.");
    m.def(
        "softmax_backward",
        [](nb::handle g, nb::handle y, nb::handle out) { softmax_backward_py(g, y, out, false); },
        nb::arg("grad_out"), nb::arg("y"), nb::arg("out"), "out = y * (grad_out - sum(grad_out * y)); y = softmax(x).");
    m.def(
        "log_softmax_backward",
        [](nb::handle g, nb::handle y, nb::handle out) { softmax_backward_py(g, y, out, true); },
        nb::arg("grad_out"), nb::arg("y"), nb::arg("out"),
        "out = grad_out - exp(y) * sum(grad_out); y = log_softmax(x).");
}

}  // namespace fastnn::bind
