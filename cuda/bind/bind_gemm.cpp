// Bindings for the CUDA GEMMs: every argument validated here (errors name
// it), then one GemmParams / Int8GemmParams filled and launched on the
// caller's stream. Outputs are allocated by the caller.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string_view.h>

#include <optional>
#include <string_view>

#include "cuda_checks.h"
#include "fastnn_cuda/gemm.h"

namespace fastnn::bind {
namespace {

using cuda::GemmActivation;

constexpr int64_t kMaxDim = INT32_MAX;

GemmActivation parse_activation(std::string_view name) {
    struct Entry { std::string_view name; GemmActivation act; };
    static constexpr Entry table[] = {
        {"none", GemmActivation::none}, {"relu", GemmActivation::relu}, {"gelu", GemmActivation::gelu_erf},
        {"gelu_tanh", GemmActivation::gelu_tanh}, {"silu", GemmActivation::silu},
    };
    for (const Entry& e : table)
        if (e.name == name) return e.act;
    throw_value_error(cat("activation must be one of 'none', 'relu', 'gelu', 'gelu_tanh', 'silu', got '", name, "'"));
}

void require_rank(const ArrayArg& x, int lo, int hi) {
    if (x.ndim() < lo || x.ndim() > hi)
        throw_value_error(cat(x.name(), " must have ", lo, lo == hi ? "" : cat(" or ", hi), " dimensions, got shape ",
                              x.shape_str()));
}

void require_size(const ArrayArg& x, int dim, int64_t expected, const char* what) {
    if (x.size(dim) != expected)
        throw_value_error(cat(x.name(), " has shape ", x.shape_str(), "; dimension ", dim, " must be ", expected,
                              " (", what, ")"));
}

void require_small_dims(const ArrayArg& x) {
    for (int d = 0; d < x.ndim(); ++d)
        if (x.size(d) > kMaxDim)
            throw_value_error(cat(x.name(), " has shape ", x.shape_str(), "; each dimension must be below 2^31"));
}

// The tensor cores read 16-byte rows: one of the two matrix dimensions must
// have unit stride (a transpose is fine, a gapped view is not).
void require_unit_stride(const ArrayArg& x) {
    const TensorView& v = x.view();
    const int r = v.ndim - 2, c = v.ndim - 1;
    const bool ok = v.strides[c] == 1 || v.shape[c] == 1 || v.strides[r] == 1 || v.shape[r] == 1;
    if (!ok)
        throw_value_error(cat(x.name(), " must have unit stride along one of its last two dimensions, got strides (",
                              v.strides[r], ", ", v.strides[c], ")"));
}

std::optional<ArrayArg> optional_array(nb::handle h, const char* name) {
    if (h.is_none()) return std::nullopt;
    return std::optional<ArrayArg>(std::in_place, h, name, false);
}

void check_vector(const ArrayArg& v, const ArrayArg& ref, int64_t length, std::initializer_list<DType> dtypes,
                  const char* what) {
    require_cuda(v);
    require_same_device(ref, v);
    require_dtype(v, dtypes);
    require_rank(v, 1, 1);
    require_size(v, 0, length, what);
}

// _C.gemm's arguments plus the stream (so fastnn.matmul reaches it through the
// shared launcher), then the CUDA-only tf32 opt-in.
void gemm(nb::handle a, nb::handle b, nb::handle out, nb::handle bias, float alpha, float beta,
          std::optional<std::string_view> activation, uintptr_t stream, bool allow_tf32) {
    const ArrayArg A(a, "a", false), B(b, "b", false), C(out, "out", true);
    const std::optional<ArrayArg> bias_arg = optional_array(bias, "bias");
    for (const ArrayArg* x : {&A, &B, &C}) {
        require_cuda(*x);
        require_rank(*x, 2, 3);
        require_small_dims(*x);
    }
    require_same_device(A, B);
    require_same_device(A, C);
    require_dtype(A, {DType::bf16, DType::f16, DType::f32});
    require_same_dtype(A, B);
    require_dtype(C, {DType::f32, DType::bf16, DType::f16});

    const int64_t m = A.size(A.ndim() - 2), k = A.size(A.ndim() - 1), n = B.size(B.ndim() - 1);
    require_size(B, B.ndim() - 2, k, "K, the last dimension of a");
    const int64_t batch_a = A.ndim() == 3 ? A.size(0) : 1, batch_b = B.ndim() == 3 ? B.size(0) : 1;
    const int64_t batch = batch_a > batch_b ? batch_a : batch_b;
    if (batch_a != batch_b && batch_a != 1 && batch_b != 1)
        throw_value_error(cat("b has batch ", batch_b, " but a has batch ", batch_a, "; they must match or be 1"));
    const int rank = A.ndim() > B.ndim() ? A.ndim() : B.ndim();
    if (C.ndim() != rank)
        throw_value_error(cat("out must have ", rank, " dimensions (like a and b), got shape ", C.shape_str()));
    if (rank == 3) require_size(C, 0, batch, "the batch");
    require_size(C, rank - 2, m, "M, rows of a");
    require_size(C, rank - 1, n, "N, columns of b");
    require_output(C, {&A, &B}, Alias::forbidden);

    cuda::GemmParams p;
    p.a = A.view();
    p.b = B.view();
    p.c = C.view();
    if (bias_arg) {
        check_vector(*bias_arg, A, n, {DType::f32, C.dtype()}, "N, columns of b");
        require_output(C, {&*bias_arg}, Alias::forbidden);
        p.bias = bias_arg->view();
    }
    p.alpha = alpha;
    p.beta = beta;
    p.activation = parse_activation(activation.value_or("none"));
    p.allow_tf32 = allow_tf32;

    DeviceGuard guard(A.device_id());
    check_cuda(cuda::gemm(p, reinterpret_cast<cudaStream_t>(stream)), "gemm");
}

void int8_gemm(nb::handle a, nb::handle b, nb::handle out, nb::handle row_scale, nb::handle col_scale,
               nb::handle bias, std::string_view activation, uintptr_t stream) {
    const ArrayArg A(a, "a", false), B(b, "b", false), C(out, "out", true);
    const std::optional<ArrayArg> rows = optional_array(row_scale, "row_scale");
    const std::optional<ArrayArg> cols = optional_array(col_scale, "col_scale");
    const std::optional<ArrayArg> bias_arg = optional_array(bias, "bias");
    for (const ArrayArg* x : {&A, &B, &C}) {
        require_cuda(*x);
        require_rank(*x, 2, 2);
        require_small_dims(*x);
    }
    require_same_device(A, B);
    require_same_device(A, C);
    require_dtype(A, {DType::i8});
    require_dtype(B, {DType::i8});
    require_unit_stride(A);
    require_unit_stride(B);
    const int64_t m = A.size(0), k = A.size(1), n = B.size(1);
    require_size(B, 0, k, "K, the last dimension of a");
    if (k > cuda::kInt8GemmMaxK)
        throw_value_error(cat("a has K = ", k, "; int8 products are exact in int32 only for K <= ",
                              cuda::kInt8GemmMaxK));
    require_size(C, 0, m, "M, rows of a");
    require_size(C, 1, n, "N, columns of b");
    require_output(C, {&A, &B}, Alias::forbidden);
    if (rows.has_value() != cols.has_value())
        throw_value_error("row_scale and col_scale must be given together");

    cuda::Int8GemmParams p;
    p.a = A.view();
    p.b = B.view();
    p.out = C.view();
    if (rows) {
        require_dtype(C, {DType::f32, DType::bf16});
        check_vector(*rows, A, m, {DType::f32}, "M, rows of a");
        check_vector(*cols, A, n, {DType::f32}, "N, columns of b");
        require_output(C, {&*rows, &*cols}, Alias::forbidden);
        p.row_scale = rows->view();
        p.col_scale = cols->view();
        if (bias_arg) {
            check_vector(*bias_arg, A, n, {DType::f32}, "N, columns of b");
            require_output(C, {&*bias_arg}, Alias::forbidden);
            p.bias = bias_arg->view();
        }
        p.activation = parse_activation(activation);
    } else {
        require_dtype(C, {DType::i32});
        if (bias_arg) throw_value_error("bias needs row_scale and col_scale (the int32 product has no epilogue)");
        if (parse_activation(activation) != GemmActivation::none)
            throw_value_error("activation needs row_scale and col_scale (the int32 product has no epilogue)");
    }

    DeviceGuard guard(A.device_id());
    check_cuda(cuda::int8_gemm(p, reinterpret_cast<cudaStream_t>(stream)), "int8_gemm");
}

}  // namespace

void bind_gemm(nb::module_& m) {
    m.def("gemm", &gemm, nb::arg("a"), nb::arg("b"), nb::arg("out"), nb::arg("bias").none() = nb::none(),
          nb::arg("alpha") = 1.0f, nb::arg("beta") = 0.0f, nb::arg("activation").none() = nb::none(),
          nb::arg("stream") = 0, nb::arg("allow_tf32") = false,
          "out = act(alpha * a @ b + beta * out + bias) on the caller's stream; a (M, K) or (batch, M, K), "
          "b (K, N) or (batch, K, N), any strides (transposes are views)");
    m.def("int8_gemm", &int8_gemm, nb::arg("a"), nb::arg("b"), nb::arg("out"),
          nb::arg("row_scale").none() = nb::none(), nb::arg("col_scale").none() = nb::none(),
          nb::arg("bias").none() = nb::none(), nb::arg("activation") = "none", nb::arg("stream") = 0,
          "int8 a (M, K) @ int8 b (K, N): the exact int32 product, or with row_scale and col_scale "
          "act(float(product) * row_scale[m] * col_scale[n] + bias[n]) in float32 or bfloat16");
}

}  // namespace fastnn::bind
