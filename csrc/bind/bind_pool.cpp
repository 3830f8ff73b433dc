#include <nanobind/stl/tuple.h>

#include <string>
#include <tuple>

#include "bindings.h"
#include "checks.h"
#include "fastnn/pool.h"

namespace fastnn::bind {
namespace {

using Pair = std::tuple<int64_t, int64_t>;

PoolKind parse_kind(const std::string& kind) {
    if (kind == "max") return PoolKind::max;
    if (kind == "avg") return PoolKind::avg;
    if (kind == "adaptive_avg") return PoolKind::adaptive_avg;
    throw_value_error(cat("kind must be 'max', 'avg' or 'adaptive_avg', got '", kind, "'"));
}

// PyTorch's pooling_output_shape.
int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
    const int64_t span = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t out = (span >= 0 ? span / s : -((-span + s - 1) / s)) + 1;
    if (ceil_mode && (out - 1) * s >= in + p) --out;
    return out;
}

PoolWindow make_window(PoolKind kind, Pair kernel, Pair stride, Pair padding, Pair dilation, bool count_include_pad,
                       int64_t divisor_override) {
    PoolWindow w{kind, {std::get<0>(kernel), std::get<1>(kernel)}, {std::get<0>(stride), std::get<1>(stride)},
                 {std::get<0>(padding), std::get<1>(padding)}, {std::get<0>(dilation), std::get<1>(dilation)},
                 count_include_pad, divisor_override};
    if (kind == PoolKind::adaptive_avg) return w;
    for (int a = 0; a < 2; ++a) {
        if (w.kernel[a] <= 0) throw_value_error(cat("kernel_size must be positive, got ", w.kernel[a]));
        if (w.stride[a] <= 0) throw_value_error(cat("stride must be positive, got ", w.stride[a]));
        if (w.dilation[a] <= 0) throw_value_error(cat("dilation must be positive, got ", w.dilation[a]));
        if (w.pad[a] < 0) throw_value_error(cat("padding must be non-negative, got ", w.pad[a]));
        const int64_t effective = (w.kernel[a] - 1) * w.dilation[a] + 1;
        if (w.pad[a] > (kind == PoolKind::max ? effective : w.kernel[a]) / 2)
            throw_value_error(cat("padding must be at most half of the kernel size, got padding ", w.pad[a],
                                  " for kernel_size ", w.kernel[a]));
    }
    if (divisor_override < 0) throw_value_error(cat("divisor_override must be positive, got ", divisor_override));
    return w;
}

void check_pair(const ArrayArg& in, const ArrayArg& out, const PoolWindow& w, bool ceil_mode) {
    require_cpu(in);
    require_dtype(in, {DType::f32, DType::bf16});
    if (in.ndim() != 4) throw_value_error(cat(in.name(), " must be (N, C, H, W), got ", in.shape_str()));
    require_same_device(in, out);
    require_same_dtype(in, out);
    if (out.ndim() != 4 || out.size(0) != in.size(0) || out.size(1) != in.size(1))
        throw_value_error(cat(out.name(), " must be (N, C, OH, OW) with N, C of ", in.name(), " ", in.shape_str(),
                              ", got ", out.shape_str()));
    if (w.kind == PoolKind::adaptive_avg) {
        if (out.size(2) <= 0 || out.size(3) <= 0)
            throw_value_error(cat("output_size must be positive, got ", out.size(2), "x", out.size(3)));
        return;
    }
    for (int a = 0; a < 2; ++a) {
        const int64_t want = pooled_size(in.size(2 + a), w.kernel[a], w.stride[a], w.pad[a], w.dilation[a], ceil_mode);
        if (want <= 0)
            throw_value_error(cat(in.name(), " of size ", in.shape_str(), " is too small for the window (output size ",
                                  want, ")"));
        if (out.size(2 + a) != want)
            throw_value_error(cat(out.name(), " must have spatial size ", want, " in dimension ", 2 + a, ", got ",
                                  out.shape_str()));
    }
}

void check_indices(const ArrayArg& idx, const ArrayArg& like) {
    require_same_device(like, idx);
    require_dtype(idx, {DType::i64});
    require_same_shape(like, idx);
}

void pool_forward_py(const std::string& kind, nb::handle x, nb::handle out, nb::handle indices, Pair kernel,
                     Pair stride, Pair padding, Pair dilation, bool ceil_mode, bool count_include_pad,
                     int64_t divisor_override) {
    const PoolWindow w =
        make_window(parse_kind(kind), kernel, stride, padding, dilation, count_include_pad, divisor_override);
    const ArrayArg X(x, "x", false), Y(out, "out", true);
    check_pair(X, Y, w, ceil_mode);
    require_output(Y, {&X}, Alias::forbidden);
    TensorView index_view{};
    if (w.kind == PoolKind::max && !indices.is_none()) {
        const ArrayArg I(indices, "indices", true);
        check_indices(I, Y);
        require_output(I, {&X, &Y}, Alias::forbidden);
        index_view = I.view();
    }
    const PoolParams p{w, X.view(), Y.view(), index_view};
    nb::gil_scoped_release release;
    pool_forward(p);
}

void pool_backward_py(const std::string& kind, nb::handle grad_out, nb::handle indices, nb::handle grad_in,
                      Pair kernel, Pair stride, Pair padding, Pair dilation, bool ceil_mode, bool count_include_pad,
                      int64_t divisor_override) {
    const PoolWindow w =
        make_window(parse_kind(kind), kernel, stride, padding, dilation, count_include_pad, divisor_override);
    const ArrayArg G(grad_out, "grad_out", false), R(grad_in, "grad_in", true);
    check_pair(R, G, w, ceil_mode);
    require_output(R, {&G}, Alias::forbidden);
    TensorView index_view{};
    if (w.kind == PoolKind::max) {
        const ArrayArg I(indices, "indices", false);
        check_indices(I, G);
        require_output(R, {&I}, Alias::forbidden);
        index_view = I.view();
    }
    const PoolBackwardParams p{w, G.view(), index_view, R.view()};
    nb::gil_scoped_release release;
    pool_backward(p);
}

}  // namespace

void bind_pool(nb::module_& m) {
    m.def("pool_forward", &pool_forward_py, nb::arg("kind"), nb::arg("x"), nb::arg("out"), nb::arg("indices").none(),
          nb::arg("kernel"), nb::arg("stride"), nb::arg("padding"), nb::arg("dilation"), nb::arg("ceil_mode"),
          nb::arg("count_include_pad"), nb::arg("divisor_override"),
          "2-D max / avg / adaptive-avg pooling of (N, C, H, W) x into out (and int64 indices for max, unless "
          "indices is None).");
    m.def("pool_backward", &pool_backward_py, nb::arg("kind"), nb::arg("grad_out"), nb::arg("indices").none(),
          nb::arg("grad_in"), nb::arg("kernel"), nb::arg("stride"), nb::arg("padding"), nb::arg("dilation"),
          nb::arg("ceil_mode"), nb::arg("count_include_pad"), nb::arg("divisor_override"),
          "Input gradient of pool_forward; grad_in is written completely.");
}

}  // namespace fastnn::bind
