#include <cmath>

#include "bindings.h"
#include "quant_args.h"

namespace fastnn::bind {
namespace {

using quant_args::optional_arg;
using quant_args::parse_axis;
using quant_args::view_or_empty;

void require_matrix(const ArrayArg& a, std::initializer_list<DType> dtypes) {
    quant_args::require_matrix(require_cpu, a, dtypes);
}

void require_vector(const ArrayArg& v, int64_t n, const char* what) {
    quant_args::require_vector(require_cpu, v, n, what);
}

void require_out_matrix(const ArrayArg& out, int64_t rows, int64_t cols, std::initializer_list<DType> dtypes,
                        std::initializer_list<const ArrayArg*> inputs) {
    quant_args::require_out_matrix(require_cpu, out, rows, cols, dtypes, inputs);
}

void require_k(int64_t k) {
    if (k > kInt8GemmMaxK)
        throw_value_error(cat("K = ", k, " exceeds ", kInt8GemmMaxK,
                              ", the largest K whose int8 dot products are guaranteed to fit int32"));
}

// Scales are read element by element here (they are short): each must be a
// positive finite float, or 1 / scale is not a quantization step.
void require_positive_scales(const TensorView& scale, QuantAxis axis, const TensorView& matrix) {
    const int64_t n = axis == QuantAxis::tensor ? 1 : matrix.shape[axis == QuantAxis::rows ? 0 : 1];
    const auto* p = static_cast<const float*>(scale.data);
    const int64_t stride = scale.ndim ? scale.strides[0] : 0;
    for (int64_t i = 0; i < n; ++i)
        if (!(p[i * stride] > 0.0f) || !std::isfinite(p[i * stride]))
            throw_value_error(cat("scale must be positive and finite, got ", p[i * stride], " at index ", i));
}

QuantWeightLayout parse_layout(const std::string& mode) {
    if (mode == "dynamic") return QuantWeightLayout::dynamic;
    if (mode == "weight_only") return QuantWeightLayout::weight_only;
    throw_value_error(cat("mode must be 'dynamic' or 'weight_only', got '", mode, "'"));
}

void quantize_py(nb::handle x, nb::handle scale, int axis, nb::handle out) {
    quant_args::quantize_call(require_cpu, [](const QuantizeParams& p, const ArrayArg&) {
        require_positive_scales(p.scale, p.axis, p.x);
        nb::gil_scoped_release release;
        quantize(p);
    }, x, scale, axis, out);
}

void dequantize_py(nb::handle q, nb::handle scale, int axis, nb::handle out) {
    quant_args::dequantize_call(require_cpu, [](const DequantizeParams& p, const ArrayArg&) {
        require_positive_scales(p.scale, p.axis, p.q);
        nb::gil_scoped_release release;
        dequantize(p);
    }, q, scale, axis, out);
}

void quantize_rows_py(nb::handle x, nb::handle smooth_inv, nb::handle q, nb::handle scale) {
    quant_args::quantize_rows_call(require_cpu, [](const QuantizeRowsParams& p, const ArrayArg&) {
        nb::gil_scoped_release release;
        quantize_rows(p);
    }, x, smooth_inv, q, scale);
}

void int8_mm_py(nb::handle a, nb::handle b, nb::handle row_scale, nb::handle col_scale, nb::handle bias,
                nb::handle out) {
    const ArrayArg A(a, "a", false), B(b, "b", false), O(out, "out", true);
    require_matrix(A, {DType::i8});
    require_matrix(B, {DType::i8});
    if (B.size(0) != A.size(1))
        throw_value_error(cat("b must have shape (K, N) with K = a.shape[1] = ", A.size(1), ", got ", B.shape_str()));
    require_k(A.size(1));
    const std::optional<ArrayArg> RS = optional_arg(row_scale, "row_scale"), CS = optional_arg(col_scale, "col_scale"),
                                  Bias = optional_arg(bias, "bias");
    const int64_t m = A.size(0), n = B.size(1);
    if (RS || CS) {
        if (!RS || !CS) throw_value_error("row_scale and col_scale must be given together");
        require_vector(*RS, m, "one per row of a");
        require_vector(*CS, n, "one per column of b");
        if (Bias) require_vector(*Bias, n, "one per column of b");
        require_out_matrix(O, m, n, {DType::f32, DType::bf16}, {&A, &B, &*RS, &*CS});
        if (Bias) require_output(O, {&*Bias}, Alias::forbidden);
    } else {
        if (Bias) throw_value_error("bias needs row_scale and col_scale (the int32 product has no bias)");
        require_out_matrix(O, m, n, {DType::i32}, {&A, &B});
    }
    const Int8MatmulParams p{A.view(), B.view(), view_or_empty(RS), view_or_empty(CS), view_or_empty(Bias), O.view()};
    nb::gil_scoped_release release;
    int8_matmul(p);
}

void pack_weight_py(nb::handle w, const std::string& mode, nb::handle out) {
    const ArrayArg Wt(w, "w", false), P(out, "out", true);
    require_matrix(Wt, {DType::i8});
    const QuantWeightLayout layout = parse_layout(mode);
    if (layout == QuantWeightLayout::dynamic) require_k(Wt.size(1));
    const int64_t bytes = quant_packed_weight_bytes(layout, Wt.size(0), Wt.size(1));
    require_cpu(P);
    require_dtype(P, {DType::u8});
    if (P.ndim() != 1 || P.size(0) != bytes || (bytes > 1 && P.view().strides[0] != 1))
        throw_value_error(cat("out must be a contiguous uint8 vector of ", bytes, " bytes, got shape ", P.shape_str()));
    require_output(P, {&Wt}, Alias::forbidden);
    const QuantPackWeightParams p{layout, Wt.view(), P.view()};
    nb::gil_scoped_release release;
    quant_pack_weight(p);
}

void quant_linear_py(nb::handle x, nb::handle packed, const std::string& mode, nb::handle w_scale, nb::handle bias,
                     nb::handle smooth_inv, nb::handle out) {
    const ArrayArg X(x, "x", false), P(packed, "packed", false), S(w_scale, "w_scale", false), O(out, "out", true);
    const std::optional<ArrayArg> Bias = optional_arg(bias, "bias"), Sm = optional_arg(smooth_inv, "smooth_inv");
    require_matrix(X, {DType::f32, DType::bf16});
    const QuantWeightLayout layout = parse_layout(mode);
    const int64_t m = X.size(0), k = X.size(1);
    require_cpu(S);
    require_dtype(S, {DType::f32});
    if (S.ndim() != 1) throw_value_error(cat("w_scale must be 1-D (N,), got shape ", S.shape_str()));
    const int64_t n = S.size(0);
    if (Bias) require_vector(*Bias, n, "one per output feature");
    if (layout == QuantWeightLayout::dynamic) require_k(k);
    if (Sm) {
        if (layout != QuantWeightLayout::dynamic)
            throw_value_error("smooth_inv applies to mode 'dynamic' only (weight-only activations are not quantized)");
        require_vector(*Sm, k, "one per input feature");
    }
    const int64_t bytes = quant_packed_weight_bytes(layout, n, k);
    require_cpu(P);
    require_dtype(P, {DType::u8});
    if (P.ndim() != 1 || P.size(0) != bytes || (bytes > 1 && P.view().strides[0] != 1))
        throw_value_error(cat("packed must be a contiguous uint8 vector of ", bytes, " bytes (a weight of shape (", n,
                              ", ", k, ") packed for '", mode, "'), got shape ", P.shape_str()));
    require_out_matrix(O, m, n, {X.dtype()}, {&X, &P, &S});
    if (Bias) require_output(O, {&*Bias}, Alias::forbidden);
    if (Sm) require_output(O, {&*Sm}, Alias::forbidden);
    const QuantLinearParams p{layout, X.view(), P.view(), S.view(), view_or_empty(Bias), view_or_empty(Sm), O.view()};
    nb::gil_scoped_release release;
    quant_linear(p);
}

}  // namespace

void bind_quant(nb::module_& m) {
    m.def("quantize", &quantize_py, nb::arg("x"), nb::arg("scale"), nb::arg("axis"), nb::arg("out"),
          "out = clamp(round_half_even(x * (1 / scale)), -128, 127); axis -1: one scale, 0: per row, 1: per column.");
    m.def("dequantize", &dequantize_py, nb::arg("q"), nb::arg("scale"), nb::arg("axis"), nb::arg("out"),
          "out = float(q) * scale; axis as in quantize.");
    m.def("quantize_rows", &quantize_rows_py, nb::arg("x"), nb::arg("smooth_inv").none(), nb::arg("q"),
          nb::arg("scale"), "Dynamic symmetric per-row int8: scale = max|x * smooth_inv| / 127 per row.");
    m.def("int8_mm", &int8_mm_py, nb::arg("a"), nb::arg("b"), nb::arg("row_scale").none(),
          nb::arg("col_scale").none(), nb::arg("bias").none(), nb::arg("out"),
          "out = a @ b exactly in int32, or with scales: float(a @ b) * row_scale[:, None] * col_scale + bias.");
    m.def("quant_packed_weight_bytes",
          [](const std::string& mode, int64_t n, int64_t k) {
              if (n < 0 || k < 0) throw_value_error(cat("n and k must be >= 0, got ", n, ", ", k));
              return quant_packed_weight_bytes(parse_layout(mode), n, k);
          },
          nb::arg("mode"), nb::arg("n"), nb::arg("k"));
    m.def("quant_pack_weight", &pack_weight_py, nb::arg("w"), nb::arg("mode"), nb::arg("out"),
          "Packs an int8 weight (N, K) for quant_linear in the given mode.");
    m.def("quant_linear", &quant_linear_py, nb::arg("x"), nb::arg("packed"), nb::arg("mode"), nb::arg("w_scale"),
          nb::arg("bias").none(), nb::arg("smooth_inv").none(), nb::arg("out"),
          "out = x @ dequant(W).T + bias with W packed by quant_pack_weight.");
    m.def("int8_gemm_variant", [] { return std::string(int8_gemm_variant()); },
          "The int8 GEMM variant the active path uses.");
    m.def("set_int8_amx", &set_int8_amx_enabled, nb::arg("enabled"),
          "Allow (default) or forbid the AMX int8 GEMM variant; for testing the others.");
    m.def("set_int8_vnni", &set_int8_vnni_enabled, nb::arg("enabled"),
          "Allow (default) or forbid the AMX and VNNI int8 GEMM variants; for testing the other paths.");
    m.def(
        "int8_peak_gops",
        [](double seconds) {
            nb::gil_scoped_release release;
            return measure_int8_peak_gops(seconds);
        },
        nb::arg("seconds") = 0.2,
        "Register-only throughput of the int8 GEMM variant's instruction (tdpbssd or vpdpbusd; GOP/s, 2 ops per "
        "byte product); 0 for variants without one.");
}

}  // namespace fastnn::bind
