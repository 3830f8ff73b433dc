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
    struct Entry {
        const char* forward;
        const char* backward;
        Activation kind;
        const char* saved;  // what the backward reads: the forward's x or y
        const char* forward_doc;
        const char* backward_doc;
    };
    static constexpr Entry table[] = {
        {"relu_forward", "relu_backward", Activation::relu, "y", "out = max(x, 0), NaN propagated.",
         "out = grad_out where y > 0 (or y is NaN) else 0; y is relu's output."},
        {"gelu_forward", "gelu_backward", Activation::gelu, "x", "out = x * Phi(x) (exact, erf-based GELU).",
         "out = grad_out * (Phi(x) + x * phi(x)); x is gelu's input."},
        {"gelu_tanh_forward", "gelu_tanh_backward", Activation::gelu_tanh, "x",
         "out = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).",
         "Gradient of the tanh-approximated GELU; x is its input."},
        {"silu_forward", "silu_backward", Activation::silu, "x", "out = x * sigmoid(x).",
         "out = grad_out * s * (1 + x * (1 - s)), s = sigmoid(x); x is silu's input."},
        {"sigmoid_forward", "sigmoid_backward", Activation::sigmoid, "y", "out = 1 / (1 + exp(-x)).",
         "out = grad_out * (1 - y) * y; y is sigmoid's output."},
        {"tanh_forward", "tanh_backward", Activation::tanh, "y", "out = tanh(x).",
         "out = grad_out * (1 - y * y); y is tanh's output."},
    };
    for (const Entry& e : table) {
        const Activation kind = e.kind;
        const char* saved = e.saved;
        m.def(
            e.forward, [kind](nb::handle x, nb::handle out) { activation_forward_py(kind, x, out); }, nb::arg("x"),
            nb::arg("out"), e.forward_doc);
        m.def(
            e.backward,
            [kind, saved](nb::handle grad_out, nb::handle s, nb::handle out) {
                activation_backward_py(kind, grad_out, s, saved, out);
            },
            nb::arg("grad_out"), nb::arg(saved), nb::arg("out"), e.backward_doc);
    }
}

}  // namespace fastnn::bind
