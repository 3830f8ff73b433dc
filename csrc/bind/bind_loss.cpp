#include "bindings.h"
#include "checks.h"
#include "fastnn/loss.h"

namespace fastnn::bind {
namespace {

Reduction parse_reduction(const std::string& s) {
    if (s == "mean") return Reduction::mean;
    if (s == "sum") return Reduction::sum;
    if (s == "none") return Reduction::none;
    throw_value_error(cat("reduction must be 'mean', 'sum' or 'none', got '", s, "'"));
}

void require_loss_shape(const ArrayArg& loss, Reduction r, const ArrayArg& per_element) {
    if (r == Reduction::none) return require_same_shape(per_element, loss);
    if (loss.ndim() != 0)
        throw_value_error(cat(loss.name(), " must be a 0-dimensional array for a reduced loss, got shape ",
                              loss.shape_str()));
}

// logits (N, C) float32/bfloat16; target (N,) int64 in [0, C) or == ignore_index.
void check_cross_entropy(const ArrayArg& logits, const ArrayArg& target, int64_t ignore_index,
                         double label_smoothing) {
    require_cpu(logits);
    require_dtype(logits, {DType::f32, DType::bf16});
    if (logits.ndim() != 2) throw_value_error(cat("logits must be (N, C), got shape ", logits.shape_str()));
    require_same_device(logits, target);
    require_dtype(target, {DType::i64});
    if (target.ndim() != 1 || target.size(0) != logits.size(0))
        throw_value_error(cat("target must be (N,) = (", logits.size(0), ",) to match logits ", logits.shape_str(),
                              ", got ", target.shape_str()));
    if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
        throw_value_error(cat("label_smoothing must be in [0, 1], got ", label_smoothing));
    const auto* t = static_cast<const int64_t*>(target.view().data);
    const int64_t classes = logits.size(1), stride = target.view().strides[0];
    for (int64_t i = 0; i < target.size(0); ++i) {
        const int64_t v = t[i * stride];
        if (v != ignore_index && (v < 0 || v >= classes))
            throw_value_error(cat("target[", i, "] = ", v, " is out of range: classes are [0, ", classes,
                                  ") and ignore_index is ", ignore_index));
    }
}

// stats: (N, 2) float64, the row maximum and log-sum-exp around it.
void require_stats(const ArrayArg& stats, const ArrayArg& target) {
    require_same_device(target, stats);
    require_dtype(stats, {DType::f64});
    if (stats.ndim() != 2 || stats.size(0) != target.size(0) || stats.size(1) != 2)
        throw_value_error(cat("stats must be (N, 2) = (", target.size(0), ", 2), got ", stats.shape_str()));
}

void cross_entropy_forward_py(nb::handle logits, nb::handle target, nb::handle loss, nb::handle stats,
                              const std::string& reduction, int64_t ignore_index, double label_smoothing) {
    const Reduction r = parse_reduction(reduction);
    const ArrayArg X(logits, "logits", false), T(target, "target", false), L(loss, "out", true),
        S(stats, "stats", true);
    check_cross_entropy(X, T, ignore_index, label_smoothing);
    require_same_device(X, L);
    require_same_dtype(X, L);
    require_loss_shape(L, r, T);
    require_stats(S, T);
    require_output(L, {&X, &T}, Alias::forbidden);
    require_output(S, {&X, &T, &L}, Alias::forbidden);
    const CrossEntropyParams p{X.view(), T.view(), L.view(), S.view(), r, ignore_index,
                               static_cast<float>(label_smoothing)};
    nb::gil_scoped_release release;
    cross_entropy_forward(p);
}

void cross_entropy_backward_py(nb::handle logits, nb::handle target, nb::handle stats, nb::handle grad_loss,
                               nb::handle out, const std::string& reduction, int64_t ignore_index,
                               double label_smoothing) {
    const Reduction r = parse_reduction(reduction);
    const ArrayArg X(logits, "logits", false), T(target, "target", false), S(stats, "stats", false),
        G(grad_loss, "grad_loss", false), R(out, "out", true);
    check_cross_entropy(X, T, ignore_index, label_smoothing);
    require_stats(S, T);
    require_same_device(X, G);
    require_same_dtype(X, G);
    require_loss_shape(G, r, T);
    require_same_device(X, R);
    require_same_dtype(X, R);
    require_same_shape(X, R);
    require_output(R, {&X, &T, &S, &G}, Alias::forbidden);
    const CrossEntropyBackwardParams p{X.view(), T.view(), S.view(), G.view(), R.view(), r, ignore_index,
                                       static_cast<float>(label_smoothing)};
    nb::gil_scoped_release release;
    cross_entropy_backward(p);
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
