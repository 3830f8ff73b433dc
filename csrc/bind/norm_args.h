// Argument checks of the LayerNorm/RMSNorm bindings, shared by the CPU
// module (csrc/bind/bind_norm.cpp) and the CUDA one (cuda/bind/bind_norm.cpp):
// everything but the device check, which each module passes in, and the
// launch.
#pragma once

#include <optional>
#include <vector>

#include "checks.h"
#include "fastnn/norm.h"

namespace fastnn::bind::norm_args {

using OptionalArg = std::optional<ArrayArg>;

inline OptionalArg optional_arg(nb::handle obj, const char* name, bool written) {
    if (obj.is_none()) return std::nullopt;
    return OptionalArg(std::in_place, obj, name, written);
}

inline std::string leading_shape_str(const ArrayArg& x) {
    std::string s = "(";
    for (int d = 0; d + 1 < x.ndim(); ++d) s += cat(d ? ", " : "", x.size(d));
    return s + (x.ndim() == 2 ? ",)" : ")");
}

inline void check_x(const ArrayArg& x, RequireDevice require_device) {
    require_device(x);
    require_dtype(x, {DType::f32, DType::bf16});
    if (x.ndim() < 1) throw_value_error(cat(x.name(), " must have at least 1 dimension (..., N), got 0"));
}

// weight/bias: (N,), float32 or x's dtype; a second parameter (bias after
// weight) must match the first's dtype.
inline void check_param(const ArrayArg& x, const ArrayArg& param, const ArrayArg* first) {
    require_same_device(x, param);
    if (first) require_same_dtype(*first, param);
    else if (param.dtype() != DType::f32) require_same_dtype(x, param);
    const int64_t n = x.size(x.ndim() - 1);
    if (param.ndim() != 1 || param.size(0) != n)
        throw_value_error(cat(param.name(), " must have shape (", n, ",) (the last dim of ", x.name(), "), got ",
                              param.shape_str()));
}

// Statistics: float32 with x's leading shape.
inline void check_stats(const ArrayArg& x, const ArrayArg& s) {
    require_same_device(x, s);
    require_dtype(s, {DType::f32});
    bool same = s.ndim() == x.ndim() - 1;
    for (int d = 0; same && d < s.ndim(); ++d) same = s.size(d) == x.size(d);
    if (!same)
        throw_value_error(cat(s.name(), " must have the leading shape of ", x.name(), " ", leading_shape_str(x),
                              ", got ", s.shape_str()));
}

inline void check_output(const ArrayArg& out, const std::vector<const ArrayArg*>& inputs, const ArrayArg* in_place_ok) {
    require_output(out, {}, Alias::forbidden);
    for (const ArrayArg* in : inputs)
        if (in) require_output(out, {in}, in == in_place_ok ? Alias::exact_allowed : Alias::forbidden);
}

inline const ArrayArg* ptr(const OptionalArg& a) { return a ? &*a : nullptr; }

// Validates the arguments of layer_norm_forward / rms_norm_forward, fills the
// params and calls launch(params, x) while the arrays are held.
template <class Launch>
void norm_forward_call(RequireDevice require_device, Launch&& launch, NormKind kind, nb::handle x_obj,
                       nb::handle weight_obj, nb::handle bias_obj, double eps, nb::handle out_obj, nb::handle mean_obj,
                       nb::handle rstd_obj) {
    const ArrayArg x(x_obj, "x", false), y(out_obj, "out", true), rstd(rstd_obj, "rstd", true);
    const OptionalArg weight = optional_arg(weight_obj, "weight", false), bias = optional_arg(bias_obj, "bias", false);
    const OptionalArg mean = optional_arg(mean_obj, "mean", true);
    check_x(x, require_device);
    if (weight) check_param(x, *weight, nullptr);
    if (bias) check_param(x, *bias, ptr(weight));
    require_same_device(x, y);
    require_same_dtype(x, y);
    require_same_shape(x, y);
    if (!(eps >= 0.0)) throw_value_error(cat("eps must be >= 0, got ", eps));
    check_stats(x, rstd);
    if (kind == NormKind::layer) {
        if (!mean) throw_type_error("mean must be an array, got None");
        check_stats(x, *mean);
    }
    const std::vector<const ArrayArg*> inputs = {&x, ptr(weight), ptr(bias)};
    check_output(y, inputs, &x);
    check_output(rstd, {&x, ptr(weight), ptr(bias), &y}, nullptr);
    if (mean) check_output(*mean, {&x, ptr(weight), ptr(bias), &y, &rstd}, nullptr);

    NormForwardParams p{};
    p.kind = kind;
    p.x = x.view();
    p.y = y.view();
    p.rstd = rstd.view();
    if (mean) p.mean = mean->view();
    if (weight) p.weight = weight->view();
    if (bias) p.bias = bias->view();
    p.has_weight = weight.has_value();
    p.has_bias = bias.has_value();
    p.eps = static_cast<float>(eps);
    launch(p, x);
}

// As norm_forward_call, for layer_norm_backward / rms_norm_backward.
template <class Launch>
void norm_backward_call(RequireDevice require_device, Launch&& launch, NormKind kind, nb::handle grad_out_obj,
                        nb::handle x_obj, nb::handle mean_obj, nb::handle rstd_obj, nb::handle weight_obj,
                        nb::handle grad_x_obj, nb::handle grad_weight_obj, nb::handle grad_bias_obj) {
    const ArrayArg dy(grad_out_obj, "grad_out", false), x(x_obj, "x", false), rstd(rstd_obj, "rstd", false);
    const ArrayArg dx(grad_x_obj, "out", true);
    const OptionalArg mean = optional_arg(mean_obj, "mean", false), weight = optional_arg(weight_obj, "weight", false);
    const OptionalArg dw = optional_arg(grad_weight_obj, "grad_weight", true);
    const OptionalArg db = optional_arg(grad_bias_obj, "grad_bias", true);
    check_x(x, require_device);
    for (const ArrayArg* t : {&dy, &dx}) {
        require_same_device(x, *t);
        require_same_dtype(x, *t);
        require_same_shape(x, *t);
    }
    check_stats(x, rstd);
    if (kind == NormKind::layer) {
        if (!mean) throw_type_error("mean must be an array, got None");
        check_stats(x, *mean);
    }
    if (weight) check_param(x, *weight, nullptr);
    if (dw) {
        if (!weight) throw_value_error("grad_weight needs weight");
        check_param(x, *dw, &*weight);
    }
    if (db) check_param(x, *db, ptr(weight));
    const std::vector<const ArrayArg*> inputs = {&dy, &x, ptr(mean), &rstd, ptr(weight)};
    check_output(dx, inputs, nullptr);
    if (dw) {
        check_output(*dw, inputs, nullptr);
        check_output(*dw, {&dx}, nullptr);
    }
    if (db) {
        check_output(*db, inputs, nullptr);
        check_output(*db, {&dx, ptr(dw)}, nullptr);
    }

    NormBackwardParams p{};
    p.kind = kind;
    p.grad_out = dy.view();
    p.x = x.view();
    p.rstd = rstd.view();
    if (mean) p.mean = mean->view();
    if (weight) p.weight = weight->view();
    p.grad_x = dx.view();
    if (dw) p.grad_weight = dw->view();
    if (db) p.grad_bias = db->view();
    p.has_weight = weight.has_value();
    p.want_grad_weight = dw.has_value();
    p.want_grad_bias = db.has_value();
    launch(p, x);
}

}  // namespace fastnn::bind::norm_args
