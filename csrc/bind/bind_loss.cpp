#include "bindings.h"
#include "loss_args.h"

namespace fastnn::bind {
namespace {

using loss_args::parse_reduction;
using loss_args::require_loss_shape;

// Targets in [0, C) or == ignore_index; read here on the host.
void require_targets_in_range(const TensorView& target, int64_t classes, int64_t ignore_index) {
    const auto* t = static_cast<const int64_t*>(target.data);
    for (int64_t i = 0; i < target.shape[0]; ++i) {
        const int64_t v = t[i * target.strides[0]];
        if (v != ignore_index && (v < 0 || v >= classes))
            throw_value_error(cat("target[", i, "] = ", v, " is out of range: classes are [0, ", classes,
                                  ") and ignore_index is ", ignore_index));
    }
}

void cross_entropy_forward_py(nb::handle logits, nb::handle target, nb::handle loss, nb::handle stats,
                              const std::string& reduction, int64_t ignore_index, double label_smoothing) {
    loss_args::cross_entropy_forward_call(require_cpu, [](const CrossEntropyParams& p, const ArrayArg&) {
        require_targets_in_range(p.target, p.logits.shape[1], p.ignore_index);
        nb::gil_scoped_release release;
        cross_entropy_forward(p);
    }, logits, target, loss, stats, reduction, ignore_index, label_smoothing);
}

void cross_entropy_backward_py(nb::handle logits, nb::handle target, nb::handle stats, nb::handle grad_loss,
                               nb::handle out, const std::string& reduction, int64_t ignore_index,
                               double label_smoothing) {
    loss_args::cross_entropy_backward_call(require_cpu, [](const CrossEntropyBackwardParams& p, const ArrayArg&) {
        require_targets_in_range(p.target, p.logits.shape[1], p.ignore_index);
        nb::gil_scoped_release release;
        cross_entropy_backward(p);
    }, logits, target, stats, grad_loss, out, reduction, ignore_index, label_smoothing);
}

void check_mse_inputs(const ArrayArg& x, const ArrayArg& target) {
    require_cpu(x);
    require_dtype(x, {DType::f32, DType::bf16});
    require_same_device(x, target);
    require_same_dtype(x, target);
    require_same_shape(x, target);
}

void mse_forward_py(nb::handle x, nb::handle target, nb::handle loss, const std::string& reduction) {
    const Reduction r = parse_reduction(reduction);
    const ArrayArg X(x, "x", false), T(target, "target", false), L(loss, "out", true);
    check_mse_inputs(X, T);
    require_same_device(X, L);
    require_same_dtype(X, L);
    require_loss_shape(L, r, X);
    require_output(L, {&X, &T}, r == Reduction::none ? Alias::exact_allowed : Alias::forbidden);
    const MseParams p{X.view(), T.view(), L.view(), r};
    nb::gil_scoped_release release;
    mse_forward(p);
}

void mse_backward_py(nb::handle x, nb::handle target, nb::handle grad_loss, nb::handle out,
                     const std::string& reduction) {
    const Reduction r = parse_reduction(reduction);
    const ArrayArg X(x, "x", false), T(target, "target", false), G(grad_loss, "grad_loss", false),
        R(out, "out", true);
    check_mse_inputs(X, T);
    require_same_device(X, G);
    require_same_dtype(X, G);
    require_loss_shape(G, r, X);
    require_same_device(X, R);
    require_same_dtype(X, R);
    require_same_shape(X, R);
    require_output(R, {&X, &T, &G}, Alias::exact_allowed);
    const MseBackwardParams p{X.view(), T.view(), G.view(), R.view(), r};
    nb::gil_scoped_release release;
    mse_backward(p);
}

}  // namespace

void bind_loss(nb::module_& m) {
    m.def("cross_entropy_forward", &cross_entropy_forward_py, nb::arg("logits"), nb::arg("target"), nb::arg("out"),
          nb::arg("stats"), nb::arg("reduction"), nb::arg("ignore_index"), nb::arg("label_smoothing"),
          "Softmax cross-entropy of logits (N, C) against int64 target (N,); writes the loss to out and "
          "each row's (max, log sum exp(x - max)) as float64 to stats (N, 2).");
    m.def("cross_entropy_backward", &cross_entropy_backward_py, nb::arg("logits"), nb::arg("target"),
          nb::arg("stats"), nb::arg("grad_loss"), nb::arg("out"), nb::arg("reduction"), nb::arg("ignore_index"),
          nb::arg("label_smoothing"), "dlogits of cross_entropy from the logits and the forward's stats.");
    m.def("mse_forward", &mse_forward_py, nb::arg("x"), nb::arg("target"), nb::arg("out"), nb::arg("reduction"),
          "(x - target)^2, or its mean or sum.");
    m.def("mse_backward", &mse_backward_py, nb::arg("x"), nb::arg("target"), nb::arg("grad_loss"), nb::arg("out"),
          nb::arg("reduction"), "Gradient of mse with respect to x.");
}

}  // namespace fastnn::bind
