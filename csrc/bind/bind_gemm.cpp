#include <cstring>
#include <optional>

#include "bindings.h"
#include "checks.h"
#include "fastnn/gemm.h"

namespace fastnn::bind {
namespace {

// A 2-D matrix as a batch of one (batch stride 0).
TensorView as_batched(const TensorView& v) {
    if (v.ndim == 3) return v;
    TensorView b = v;
    b.ndim = 3;
    b.shape[0] = 1, b.strides[0] = 0;
    b.shape[1] = v.shape[0], b.strides[1] = v.strides[0];
    b.shape[2] = v.shape[1], b.strides[2] = v.strides[1];
    return b;
}

void require_matrix(const ArrayArg& x) {
    if (x.ndim() != 2 && x.ndim() != 3)
        throw_value_error(cat(x.name(), " must be 2-D (rows, cols) or 3-D (batch, rows, cols), got shape ",
                              x.shape_str()));
}

void require_bias_dtype(const ArrayArg& bias, const ArrayArg& input) {
    if (input.dtype() == DType::f32) require_dtype(bias, {DType::f32});
    else require_dtype(bias, {DType::f32, input.dtype()});
}

GemmActivation parse_activation(nb::handle activation) {
    if (activation.is_none()) return GemmActivation::none;
    if (!nb::isinstance<nb::str>(activation))
        throw_type_error(cat("activation must be None or a str, got ",
                             nb::cast<std::string>(nb::str(activation.type()))));
    const char* name = nb::cast<const char*>(activation);
    struct Entry { const char* name; GemmActivation act; };
    static constexpr Entry table[] = {
        {"none", GemmActivation::none}, {"relu", GemmActivation::relu}, {"gelu", GemmActivation::gelu_erf},
        {"gelu_tanh", GemmActivation::gelu_tanh}, {"silu", GemmActivation::silu},
    };
    for (const Entry& e : table)
        if (std::strcmp(name, e.name) == 0) return e.act;
    throw_value_error(cat("activation must be one of None, 'relu', 'gelu', 'gelu_tanh', 'silu', got '", name, "'"));
}

void gemm_py(nb::handle a, nb::handle b, nb::handle out, nb::handle bias, float alpha, float beta,
             nb::handle activation) {
    const ArrayArg A(a, "a", false), B(b, "b", false), C(out, "out", true);
    require_cpu(A);
    require_dtype(A, {DType::f32, DType::bf16});
    require_matrix(A);
    require_same_device(A, B);
    require_same_dtype(A, B);
    require_matrix(B);
    require_same_device(A, C);
    require_matrix(C);
    if (A.dtype() == DType::bf16) require_dtype(C, {DType::f32, DType::bf16});
    else require_dtype(C, {DType::f32});

    const TensorView va = as_batched(A.view()), vb = as_batched(B.view());
    const int64_t m = va.shape[1], k = va.shape[2], n = vb.shape[2];
    if (vb.shape[1] != k)
        throw_value_error(cat("b must have ", k, " rows (the columns of a ", A.shape_str(), "), got shape ",
                              B.shape_str()));
    const int64_t batch_a = va.shape[0], batch_b = vb.shape[0];
    if (batch_a != batch_b && batch_a != 1 && batch_b != 1)
        throw_value_error(cat("the batch sizes of a ", A.shape_str(), " and b ", B.shape_str(),
                              " must be equal or 1"));
    const bool batched = A.ndim() == 3 || B.ndim() == 3;
    const int64_t batch = batch_a == 1 ? batch_b : batch_a;
    if (C.ndim() != (batched ? 3 : 2) || (batched && C.size(0) != batch) || C.size(C.ndim() - 2) != m ||
        C.size(C.ndim() - 1) != n)
        throw_value_error(cat("out must have shape ",
                              batched ? cat("(", batch, ", ", m, ", ", n, ")") : cat("(", m, ", ", n, ")"), ", got ",
                              C.shape_str()));

    GemmParams p;
    p.a = va, p.b = vb, p.c = as_batched(C.view());
    p.alpha = alpha, p.beta = beta;
    p.activation = parse_activation(activation);
    if (!bias.is_none()) {
        const ArrayArg Bias(bias, "bias", false);
        require_same_device(A, Bias);
        require_bias_dtype(Bias, A);
        if (Bias.ndim() != 1 || Bias.size(0) != n)
            throw_value_error(cat("bias must have shape (", n, ",), got ", Bias.shape_str()));
        require_output(C, {&A, &B, &Bias}, Alias::forbidden);
        p.bias = Bias.view();
        nb::gil_scoped_release release;
        gemm(p);
        return;
    }
    require_output(C, {&A, &B}, Alias::forbidden);
    nb::gil_scoped_release release;
    gemm(p);
}

// A 2-D view with its two dimensions swapped (no copy).
TensorView transposed(const TensorView& v) {
    TensorView t = v;
    t.shape[0] = v.shape[1], t.strides[0] = v.strides[1];
    t.shape[1] = v.shape[0], t.strides[1] = v.strides[0];
    return t;
}

void require_2d(const ArrayArg& x, const char* dims) {
    if (x.ndim() != 2) throw_value_error(cat(x.name(), " must be 2-D ", dims, ", got shape ", x.shape_str()));
}

void require_like(const ArrayArg& x, const ArrayArg& first) {
    require_same_device(first, x);
    require_same_dtype(first, x);
}

// Linear layers: x (rows, in) @ weight (out, in)^T + bias. Separate from gemm
// so that errors name the layer's arguments, and one call imports each array
// once (the DLPack import is most of the launch cost at small sizes).
void linear_py(nb::handle x, nb::handle weight, nb::handle bias, nb::handle out) {
    const ArrayArg X(x, "x", false), Wt(weight, "weight", false), Y(out, "out", true);
    require_cpu(X);
    require_dtype(X, {DType::f32, DType::bf16});
    require_2d(X, "(rows, in_features)");
    require_like(Wt, X);
    require_2d(Wt, "(out_features, in_features)");
    if (Wt.size(1) != X.size(1))
        throw_value_error(cat("weight must have ", X.size(1), " columns (in_features of x ", X.shape_str(),
                              "), got shape ", Wt.shape_str()));
    require_like(Y, X);
    if (Y.ndim() != 2 || Y.size(0) != X.size(0) || Y.size(1) != Wt.size(0))
        throw_value_error(cat("out must have shape (", X.size(0), ", ", Wt.size(0), "), got ", Y.shape_str()));
    GemmParams p;
    p.a = as_batched(X.view()), p.b = as_batched(transposed(Wt.view())), p.c = as_batched(Y.view());
    if (!bias.is_none()) {
        const ArrayArg Bias(bias, "bias", false);
        require_same_device(X, Bias);
        require_bias_dtype(Bias, X);
        if (Bias.ndim() != 1 || Bias.size(0) != Wt.size(0))
            throw_value_error(cat("bias must have shape (", Wt.size(0), ",), got ", Bias.shape_str()));
        require_output(Y, {&X, &Wt, &Bias}, Alias::forbidden);
        p.bias = Bias.view();
        nb::gil_scoped_release release;
        gemm(p);
        return;
    }
    require_output(Y, {&X, &Wt}, Alias::forbidden);
    nb::gil_scoped_release release;
    gemm(p);
}

// grad_x = grad_out @ weight, grad_weight = grad_out^T @ x, grad_bias =
// column sums of grad_out; each output optional (None: not computed).
void linear_backward_py(nb::handle grad_out, nb::handle x, nb::handle weight, nb::handle grad_x,
                        nb::handle grad_weight, nb::handle grad_bias) {
    const ArrayArg G(grad_out, "grad_out", false), X(x, "x", false), Wt(weight, "weight", false);
    require_cpu(G);
    require_dtype(G, {DType::f32, DType::bf16});
    require_2d(G, "(rows, out_features)");
    require_like(X, G);
    require_2d(X, "(rows, in_features)");
    require_like(Wt, G);
    require_2d(Wt, "(out_features, in_features)");
    const int64_t rows = G.size(0), n_out = G.size(1), n_in = X.size(1);
    if (X.size(0) != rows)
        throw_value_error(cat("x must have ", rows, " rows (as grad_out ", G.shape_str(), "), got shape ",
                              X.shape_str()));
    if (Wt.size(0) != n_out || Wt.size(1) != n_in)
        throw_value_error(cat("weight must have shape (", n_out, ", ", n_in, "), got ", Wt.shape_str()));
    auto output = [&](nb::handle h, const char* name, std::initializer_list<int64_t> shape) -> std::optional<ArrayArg> {
        if (h.is_none()) return std::nullopt;
        std::optional<ArrayArg> o(std::in_place, h, name, true);
        require_like(*o, G);
        bool ok = o->ndim() == static_cast<int>(shape.size());
        int d = 0;
        for (int64_t s : shape) ok = ok && o->size(d++) == s;
        if (!ok) {
            std::string want = "(";
            for (int64_t s : shape) want += cat(want.size() > 1 ? ", " : "", s);
            throw_value_error(cat(name, " must have shape ", want, shape.size() == 1 ? ",)" : ")", ", got ",
                                  o->shape_str()));
        }
        require_output(*o, {&G, &X, &Wt}, Alias::forbidden);
        return o;
    };
    const auto DX = output(grad_x, "grad_x", {rows, n_in});
    const auto DW = output(grad_weight, "grad_weight", {n_out, n_in});
    const auto DB = output(grad_bias, "grad_bias", {n_out});
    const ArrayArg* outs[] = {DX ? &*DX : nullptr, DW ? &*DW : nullptr, DB ? &*DB : nullptr};
    for (int i = 0; i < 3; ++i)
        for (int j = i + 1; j < 3; ++j)
            if (outs[i] && outs[j]) require_output(*outs[j], {outs[i]}, Alias::forbidden);

    GemmParams dx, dw;
    if (DX) dx.a = as_batched(G.view()), dx.b = as_batched(Wt.view()), dx.c = as_batched(DX->view());
    if (DW) dw.a = as_batched(transposed(G.view())), dw.b = as_batched(X.view()), dw.c = as_batched(DW->view());
    nb::gil_scoped_release release;
    if (DX) gemm(dx);
    if (DW) gemm(dw);
    if (DB) column_sum(ColumnSumParams{G.view(), DB->view()});
}

}  // namespace

void bind_gemm(nb::module_& m) {
    m.def("gemm", &gemm_py, nb::arg("a"), nb::arg("b"), nb::arg("out"), nb::arg("bias").none(),
          nb::arg("alpha"), nb::arg("beta"), nb::arg("activation").none(),
          "out = activation(alpha * a @ b + beta * out + bias). a (M, K) or (batch, M, K), b (K, N) or "
          "(batch, K, N) (batch sizes equal or 1), float32 or bfloat16, any strides; out float32 (or bfloat16 "
          "for bfloat16 inputs), overlapping no input. beta == 0 never reads out. activation: None, 'relu', "
          "'gelu', 'gelu_tanh', 'silu'.");
    m.def("linear", &linear_py, nb::arg("x"), nb::arg("weight"), nb::arg("bias").none(), nb::arg("out"),
          "out = x @ weight.T + bias; x (rows, in), weight (out, in), bias (out,) or None.");
    m.def("linear_backward", &linear_backward_py, nb::arg("grad_out"), nb::arg("x"), nb::arg("weight"),
          nb::arg("grad_x").none(), nb::arg("grad_weight").none(), nb::arg("grad_bias").none(),
          "grad_x = grad_out @ weight, grad_weight = grad_out.T @ x, grad_bias = grad_out summed over rows "
          "(float32 accumulation); pass None for a gradient that is not needed.");
    m.def("bf16_gemm_variant", [] { return std::string(bf16_gemm_variant()); },
          "The kernel bf16 GEMMs use on the active path: 'amx', 'avx512_bf16', or the path's name.");
    m.def("set_bf16_amx", &set_bf16_amx_enabled, nb::arg("enabled"),
          "Allow (default) or forbid the AMX bf16 GEMM; for testing the vdpbf16ps kernel on an AMX CPU.");
}

}  // namespace fastnn::bind
