#include "bindings.h"
#include "checks.h"
#include "fastnn/activation.h"

namespace fastnn::bind {
namespace {

void check_pair(const ArrayArg& in, const ArrayArg& out, std::initializer_list<const ArrayArg*> inputs) {
    require_cpu(in);
    require_dtype(in, {DType::f32, DType::bf16});
    require_same_device(in, out);
    require_same_dtype(in, out);
    require_same_shape(in, out);
    require_output(out, inputs, Alias::exact_allowed);
}

void activation_forward_py(Activation kind, nb::handle x, nb::handle out) {
    const ArrayArg X(x, "x", false), Y(out, "out", true);
    check_pair(X, Y, {&X});
    const ActivationParams p{kind, X.view(), Y.view()};
    nb::gil_scoped_release release;
    activation_forward(p);
}

void activation_backward_py(Activation kind, nb::handle grad_out, nb::handle saved, const char* saved_name,
                            nb::handle grad_in) {
    const ArrayArg G(grad_out, "grad_out", false), S(saved, saved_name, false), R(grad_in, "out", true);
    check_pair(G, R, {&G, &S});
    require_same_device(G, S);
    require_same_dtype(G, S);
    require_same_shape(G, S);
    const ActivationBackwardParams p{kind, G.view(), S.view(), R.view()};
    nb::gil_scoped_release release;
    activation_backward(p);
}

}  // namespace

void bind_activation(nb::module_& m) {
    m.def(
        "relu_forward", [](nb::handle x, nb::handle out) { activation_forward_py(Activation::relu, x, out); },
        nb::arg("x"), nb::arg("out"), "out = max(x, 0), NaN propagated. out may be x itself (in place).");
    m.def(
        "relu_backward",
        [](nb::handle grad_out, nb::handle y, nb::handle out) {
            activation_backward_py(Activation::relu, grad_out, y, "y", out);
        },
        nb::arg("grad_out"), nb::arg("y"), nb::arg("out"),
        "out = grad_out where y > 0 (or y is NaN) else 0; y is relu's output.");
}

}  // namespace fastnn::bind
