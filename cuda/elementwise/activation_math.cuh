// The activation functions on float32, forward and backward, as the CPU
// kernels define them (csrc/elementwise/activation_kernels.cpp); backward(g,
// saved) reads the forward's output for relu, sigmoid and tanh and its input
// for the others, as PyTorch's backward of the same op. One struct per
// activation; with_activation maps the run-time kind to it in one place.
#pragma once

#include <type_traits>

#include "fastnn/activation.h"

namespace fastnn::cuda {

// sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x), each to full relative
// accuracy (1 - sigmoid(x) alone cancels for x >> 0), from one exp.
struct SigmoidPair {
    float pos, neg;
};

__device__ __forceinline__ SigmoidPair sigmoid_pair(float x) {
    const float e = expf(-fabsf(x)), big = 1.0f / (1.0f + e), small = e * big;
    return x >= 0.0f ? SigmoidPair{big, small} : SigmoidPair{small, big};
}

struct Relu {
    static constexpr bool kSavesOutput = true;
    // fmaxf(0, NaN) would return 0; relu must propagate NaN.
    __device__ static float forward(float x) { return x > 0.0f || x != x ? x : 0.0f; }
    __device__ static float backward(float grad, float y) { return y <= 0.0f ? 0.0f : grad; }
};

// x Phi(x), Phi through erfc so that the tail x << 0 keeps its relative
// accuracy; backward grad (Phi(x) + x phi(x)).
struct Gelu {
    static constexpr bool kSavesOutput = false;
    __device__ static float cdf(float x) { return 0.5f * erfcf(-0.707106781186547524f * x); }
    __device__ static float forward(float x) { return x * cdf(x); }
    __device__ static float backward(float grad, float x) {
        const float pdf = 0.398942280401432678f * expf(-0.5f * x * x);
        return grad * fmaf(x, pdf, cdf(x));
    }
};

// x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), evaluated as
// x sigmoid(2u) (no cancellation in 1 + tanh(u) for x << 0); backward with
// s = sigmoid(2u): grad (s + 2 x s (1 - s) u').
struct GeluTanh {
    static constexpr bool kSavesOutput = false;
    static constexpr float kBeta = 0.797884560802865355f, kKappa = 0.044715f;
    __device__ static float two_u(float x) { return 2.0f * kBeta * fmaf(kKappa * x * x, x, x); }
    __device__ static float forward(float x) { return x * sigmoid_pair(two_u(x)).pos; }
    __device__ static float backward(float grad, float x) {
        const SigmoidPair s = sigmoid_pair(two_u(x));
        const float du = 2.0f * kBeta * fmaf(3.0f * kKappa * x, x, 1.0f);
        return grad * fmaf(x * s.pos * s.neg, du, s.pos);
    }
};

// x sigmoid(x); backward grad s (1 + x (1 - s)).
struct Silu {
    static constexpr bool kSavesOutput = false;
    __device__ static float forward(float x) { return x * sigmoid_pair(x).pos; }
    __device__ static float backward(float grad, float x) {
        const SigmoidPair s = sigmoid_pair(x);
        return grad * s.pos * fmaf(x, s.neg, 1.0f);
    }
};

struct Sigmoid {
    static constexpr bool kSavesOutput = true;
    __device__ static float forward(float x) { return sigmoid_pair(x).pos; }
    __device__ static float backward(float grad, float y) { return grad * (1.0f - y) * y; }
};

// Backward grad (1 - y)(1 + y): for |y| near 1 both factors are exact or
// nearly so, where 1 - y*y would cancel the rounding of y*y.
struct Tanh {
    static constexpr bool kSavesOutput = true;
    __device__ static float forward(float x) { return tanhf(x); }
    __device__ static float backward(float grad, float y) { return grad * ((1.0f - y) * (1.0f + y)); }
};

// The gradient with respect to the forward's input x, whatever the op saves.
template <class Op>
__device__ __forceinline__ float backward_from_input(float grad, float x) {
    return Op::backward(grad, Op::kSavesOutput ? Op::forward(x) : x);
}

// fn(Op{}) for the run-time kind; fn's results must share one type.
template <class Fn>
auto with_activation(Activation kind, Fn&& fn) {
    switch (kind) {
        case Activation::gelu: return fn(Gelu{});
        case Activation::gelu_tanh: return fn(GeluTanh{});
        case Activation::silu: return fn(Silu{});
        case Activation::sigmoid: return fn(Sigmoid{});
        case Activation::tanh: return fn(Tanh{});
        case Activation::relu: break;
    }
    return fn(Relu{});
}

}  // namespace fastnn::cuda
