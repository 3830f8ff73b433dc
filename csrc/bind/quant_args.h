// Argument checks of the quantize / dequantize / quantize_rows bindings,
// shared by the CPU module (csrc/bind/bind_quant.cpp) and the CUDA one
// (cuda/bind/bind_quant.cpp): everything but the device check, which each
// module passes in, and the launch. The scales' values are not checked here:
// that reads the data, which only the CPU module can do without a
// synchronization.
#pragma once

#include <optional>

#include "checks.h"
#include "fastnn/quant.h"

namespace fastnn::bind::quant_args {

inline std::optional<ArrayArg> optional_arg(nb::handle obj, const char* name) {
    if (obj.is_none()) return std::nullopt;
    return std::optional<ArrayArg>(std::in_place, obj, name, false);
}

inline TensorView view_or_empty(const std::optional<ArrayArg>& a) { return a ? a->view() : TensorView{}; }

inline void require_matrix(RequireDevice require_device, const ArrayArg& a, std::initializer_list<DType> dtypes) {
    require_device(a);
    require_dtype(a, dtypes);
    if (a.ndim() != 2) throw_value_error(cat(a.name(), " must be 2-D, got shape ", a.shape_str()));
}

inline void require_vector(RequireDevice require_device, const ArrayArg& v, int64_t n, const char* what) {
    require_device(v);
    require_dtype(v, {DType::f32});
    if (v.ndim() != 1 || v.size(0) != n)
        throw_value_error(cat(v.name(), " must have shape (", n, ",) (", what, "), got ", v.shape_str()));
}

inline void require_out_matrix(RequireDevice require_device, const ArrayArg& out, int64_t rows, int64_t cols,
                               std::initializer_list<DType> dtypes, std::initializer_list<const ArrayArg*> inputs) {
    require_device(out);
    require_dtype(out, dtypes);
    if (out.ndim() != 2 || out.size(0) != rows || out.size(1) != cols)
        throw_value_error(cat(out.name(), " must have shape (", rows, ", ", cols, "), got ", out.shape_str()));
    require_output(out, inputs, Alias::forbidden);
}

inline QuantAxis parse_axis(int axis) {
    if (axis == -1) return QuantAxis::tensor;
    if (axis == 0) return QuantAxis::rows;
    if (axis == 1) return QuantAxis::cols;
    throw_value_error(cat("axis must be None, 0 or 1, got ", axis));
}

// float32, one element per tensor or one per index of the axis.
inline void require_scale_shape(RequireDevice require_device, const ArrayArg& scale, QuantAxis axis,
                                const ArrayArg& matrix) {
    const int64_t n = axis == QuantAxis::tensor ? 1 : matrix.size(axis == QuantAxis::rows ? 0 : 1);
    require_device(scale);
    require_same_device(matrix, scale);
    require_dtype(scale, {DType::f32});
    const bool ok = axis == QuantAxis::tensor ? scale.numel() == 1 : (scale.ndim() == 1 && scale.size(0) == n);
    if (!ok)
        throw_value_error(cat("scale must have ", n, " element", n == 1 ? "" : "s",
                              axis == QuantAxis::tensor ? " (per tensor)" : " (one per index of axis)", ", got shape ",
                              scale.shape_str()));
}

// Validates quantize's arguments and calls launch(params, x) while the arrays are held.
template <class Launch>
void quantize_call(RequireDevice require_device, Launch&& launch, nb::handle x, nb::handle scale, int axis,
                   nb::handle out) {
    const ArrayArg X(x, "x", false), S(scale, "scale", false), Q(out, "out", true);
    require_matrix(require_device, X, {DType::f32, DType::bf16});
    const QuantAxis ax = parse_axis(axis);
    require_scale_shape(require_device, S, ax, X);
    require_out_matrix(require_device, Q, X.size(0), X.size(1), {DType::i8}, {&X, &S});
    require_same_device(X, Q);
    launch(QuantizeParams{X.view(), S.view(), ax, Q.view()}, X);
}

template <class Launch>
void dequantize_call(RequireDevice require_device, Launch&& launch, nb::handle q, nb::handle scale, int axis,
                     nb::handle out) {
    const ArrayArg Q(q, "q", false), S(scale, "scale", false), X(out, "out", true);
    require_matrix(require_device, Q, {DType::i8});
    const QuantAxis ax = parse_axis(axis);
    require_scale_shape(require_device, S, ax, Q);
    require_out_matrix(require_device, X, Q.size(0), Q.size(1), {DType::f32, DType::bf16}, {&Q, &S});
    require_same_device(Q, X);
    launch(DequantizeParams{Q.view(), S.view(), ax, X.view()}, Q);
}

template <class Launch>
void quantize_rows_call(RequireDevice require_device, Launch&& launch, nb::handle x, nb::handle smooth_inv,
                        nb::handle q, nb::handle scale) {
    const ArrayArg X(x, "x", false), Q(q, "q", true), S(scale, "scale", true);
    const std::optional<ArrayArg> Sm = optional_arg(smooth_inv, "smooth_inv");
    require_matrix(require_device, X, {DType::f32, DType::bf16});
    if (Sm) {
        require_vector(require_device, *Sm, X.size(1), "one per column of x");
        require_same_device(X, *Sm);
    }
    require_out_matrix(require_device, Q, X.size(0), X.size(1), {DType::i8}, {&X});
    require_vector(require_device, S, X.size(0), "one per row of x");
    require_same_device(X, Q);
    require_same_device(X, S);
    require_output(S, {&X, &Q}, Alias::forbidden);
    if (Sm) {
        require_output(Q, {&*Sm}, Alias::forbidden);
        require_output(S, {&*Sm}, Alias::forbidden);
    }
    launch(QuantizeRowsParams{X.view(), view_or_empty(Sm), Q.view(), S.view()}, X);
}

}  // namespace fastnn::bind::quant_args
