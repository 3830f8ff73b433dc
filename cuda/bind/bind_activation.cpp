// fastnn._cuda activations: every entry of the CPU module's table
// (csrc/bind/activation_args.h) with the same checks plus a trailing stream,
// and the CUDA-only fused bias_activation_forward / _backward.
#include <nanobind/stl/string_view.h>

#include <optional>
#include <string_view>

#include "../../csrc/bind/activation_args.h"
#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

using namespace activation_args;

Activation parse_activation(std::string_view name) {
    for (const Entry& e : kTable) {
        const std::string_view forward = e.forward;
        if (forward.substr(0, forward.size() - std::string_view("_forward").size()) == name) return e.kind;
    }
    throw_value_error(cat("activation must be one of 'relu', 'gelu', 'gelu_tanh', 'silu', 'sigmoid', 'tanh', got '",
                          name, "'"));
}

// x (..., N) float32 or bfloat16; bias (N,) float32 or x's dtype.
void check_bias(const ArrayArg& x, const ArrayArg& bias) {
    require_cuda(x);
    require_dtype(x, {DType::f32, DType::bf16});
    if (x.ndim() < 1) throw_value_error(cat(x.name(), " must have at least 1 dimension (..., N), got 0"));
    require_same_device(x, bias);
    if (bias.dtype() != DType::f32) require_same_dtype(x, bias);
    const int64_t n = x.size(x.ndim() - 1);
    if (bias.ndim() != 1 || bias.size(0) != n)
        throw_value_error(cat("bias must have shape (", n, ",) (the last dim of ", x.name(), "), got ",
                              bias.shape_str()));
}

void require_like(const ArrayArg& ref, const ArrayArg& a) {
    require_same_device(ref, a);
    require_same_dtype(ref, a);
    require_same_shape(ref, a);
}

void bias_activation_forward(nb::handle x, nb::handle bias, std::string_view activation, nb::handle out,
                             uintptr_t stream) {
    const Activation kind = parse_activation(activation);
    const ArrayArg X(x, "x", false), B(bias, "bias", false), Y(out, "out", true);
    check_bias(X, B);
    require_like(X, Y);
    require_output(Y, {&X}, Alias::exact_allowed);
    require_output(Y, {&B}, Alias::forbidden);
    DeviceGuard guard(X.device_id());
    check_cuda(cuda::bias_activation_forward({kind, X.view(), B.view(), Y.view()}, as_stream(stream)),
               "bias_activation_forward");
}

void bias_activation_backward(nb::handle grad_out, nb::handle x, nb::handle bias, std::string_view activation,
                              nb::handle out, nb::handle grad_bias, uintptr_t stream) {
    const Activation kind = parse_activation(activation);
    const ArrayArg G(grad_out, "grad_out", false), X(x, "x", false), B(bias, "bias", false), R(out, "out", true);
    check_bias(X, B);
    require_like(X, G);
    require_like(X, R);
    require_output(R, {&G}, Alias::exact_allowed);
    require_output(R, {&X, &B}, Alias::forbidden);
    cuda::BiasActivationBackwardParams p{kind, G.view(), X.view(), B.view(), R.view(), {}};
    std::optional<ArrayArg> DB;
    if (!grad_bias.is_none()) {
        DB.emplace(grad_bias, "grad_bias", true);
        require_like(B, *DB);
        require_output(*DB, {&G, &X, &B, &R}, Alias::forbidden);
        p.grad_bias = DB->view();
    }
    DeviceGuard guard(X.device_id());
    check_cuda(cuda::bias_activation_backward(p, as_stream(stream)), "bias_activation_backward");
}

}  // namespace

void bind_activation(nb::module_& m) {
    for (const Entry& e : kTable) {
        const Activation kind = e.kind;
        const char* saved = e.saved;
        m.def(
            e.forward,
            [kind](nb::handle x, nb::handle out, uintptr_t stream) {
                forward_call(require_cuda, [stream](const ActivationParams& p, const ArrayArg& first) {
                    DeviceGuard guard(first.device_id());
                    check_cuda(cuda::activation_forward(p, as_stream(stream)), "activation_forward");
                }, kind, x, out);
            },
            nb::arg("x"), nb::arg("out"), nb::arg("stream"), e.forward_doc);
        m.def(
            e.backward,
            [kind, saved](nb::handle grad_out, nb::handle s, nb::handle out, uintptr_t stream) {
                backward_call(require_cuda, [stream](const ActivationBackwardParams& p, const ArrayArg& first) {
                    DeviceGuard guard(first.device_id());
                    check_cuda(cuda::activation_backward(p, as_stream(stream)), "activation_backward");
                }, kind, grad_out, s, saved, out);
            },
            nb::arg("grad_out"), nb::arg(saved), nb::arg("out"), nb::arg("stream"), e.backward_doc);
    }
    m.def("bias_activation_forward", &bias_activation_forward, nb::arg("x"), nb::arg("bias"), nb::arg("activation"),
          nb::arg("out"), nb::arg("stream"),
          "out = act(x + bias) over the last dim of x; bias (N,) float32 or x's dtype; out may be x itself.");
    m.def("bias_activation_backward", &bias_activation_backward, nb::arg("grad_out"), nb::arg("x"), nb::arg("bias"),
          nb::arg("activation"), nb::arg("out"), nb::arg("grad_bias").none(), nb::arg("stream"),
          "out = act'(x + bias) * grad_out; grad_bias (bias's shape and dtype, or None) = its column sums, "
          "reduced in a fixed order.");
}

}  // namespace fastnn::bind
