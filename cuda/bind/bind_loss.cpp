// fastnn._cuda fused cross-entropy: the CPU module's names, arguments and
// checks (csrc/bind/loss_args.h) plus a trailing stream. The targets' values
// stay on the device: a row whose target is neither in [0, C) nor
// ignore_index gets a NaN loss and gradient row (cuda/loss/cross_entropy.cu).
#include <nanobind/stl/string.h>

#include "../../csrc/bind/loss_args.h"
#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

void forward(nb::handle logits, nb::handle target, nb::handle loss, nb::handle stats, const std::string& reduction,
             int64_t ignore_index, double label_smoothing, uintptr_t stream) {
    loss_args::cross_entropy_forward_call(require_cuda, [stream](const CrossEntropyParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::cross_entropy_forward(p, as_stream(stream)), "cross_entropy_forward");
    }, logits, target, loss, stats, reduction, ignore_index, label_smoothing);
}

void backward(nb::handle logits, nb::handle target, nb::handle stats, nb::handle grad_loss, nb::handle out,
              const std::string& reduction, int64_t ignore_index, double label_smoothing, uintptr_t stream) {
    loss_args::cross_entropy_backward_call(
        require_cuda, [stream](const CrossEntropyBackwardParams& p, const ArrayArg& first) {
            DeviceGuard guard(first.device_id());
            check_cuda(cuda::cross_entropy_backward(p, as_stream(stream)), "cross_entropy_backward");
        }, logits, target, stats, grad_loss, out, reduction, ignore_index, label_smoothing);
}

}  // namespace

void bind_loss(nb::module_& m) {
    m.def("cross_entropy_forward", &forward, nb::arg("logits"), nb::arg("target"), nb::arg("out"), nb::arg("stats"),
          nb::arg("reduction"), nb::arg("ignore_index"), nb::arg("label_smoothing"), nb::arg("stream"),
          "Softmax cross-entropy of logits (N, C) against int64 target (N,); writes the loss to out and "
          "each row's (max, log sum exp(x - max)) as float64 to stats (N, 2). One read of the logits.");
    m.def("cross_entropy_backward", &backward, nb::arg("logits"), nb::arg("target"), nb::arg("stats"),
          nb::arg("grad_loss"), nb::arg("out"), nb::arg("reduction"), nb::arg("ignore_index"),
          nb::arg("label_smoothing"), nb::arg("stream"),
          "dlogits of cross_entropy from the logits and the forward's stats, in one read of the logits.");
}

}  // namespace fastnn::bind
