// Argument checks of the dropout bindings, shared by the CPU module
// (csrc/bind/bind_dropout.cpp) and the CUDA one (cuda/bind/bind_dropout.cpp):
// everything but the device check, which each module passes in, and the
// launch.
#pragma once

#include "checks.h"
#include "fastnn/dropout.h"

namespace fastnn::bind::dropout_args {

// dropout_forward (x_name "x") and dropout_backward ("grad_out") are the same
// map; calls launch(params, x) while the arrays are held.
template <class Launch>
void call(RequireDevice require_device, Launch&& launch, nb::handle x, nb::handle out, double p, uint64_t seed,
          uint64_t offset, const char* x_name) {
    if (!(p >= 0.0 && p <= 1.0)) throw_value_error(cat("p must be in [0, 1], got ", p));
    const ArrayArg X(x, x_name, false), Y(out, "out", true);
    require_device(X);
    require_dtype(X, {DType::f32, DType::bf16});
    require_same_device(X, Y);
    require_same_dtype(X, Y);
    require_same_shape(X, Y);
    require_output(Y, {&X}, Alias::exact_allowed);
    launch(DropoutParams{X.view(), Y.view(), p, seed, offset}, X);
}

}  // namespace fastnn::bind::dropout_args
