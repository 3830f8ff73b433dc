#include <optional>
#include <vector>

#include "bindings.h"
#include "checks.h"
#include "fastnn/norm.h"

namespace fastnn::bind {
namespace {

using OptionalArg = std::optional<ArrayArg>;

OptionalArg optional_arg(nb::handle obj, const char* name, bool written) {
    if (obj.is_none()) return std::nullopt;
    return OptionalArg(std::in_place, obj, name, written);
}

std::string leading_shape_str(const ArrayArg& x) {
    std::string s = "(";
    for (int d = 0; d + 1 < x.ndim(); ++d) s += cat(d ? ", " : "", x.size(d));
    return s + (x.ndim() == 2 ? ",)" : ")");
}

void check_x(const ArrayArg& x) {
    require_cpu(x);
    require_dtype(x, {DType::f32, DType::bf16});
    if (x.ndim() < 1) throw_value_error(cat(x.name(), " must have at least 1 dimension (..., N), got 0"));
}

// weight/bias: (N,), float32 or x's dtype; a second parameter (bias after
// weight) must match the first's dtype.
void check_param(const ArrayArg& x, const ArrayArg& param, const ArrayArg* first) {
    require_same_device(x, param);
    if (first) require_same_dtype(*first, param);
    else if (param.dtype() != DType::f32) require_same_dtype(x, param);
    const int64_t n = x.size(x.ndim() - 1);
    if (param.ndim() != 1 || param.size(0) != n)
        throw_value_error(cat(param.name(), " must have shape (", n, ",) (the last dim of ", x.name(), "), got ",
                              param.shape_str()));
}

// Statistics: float32 with x's leading shape.
void check_stats(const ArrayArg& x, const ArrayArg& s) {
    require_same_device(x, s);
    require_dtype(s, {DType::f32});
    bool same = s.ndim() == x.ndim() - 1;
    for (int d = 0; same && d < s.ndim(); ++d) same = s.size(d) == x.size(d);
    if (!same)
        throw_value_error(cat(s.name(), " must have the leading shape of ", x.name(), " ", leading_shape_str(x),
                              ", got ", s.shape_str()));
}

void check_output(const ArrayArg& out, const std::vector<const ArrayArg*>& inputs, const ArrayArg* in_place_ok) {
    require_output(out, {}, Alias::forbidden);
    for (const ArrayArg* in : inputs)
        if (in) require_output(out, {in}, in == in_place_ok ? Alias::exact_allowed : Alias::forbidden);
}

const ArrayArg* ptr(const OptionalArg& a) { return a ? &*a : nullptr; }

void norm_forward_py(NormKind kind, nb::handle x_obj, nb::handle weight_obj, nb::handle bias_obj, double eps,
                     nb::handle out_obj, nb::handle mean_obj, nb::handle rstd_obj) {
    const ArrayArg x(x_obj, "x", false), y(out_obj, "out", true), rstd(rstd_obj, "rstd", true);
    const OptionalArg weight = optional_arg(weight_obj, "weight", false), bias = optional_arg(bias_obj, "bias", false);
    const OptionalArg mean = optional_arg(mean_obj, "mean", true);
    check_x(x);
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
    nb::gil_scoped_release release;
    norm_forward(p);
}

void norm_backward_py(NormKind kind, nb::handle grad_out_obj, nb::handle x_obj, nb::handle mean_obj,
                      nb::handle rstd_obj, nb::handle weight_obj, nb::handle grad_x_obj, nb::handle grad_weight_obj,
                      nb::handle grad_bias_obj) {
    const ArrayArg dy(grad_out_obj, "grad_out", false), x(x_obj, "x", false), rstd(rstd_obj, "rstd", false);
    const ArrayArg dx(grad_x_obj, "out", true);
    const OptionalArg mean = optional_arg(mean_obj, "mean", false), weight = optional_arg(weight_obj, "weight", false);
    const OptionalArg dw = optional_arg(grad_weight_obj, "grad_weight", true);
    const OptionalArg db = optional_arg(grad_bias_obj, "grad_bias", true);
    check_x(x);
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
    nb::gil_scoped_release release;
    norm_backward(p);
}

}  // namespace

void bind_norm(nb::module_& m) {
    const auto none = nb::none();
    m.def(
        "layer_norm_forward",
        [](nb::handle x, nb::handle weight, nb::handle bias, double eps, nb::handle out, nb::handle mean,
           nb::handle rstd) { norm_forward_py(NormKind::layer, x, weight, bias, eps, out, mean, rstd); },
        nb::arg("x"), nb::arg("weight").none(), nb::arg("bias").none(), nb::arg("eps"), nb::arg("out"),
        nb::arg("mean"), nb::arg("rstd"),
        "LayerNorm over the last dim of x into out; writes the rows' mean and rstd (float32, x's leading "
        "shape). weight/bias may be None. out may be x itself.");
    m.def(
        "rms_norm_forward",
        [](nb::handle x, nb::handle weight, double eps, nb::handle out, nb::handle rstd) {
            norm_forward_py(NormKind::rms, x, weight, nb::none(), eps, out, nb::none(), rstd);
        },
        nb::arg("x"), nb::arg("weight").none(), nb::arg("eps"), nb::arg("out"), nb::arg("rstd"),
        "RMSNorm over the last dim of x into out; writes the rows' rstd. weight may be None. out may be x.");
    m.def(
        "layer_norm_backward",
        [](nb::handle grad_out, nb::handle x, nb::handle mean, nb::handle rstd, nb::handle weight,
           nb::handle out, nb::handle grad_weight, nb::handle grad_bias) {
            norm_backward_py(NormKind::layer, grad_out, x, mean, rstd, weight, out, grad_weight, grad_bias);
        },
        nb::arg("grad_out"), nb::arg("x"), nb::arg("mean").none(), nb::arg("rstd"), nb::arg("weight").none(),
        nb::arg("out"), nb::arg("grad_weight").none() = none, nb::arg("grad_bias").none() = none,
        "LayerNorm backward: grad_x into out, and grad_weight/grad_bias when given.");
    m.def(
        "rms_norm_backward",
        [](nb::handle grad_out, nb::handle x, nb::handle rstd, nb::handle weight, nb::handle out,
           nb::handle grad_weight) {
            norm_backward_py(NormKind::rms, grad_out, x, nb::none(), rstd, weight, out, grad_weight, nb::none());
        },
        nb::arg("grad_out"), nb::arg("x"), nb::arg("rstd"), nb::arg("weight").none(), nb::arg("out"),
        nb::arg("grad_weight").none() = none, "RMSNorm backward: grad_x into out, and grad_weight when given.");
}

}  // namespace fastnn::bind
