#include "bindings.h"
#include "checks.h"
#include "fastnn/dropout.h"

namespace fastnn::bind {
namespace {

void dropout_py(nb::handle x, nb::handle out, double p, uint64_t seed, uint64_t offset, const char* x_name) {
    if (!(p >= 0.0 && p <= 1.0)) throw_value_error(cat("p must be in [0, 1], got ", p));
    const ArrayArg X(x, x_name, false), Y(out, "out", true);
    require_cpu(X);
    require_dtype(X, {DType::f32, DType::bf16});
    require_same_device(X, Y);
    require_same_dtype(X, Y);
    require_same_shape(X, Y);
    require_output(Y, {&X}, Alias::exact_allowed);
    const DropoutParams params{X.view(), Y.view(), p, seed, offset};
    nb::gil_scoped_release release;
    dropout_apply(params);
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
