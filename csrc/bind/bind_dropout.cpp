#include "bindings.h"
#include "dropout_args.h"

namespace fastnn::bind {
namespace {

void dropout_py(nb::handle x, nb::handle out, double p, uint64_t seed, uint64_t offset, const char* x_name) {
    dropout_args::call(require_cpu, [](const DropoutParams& params, const ArrayArg&) {
        nb::gil_scoped_release release;
        dropout_apply(params);
    }, x, out, p, seed, offset, x_name);
}

}  // namespace

void bind_dropout(nb::module_& m) {
    m.def(
        "dropout_forward",
        [](nb::handle x, nb::handle out, double p, uint64_t seed, uint64_t offset) {
            dropout_py(x, out, p, seed, offset, "x");
        },
        nb::arg("x"), nb::arg("out"), nb::arg("p"), nb::arg("seed"), nb::arg("offset"),
        "out = x * mask / (1 - p); the mask is Philox4x32-10 of (seed, offset, element index).");
    m.def(
        "dropout_backward",
        [](nb::handle grad_out, nb::handle out, double p, uint64_t seed, uint64_t offset) {
            dropout_py(grad_out, out, p, seed, offset, "grad_out");
        },
        nb::arg("grad_out"), nb::arg("out"), nb::arg("p"), nb::arg("seed"), nb::arg("offset"),
        "out = grad_out * mask / (1 - p), the forward's mask regenerated from (seed, offset).");
}

}  // namespace fastnn::bind
