#include "bindings.h"
#include "norm_args.h"

namespace fastnn::bind {
namespace {

using norm_args::norm_backward_call;
using norm_args::norm_forward_call;

void launch_forward(const NormForwardParams& p, const ArrayArg&) {
    nb::gil_scoped_release release;
    norm_forward(p);
}

void launch_backward(const NormBackwardParams& p, const ArrayArg&) {
    nb::gil_scoped_release release;
    norm_backward(p);
}

void norm_forward_py(NormKind kind, nb::handle x, nb::handle weight, nb::handle bias, double eps, nb::handle out,
                     nb::handle mean, nb::handle rstd) {
    norm_forward_call(require_cpu, launch_forward, kind, x, weight, bias, eps, out, mean, rstd);
}

void norm_backward_py(NormKind kind, nb::handle grad_out, nb::handle x, nb::handle mean, nb::handle rstd,
                      nb::handle weight, nb::handle out, nb::handle grad_weight, nb::handle grad_bias) {
    norm_backward_call(require_cpu, launch_backward, kind, grad_out, x, mean, rstd, weight, out, grad_weight,
                       grad_bias);
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
