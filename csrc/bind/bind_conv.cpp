#include <nanobind/stl/tuple.h>

#include <optional>
#include <tuple>

#include "bindings.h"
#include "checks.h"
#include "fastnn/conv.h"

namespace fastnn::bind {
namespace {

using Pair = std::tuple<int64_t, int64_t>;

struct Checked {
    ConvGeometry geo;
    int64_t OH, OW;
};

// Validates x and weight (and the geometry) and returns the output size.
// pad_before is the top/left padding, pad_after the bottom/right one.
Checked check_conv(const ArrayArg& x, const ArrayArg& w, Pair stride, Pair pad_before, Pair pad_after, Pair dilation,
                   int64_t groups) {
    require_cpu(x);
    require_dtype(x, {DType::f32, DType::bf16});
    if (x.ndim() != 4) throw_value_error(cat("x must be (N, C, H, W), got ", x.shape_str()));
    require_same_device(x, w);
    require_same_dtype(x, w);
    if (w.ndim() != 4) throw_value_error(cat("weight must be (K, C / groups, R, S), got ", w.shape_str()));
    if (groups < 1) throw_value_error(cat("groups must be >= 1, got ", groups));
    if (w.size(1) * groups != x.size(1))
        throw_value_error(cat("weight must be (K, C / groups, R, S) with C / groups = ", x.size(1), " / ", groups,
                              " channels, got ", w.shape_str(), " for x ", x.shape_str()));
    if (w.size(0) % groups != 0)
        throw_value_error(cat("weight has ", w.size(0), " output channels, not divisible by groups = ", groups));
    if (w.size(0) == 0 || w.size(2) == 0 || w.size(3) == 0)
        throw_value_error(cat("weight must have non-zero K, R and S, got ", w.shape_str()));
    Checked c{{{std::get<0>(stride), std::get<1>(stride)},
               {std::get<0>(pad_before), std::get<1>(pad_before)},
               {std::get<0>(dilation), std::get<1>(dilation)},
               groups},
              0, 0};
    const int64_t after[2] = {std::get<0>(pad_after), std::get<1>(pad_after)};
    int64_t out[2];
    for (int a = 0; a < 2; ++a) {
        if (c.geo.stride[a] < 1) throw_value_error(cat("stride must be >= 1, got ", c.geo.stride[a]));
        if (c.geo.dilation[a] < 1) throw_value_error(cat("dilation must be >= 1, got ", c.geo.dilation[a]));
        if (c.geo.pad[a] < 0 || after[a] < 0) throw_value_error(cat("padding must be >= 0, got ", c.geo.pad[a]));
        const int64_t span = x.size(2 + a) + c.geo.pad[a] + after[a] - c.geo.dilation[a] * (w.size(2 + a) - 1) - 1;
        if (span < 0)
            throw_value_error(cat("x ", x.shape_str(), " (padded) is smaller than the dilated kernel of weight ",
                                  w.shape_str()));
        out[a] = span / c.geo.stride[a] + 1;
    }
    c.OH = out[0], c.OW = out[1];
    return c;
}

void require_conv_out(const ArrayArg& y, const ArrayArg& x, const ArrayArg& w, const Checked& c) {
    require_same_device(x, y);
    require_same_dtype(x, y);
    if (y.ndim() != 4 || y.size(0) != x.size(0) || y.size(1) != w.size(0) || y.size(2) != c.OH || y.size(3) != c.OW)
        throw_value_error(cat(y.name(), " must be (N, K, OH, OW) = (", x.size(0), ", ", w.size(0), ", ", c.OH, ", ",
                              c.OW, "), got ", y.shape_str()));
}

void require_bias_shape(const ArrayArg& b, const ArrayArg& x, const ArrayArg& w) {
    require_same_device(x, b);
    require_same_dtype(x, b);
    if (b.ndim() != 1 || b.size(0) != w.size(0))
        throw_value_error(cat(b.name(), " must be (K,) = (", w.size(0), ",), got ", b.shape_str()));
}

void conv2d_forward_py(nb::handle x, nb::handle weight, nb::handle bias, nb::handle out, Pair stride,
                       Pair pad_before, Pair pad_after, Pair dilation, int64_t groups) {
    const ArrayArg X(x, "x", false), Wt(weight, "weight", false), Y(out, "out", true);
    const Checked c = check_conv(X, Wt, stride, pad_before, pad_after, dilation, groups);
    require_conv_out(Y, X, Wt, c);
    TensorView bias_view{};
    std::optional<ArrayArg> B;
    if (!bias.is_none()) {
        B.emplace(bias, "bias", false);
        require_bias_shape(*B, X, Wt);
        require_output(Y, {&*B}, Alias::forbidden);
        bias_view = B->view();
    }
    require_output(Y, {&X, &Wt}, Alias::forbidden);
    const ConvParams p{c.geo, X.view(), Wt.view(), bias_view, Y.view()};
    nb::gil_scoped_release release;
    conv2d_forward(p);
}

void conv2d_backward_py(nb::handle x, nb::handle weight, nb::handle grad_out, nb::handle grad_x,
                        nb::handle grad_weight, nb::handle grad_bias, Pair stride, Pair pad_before, Pair pad_after,
                        Pair dilation, int64_t groups) {
    const ArrayArg X(x, "x", false), Wt(weight, "weight", false), G(grad_out, "grad_out", false);
    const Checked c = check_conv(X, Wt, stride, pad_before, pad_after, dilation, groups);
    require_conv_out(G, X, Wt, c);
    std::optional<ArrayArg> GX, GW, GB;
    ConvBackwardParams p{c.geo, X.view(), Wt.view(), G.view(), {}, {}, {}};
    std::initializer_list<const ArrayArg*> inputs = {&X, &Wt, &G};
    if (!grad_x.is_none()) {
        GX.emplace(grad_x, "grad_x", true);
        require_same_device(X, *GX);
        require_same_dtype(X, *GX);
        require_same_shape(X, *GX);
        require_output(*GX, inputs, Alias::forbidden);
        p.grad_x = GX->view();
    }
    if (!grad_weight.is_none()) {
        GW.emplace(grad_weight, "grad_weight", true);
        require_same_device(Wt, *GW);
        require_same_dtype(Wt, *GW);
        require_same_shape(Wt, *GW);
        require_output(*GW, inputs, Alias::forbidden);
        if (GX) require_output(*GW, {&*GX}, Alias::forbidden);
        p.grad_weight = GW->view();
    }
    if (!grad_bias.is_none()) {
        GB.emplace(grad_bias, "grad_bias", true);
        require_bias_shape(*GB, X, Wt);
        require_output(*GB, inputs, Alias::forbidden);
        if (GX) require_output(*GB, {&*GX}, Alias::forbidden);
        if (GW) require_output(*GB, {&*GW}, Alias::forbidden);
        p.grad_bias = GB->view();
    }
    nb::gil_scoped_release release;
    conv2d_backward(p);
}

}  // namespace

void bind_conv(nb::module_& m) {
    m.def("conv2d_forward", &conv2d_forward_py, nb::arg("x"), nb::arg("weight"), nb::arg("bias").none(),
          nb::arg("out"), nb::arg("stride"), nb::arg("pad_before"), nb::arg("pad_after"), nb::arg("dilation"),
          nb::arg("groups"),
          "out = conv2d(x, weight) + bias (cross-correlation, as torch). pad_before is top/left, pad_after "
          "bottom/right.");
    m.def("conv2d_backward", &conv2d_backward_py, nb::arg("x"), nb::arg("weight"), nb::arg("grad_out"),
          nb::arg("grad_x").none(), nb::arg("grad_weight").none(), nb::arg("grad_bias").none(), nb::arg("stride"),
          nb::arg("pad_before"), nb::arg("pad_after"), nb::arg("dilation"), nb::arg("groups"),
          "Gradients of conv2d_forward; each of grad_x, grad_weight, grad_bias may be None (not computed).");
}

}  // namespace fastnn::bind
