// Argument checks of the softmax bindings, shared by the CPU module
// (csrc/bind/bind_softmax.cpp) and the CUDA one (cuda/bind/bind_softmax.cpp):
// everything but the device check, which each module passes in, and the
// launch.
#pragma once

#include "checks.h"
#include "fastnn/softmax.h"

namespace fastnn::bind::softmax_args {

inline void require_rows(const ArrayArg& a) {
    if (a.ndim() < 1) throw_value_error(cat(a.name(), " must have at least 1 dimension (rows along the last), got 0"));
}

// Validates softmax_forward / log_softmax_forward's arguments and calls
// launch(params, x) while the arrays are held.
template <class Launch>
void forward_call(RequireDevice require_device, Launch&& launch, nb::handle x, nb::handle out, bool log) {
    const ArrayArg X(x, "x", false), Y(out, "out", true);
    require_device(X);
    require_dtype(X, {DType::f32, DType::bf16});
    require_rows(X);
    require_same_device(X, Y);
    require_same_dtype(X, Y);
    require_same_shape(X, Y);
    // Rows are read twice (statistics, then output), so out may not be x.
    require_output(Y, {&X}, Alias::forbidden);
    launch(SoftmaxParams{X.view(), Y.view(), log}, X);
}

template <class Launch>
void backward_call(RequireDevice require_device, Launch&& launch, nb::handle grad_out, nb::handle y, nb::handle out,
                   bool log) {
    const ArrayArg G(grad_out, "grad_out", false), Y(y, "y", false), R(out, "out", true);
    require_device(G);
    require_dtype(G, {DType::f32, DType::bf16});
    require_rows(G);
    for (const ArrayArg* a : {&Y, &R}) {
        require_same_device(G, *a);
        require_same_dtype(G, *a);
        require_same_shape(G, *a);
    }
    require_output(R, {&G, &Y}, Alias::forbidden);
    launch(SoftmaxBackwardParams{G.view(), Y.view(), R.view(), log}, G);
}

}  // namespace fastnn::bind::softmax_args
