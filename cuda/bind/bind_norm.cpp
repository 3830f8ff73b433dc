// fastnn._cuda LayerNorm / RMSNorm: the CPU module's names, arguments and
// checks (csrc/bind/norm_args.h) plus a trailing stream. grad_weight and
// grad_bias have no default here (the stream follows them).
#include "../../csrc/bind/norm_args.h"
#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

using norm_args::norm_backward_call;
using norm_args::norm_forward_call;

void forward(NormKind kind, nb::handle x, nb::handle weight, nb::handle bias, double eps, nb::handle out,
             nb::handle mean, nb::handle rstd, uintptr_t stream) {
    norm_forward_call(require_cuda, [stream](const NormForwardParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::norm_forward(p, as_stream(stream)), "norm_forward");
    }, kind, x, weight, bias, eps, out, mean, rstd);
}

void backward(NormKind kind, nb::handle grad_out, nb::handle x, nb::handle mean, nb::handle rstd, nb::handle weight,
              nb::handle out, nb::handle grad_weight, nb::handle grad_bias, uintptr_t stream) {
    norm_backward_call(require_cuda, [stream](const NormBackwardParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::norm_backward(p, as_stream(stream)), "norm_backward");
    }, kind, grad_out, x, mean, rstd, weight, out, grad_weight, grad_bias);
}

}  // namespace

void bind_norm(nb::module_& m) {
    m.def(
        "layer_norm_forward",
        [](nb::handle x, nb::handle weight, nb::handle bias, double eps, nb::handle out, nb::handle mean,
           nb::handle rstd, uintptr_t stream) {
            forward(NormKind::layer, x, weight, bias, eps, out, mean, rstd, stream);
        },
        nb::arg("x"), nb::arg("weight").none(), nb::arg("bias").none(), nb::arg("eps"), nb::arg("out"),
        nb::arg("mean"), nb::arg("rstd"), nb::arg("stream"),
        "LayerNorm over the last dim of x into out; writes the rows' mean and rstd (float32, x's leading "
        "shape). weight/bias may be None. out may be x itself.");
    m.def(
        "rms_norm_forward",
        [](nb::handle x, nb::handle weight, double eps, nb::handle out, nb::handle rstd, uintptr_t stream) {
            forward(NormKind::rms, x, weight, nb::none(), eps, out, nb::none(), rstd, stream);
        },
        nb::arg("x"), nb::arg("weight").none(), nb::arg("eps"), nb::arg("out"), nb::arg("rstd"), nb::arg("stream"),
        "RMSNorm over the last dim of x into out; writes the rows' rstd. weight may be None. out may be x.");
    m.def(
        "layer_norm_backward",
        [](nb::handle grad_out, nb::handle x, nb::handle mean, nb::handle rstd, nb::handle weight, nb::handle out,
           nb::handle grad_weight, nb::handle grad_bias, uintptr_t stream) {
            backward(NormKind::layer, grad_out, x, mean, rstd, weight, out, grad_weight, grad_bias, stream);
        },
        nb::arg("grad_out"), nb::arg("x"), nb::arg("mean").none(), nb::arg("rstd"), nb::arg("weight").none(),
        nb::arg("out"), nb::arg("grad_weight").none(), nb::arg("grad_bias").none(), nb::arg("stream"),
        "LayerNorm backward: grad_x into out, and grad_weight/grad_bias when given (summed over rows in a "
        "fixed order: the same bits on every run).");
    m.def(
        "rms_norm_backward",
        [](nb::handle grad_out, nb::handle x, nb::handle rstd, nb::handle weight, nb::handle out,
           nb::handle grad_weight, uintptr_t stream) {
            backward(NormKind::rms, grad_out, x, nb::none(), rstd, weight, out, grad_weight, nb::none(), stream);
        },
        nb::arg("grad_out"), nb::arg("x"), nb::arg("rstd"), nb::arg("weight").none(), nb::arg("out"),
        nb::arg("grad_weight").none(), nb::arg("stream"),
        "RMSNorm backward: grad_x into out, and grad_weight when given.");
}

}  // namespace fastnn::bind
