// Argument checks of the loss bindings, shared by the CPU module
// (csrc/bind/bind_loss.cpp) and the CUDA one (cuda/bind/bind_loss.cpp):
// everything but the device check, which each module passes in, and the
// launch. Checks of the targets' values are not here: they read the data,
// which only the CPU module can do without a synchronization.
#pragma once

#include <string>

#include "checks.h"
#include "fastnn/loss.h"

namespace fastnn::bind::loss_args {

inline Reduction parse_reduction(const std::string& s) {
    if (s == "mean") return Reduction::mean;
    if (s == "sum") return Reduction::sum;
    if (s == "none") return Reduction::none;
    throw_value_error(cat("reduction must be 'mean', 'sum' or 'none', got '", s, "'"));
}

inline void require_loss_shape(const ArrayArg& loss, Reduction r, const ArrayArg& per_element) {
    if (r == Reduction::none) return require_same_shape(per_element, loss);
    if (loss.ndim() != 0)
        throw_value_error(cat(loss.name(), " must be a 0-dimensional array for a reduced loss, got shape ",
                              loss.shape_str()));
}

// logits (N, C) float32/bfloat16; target (N,) int64.
inline void check_cross_entropy(RequireDevice require_device, const ArrayArg& logits, const ArrayArg& target,
                                double label_smoothing) {
    require_device(logits);
    require_dtype(logits, {DType::f32, DType::bf16});
    if (logits.ndim() != 2) throw_value_error(cat("logits must be (N, C), got shape ", logits.shape_str()));
    require_same_device(logits, target);
    require_dtype(target, {DType::i64});
    if (target.ndim() != 1 || target.size(0) != logits.size(0))
        throw_value_error(cat("target must be (N,) = (", logits.size(0), ",) to match logits ", logits.shape_str(),
                              ", got ", target.shape_str()));
    if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
        throw_value_error(cat("label_smoothing must be in [0, 1], got ", label_smoothing));
}

// stats: (N, 2) float64, the row maximum and log-sum-exp around it.
inline void require_stats(const ArrayArg& stats, const ArrayArg& target) {
    require_same_device(target, stats);
    require_dtype(stats, {DType::f64});
    if (stats.ndim() != 2 || stats.size(0) != target.size(0) || stats.size(1) != 2)
        throw_value_error(cat("stats must be (N, 2) = (", target.size(0), ", 2), got ", stats.shape_str()));
}

// Validates cross_entropy_forward's arguments and calls launch(params, logits)
// while the arrays are held.
template <class Launch>
void cross_entropy_forward_call(RequireDevice require_device, Launch&& launch, nb::handle logits, nb::handle target,
                                nb::handle loss, nb::handle stats, const std::string& reduction, int64_t ignore_index,
                                double label_smoothing) {
    const Reduction r = parse_reduction(reduction);
    const ArrayArg X(logits, "logits", false), T(target, "target", false), L(loss, "out", true),
        S(stats, "stats", true);
    check_cross_entropy(require_device, X, T, label_smoothing);
    require_same_device(X, L);
    require_same_dtype(X, L);
    require_loss_shape(L, r, T);
    require_stats(S, T);
    require_output(L, {&X, &T}, Alias::forbidden);
    require_output(S, {&X, &T, &L}, Alias::forbidden);
    launch(CrossEntropyParams{X.view(), T.view(), L.view(), S.view(), r, ignore_index,
                              static_cast<float>(label_smoothing)},
           X);
}

template <class Launch>
void cross_entropy_backward_call(RequireDevice require_device, Launch&& launch, nb::handle logits, nb::handle target,
                                 nb::handle stats, nb::handle grad_loss, nb::handle out, const std::string& reduction,
                                 int64_t ignore_index, double label_smoothing) {
    const Reduction r = parse_reduction(reduction);
    const ArrayArg X(logits, "logits", false), T(target, "target", false), S(stats, "stats", false),
        G(grad_loss, "grad_loss", false), R(out, "out", true);
    check_cross_entropy(require_device, X, T, label_smoothing);
    require_stats(S, T);
    require_same_device(X, G);
    require_same_dtype(X, G);
    require_loss_shape(G, r, T);
    require_same_device(X, R);
    require_same_dtype(X, R);
    require_same_shape(X, R);
    require_output(R, {&X, &T, &S, &G}, Alias::forbidden);
    launch(CrossEntropyBackwardParams{X.view(), T.view(), S.view(), G.view(), R.view(), r, ignore_index,
                                      static_cast<float>(label_smoothing)},
           X);
}

}  // namespace fastnn::bind::loss_args
