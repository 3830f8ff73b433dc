// Activation math on float32 vectors. This file is compiled once per ISA
// (CMake: FASTNN_KERNEL_SOURCES), each build in its own namespace. Memory-bound: 2 (forward) or 3 (backward)
// streams of 4 or 2 bytes per element, no reuse, so the floor is bytes /
// copy bandwidth and the only goals are full-width loads and stores and no
// extra passes.
#include "fastnn/activation.h"
#include "elementwise_map.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {

struct Relu {
    // max(0, x) returns x when x is NaN (x86 max rule), so NaN propagates.
    static simd::VecF32 forward(simd::VecF32 x) { return simd::max(simd::VecF32::zero(), x); }
    static simd::VecF32 backward(simd::VecF32 grad, simd::VecF32 y) {
        const simd::VecF32 zero = simd::VecF32::zero();
        return simd::select(simd::cmp_le(y, zero), zero, grad);
    }
};

template <class Op, class T>
void activation_forward_typed(const ActivationParams& p) {
    const TensorView* ops[] = {&p.y, &p.x};
    map_elementwise<T, 1>(ops, [](const simd::VecF32* in) { return Op::forward(in[0]); });
}

template <class Op, class T>
void activation_backward_typed(const ActivationBackwardParams& p) {
    const TensorView* ops[] = {&p.grad_in, &p.grad_out, &p.saved};
    map_elementwise<T, 2>(ops, [](const simd::VecF32* in) { return Op::backward(in[0], in[1]); });
}

template <class Op>
void activation_forward_dispatch(const ActivationParams& p) {
    if (p.x.dtype == DType::bf16) activation_forward_typed<Op, bf16>(p);
    else activation_forward_typed<Op, float>(p);
}

template <class Op>
void activation_backward_dispatch(const ActivationBackwardParams& p) {
    if (p.grad_out.dtype == DType::bf16) activation_backward_typed<Op, bf16>(p);
    else activation_backward_typed<Op, float>(p);
}

void activation_forward_kernel(const ActivationParams& p) {
    switch (p.kind) {
        case Activation::relu: return activation_forward_dispatch<Relu>(p);
    }
}

void activation_backward_kernel(const ActivationBackwardParams& p) {
    switch (p.kind) {
        case Activation::relu: return activation_backward_dispatch<Relu>(p);
    }
}

const ActivationKernels activation_kernels = {activation_forward_kernel, activation_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
