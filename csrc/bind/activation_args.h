// Argument checks and the op table of the activation bindings, shared by the
// CPU module (csrc/bind/bind_activation.cpp) and the CUDA one
// (cuda/bind/bind_activation.cpp): everything but the device check, which
// each module passes in, and the launch.
#pragma once

#include "checks.h"
#include "fastnn/activation.h"

namespace fastnn::bind::activation_args {

struct Entry {
    const char* forward;
    const char* backward;
    Activation kind;
    const char* saved;  // what the backward reads: the forward's x or y
    const char* forward_doc;
    const char* backward_doc;
};

inline constexpr Entry kTable[] = {
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

inline void check_pair(RequireDevice require_device, const ArrayArg& in, const ArrayArg& out,
                       std::initializer_list<const ArrayArg*> inputs) {
    require_device(in);
    require_dtype(in, {DType::f32, DType::bf16});
    require_same_device(in, out);
    require_same_dtype(in, out);
    require_same_shape(in, out);
    require_output(out, inputs, Alias::exact_allowed);
}

// Validates <kind>_forward's arguments and calls launch(params, x) while the
// arrays are held.
template <class Launch>
void forward_call(RequireDevice require_device, Launch&& launch, Activation kind, nb::handle x, nb::handle out) {
    const ArrayArg X(x, "x", false), Y(out, "out", true);
    check_pair(require_device, X, Y, {&X});
    launch(ActivationParams{kind, X.view(), Y.view()}, X);
}

template <class Launch>
void backward_call(RequireDevice require_device, Launch&& launch, Activation kind, nb::handle grad_out,
                   nb::handle saved, const char* saved_name, nb::handle grad_in) {
    const ArrayArg G(grad_out, "grad_out", false), S(saved, saved_name, false), R(grad_in, "out", true);
    check_pair(require_device, G, R, {&G, &S});
    require_same_device(G, S);
    require_same_dtype(G, S);
    require_same_shape(G, S);
    launch(ActivationBackwardParams{kind, G.view(), S.view(), R.view()}, G);
}

}  // namespace fastnn::bind::activation_args
