#include "bindings.h"
#include "checks.h"
#include "fastnn/softmax.h"

namespace fastnn::bind {
namespace {

void require_rows(const ArrayArg& a) {
    if (a.ndim() < 1) throw_value_error(cat(a.name(), " must have at least 1 dimension (rows along the last), got 0"));
}

void softmax_forward_py(nb::handle x, nb::handle out, bool log) {
    const ArrayArg X(x, "x", false), Y(out, "out", true);
    require_cpu(X);
    require_dtype(X, {DType::f32, DType::bf16});
    require_rows(X);
    require_same_device(X, Y);
    require_same_dtype(X, Y);
    require_same_shape(X, Y);
    // Rows are read twice (statistics, then output), so out may not be x.
    require_output(Y, {&X}, Alias::forbidden);
    const SoftmaxParams p{X.view(), Y.view(), log};
    nb::gil_scoped_release release;
    softmax_forward(p);
}

void softmax_backward_py(nb::handle grad_out, nb::handle y, nb::handle out, bool log) {
    const ArrayArg G(grad_out, "grad_out", false), Y(y, "y", false), R(out, "out", true);
    require_cpu(G);
    require_dtype(G, {DType::f32, DType::bf16});
    require_rows(G);
    for (const ArrayArg* a : {&Y, &R}) {
        require_same_device(G, *a);
        require_same_dtype(G, *a);
        require_same_shape(G, *a);
    }
    require_output(R, {&G, &Y}, Alias::forbidden);
    const SoftmaxBackwardParams p{G.view(), Y.view(), R.view(), log};
    nb::gil_scoped_release release;
    softmax_backward(p);
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
