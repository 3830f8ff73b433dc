// Activation math on float32 vectors. This file is compiled once per ISA
// (CMake: FASTNN_KERNEL_SOURCES), each build in its own namespace. 2 (forward)
// or 3 (backward) streams of 4 or 2 bytes per element, no reuse, so the floor
// is bytes / copy bandwidth: 8 bytes per fp32 forward element is ~4 Gelem/s at
// 33 GB/s. relu is far below that in arithmetic; the transcendental ones cost
// 20-50 vector operations per element (one exp, plus a division or a
// polynomial), which 2 cores at 16 lanes also sustain at about that rate, so
// they sit near the memory floor with AVX-512 and become compute-bound with
// narrower vectors.
#include <type_traits>

#include "fastnn/activation.h"
#include "fastnn/simd_math.h"
#include "elementwise_map.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {

using simd::Precision;
using simd::VecF32;

inline VecF32 splat(float x) { return VecF32::broadcast(x); }

// Each op computes in float32 vectors; Precision names the dtype the result
// is stored in, for an op whose float32 accuracy would be wasted on bf16.
struct Relu {
    // max(0, x) returns x when x is NaN (x86 max rule), so NaN propagates.
    template <Precision>
    static VecF32 forward(VecF32 x) { return simd::max(VecF32::zero(), x); }
    template <Precision>
    static VecF32 backward(VecF32 grad, VecF32 y) {
        return simd::select(simd::cmp_le(y, VecF32::zero()), VecF32::zero(), grad);
    }
};

// Exact GELU: x Phi(x); backward dy (Phi(x) + x phi(x)), as PyTorch's, with
// phi(x) = e^(-x^2/2) / sqrt(2 pi) the Gaussian that Phi is built from.
struct Gelu {
    template <Precision P>
    static VecF32 forward(VecF32 x) { return simd::gelu(x); }
    template <Precision P>
    static VecF32 backward(VecF32 grad, VecF32 x) {
        const simd::NormalCdf n = simd::normal_cdf_and_gauss<P>(x);
        return grad * fmadd(x * splat(0.398942280401432678f), n.gauss, n.cdf);
    }
};

// Tanh-approximated GELU, PyTorch's formula x/2 (1 + tanh(u)), u = sqrt(2/pi)
// (x + 0.044715 x^3), evaluated as x sigmoid(2u), the same function without
// the cancellation of 1 + tanh(u) for x << 0. Backward: with s = sigmoid(2u),
// dy (s + 2 x s (1 - s) u').
struct GeluTanh {
    static constexpr float kBeta = 0.797884560802865355f, kKappa = 0.044715f;
    static VecF32 two_u(VecF32 x) {
        const VecF32 inner = fmadd(splat(kKappa) * x * x, x, x);
        return splat(2.0f * kBeta) * inner;
    }
    template <Precision P>
    static VecF32 forward(VecF32 x) { return x * simd::sigmoid<P>(two_u(x)); }
    template <Precision P>
    static VecF32 backward(VecF32 grad, VecF32 x) {
        const simd::SigmoidPair s = simd::sigmoid_pair<P>(two_u(x));
        const VecF32 du = splat(2.0f * kBeta) * fmadd(splat(3.0f * kKappa) * x, x, splat(1.0f));
        return grad * fmadd(x * s.pos * s.neg, du, s.pos);
    }
};

// SiLU: x sigmoid(x); backward dy s (1 + x (1 - s)), as PyTorch's.
struct Silu {
    template <Precision P>
    static VecF32 forward(VecF32 x) { return x * simd::sigmoid<P>(x); }
    template <Precision P>
    static VecF32 backward(VecF32 grad, VecF32 x) {
        const simd::SigmoidPair s = simd::sigmoid_pair<P>(x);
        return grad * s.pos * fmadd(x, s.neg, splat(1.0f));
    }
};

// Backward from the output y, as PyTorch's: dy (1 - y) y.
struct Sigmoid {
    template <Precision P>
    static VecF32 forward(VecF32 x) { return simd::sigmoid<P>(x); }
    template <Precision>
    static VecF32 backward(VecF32 grad, VecF32 y) { return grad * (splat(1.0f) - y) * y; }
};

// Backward from the output y, as PyTorch's: dy (1 - y^2), evaluated as
// (1 - y)(1 + y): for |y| near 1 both factors are exact or nearly so, where
// 1 - y*y cancels the rounding error of y*y up to the size of the result.
struct Tanh {
    template <Precision>
    static VecF32 forward(VecF32 x) { return simd::tanh(x); }
    template <Precision>
    static VecF32 backward(VecF32 grad, VecF32 y) { return grad * ((splat(1.0f) - y) * (splat(1.0f) + y)); }
};

template <class T>
inline constexpr Precision kPrecisionOf = std::is_same_v<T, bf16> ? Precision::bfloat16 : Precision::float32;

template <class Op, class T>
void activation_forward_typed(const ActivationParams& p) {
    const TensorView* ops[] = {&p.y, &p.x};
    map_elementwise<T, 1>(ops, [](const VecF32* in) { return Op::template forward<kPrecisionOf<T>>(in[0]); });
}

template <class Op, class T>
void activation_backward_typed(const ActivationBackwardParams& p) {
    const TensorView* ops[] = {&p.grad_in, &p.grad_out, &p.saved};
    map_elementwise<T, 2>(ops, [](const VecF32* in) { return Op::template backward<kPrecisionOf<T>>(in[0], in[1]); });
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
        case Activation::gelu: return activation_forward_dispatch<Gelu>(p);
        case Activation::gelu_tanh: return activation_forward_dispatch<GeluTanh>(p);
        case Activation::silu: return activation_forward_dispatch<Silu>(p);
        case Activation::sigmoid: return activation_forward_dispatch<Sigmoid>(p);
        case Activation::tanh: return activation_forward_dispatch<Tanh>(p);
    }
}

void activation_backward_kernel(const ActivationBackwardParams& p) {
    switch (p.kind) {
        case Activation::relu: return activation_backward_dispatch<Relu>(p);
        case Activation::gelu: return activation_backward_dispatch<Gelu>(p);
        case Activation::gelu_tanh: return activation_backward_dispatch<GeluTanh>(p);
        case Activation::silu: return activation_backward_dispatch<Silu>(p);
        case Activation::sigmoid: return activation_backward_dispatch<Sigmoid>(p);
        case Activation::tanh: return activation_backward_dispatch<Tanh>(p);
    }
}

const ActivationKernels activation_kernels = {activation_forward_kernel, activation_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
