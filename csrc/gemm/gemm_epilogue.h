// The GEMM epilogue's activations on float32 vectors, applied to a C tile
// while it is still in registers. Same formulas as torch.nn.functional:
//   relu(x)      = max(x, 0)
//   gelu(x)      = x/2 (1 + erf(x / sqrt 2))
//   gelu_tanh(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
//                = x sigmoid(2u)       (one exp instead of a tanh)
//   silu(x)      = x sigmoid(x)
// The vector math (gelu, sigmoid) is the activation family's, from
// simd_math.h. NaN inputs give NaN outputs (x multiplies last).
#pragma once

#include "fastnn/gemm.h"
#include "fastnn/simd_math.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail {

using simd::VecF32;

struct ActNone {
    static VecF32 apply(VecF32 x) { return x; }
};
struct ActRelu {
    // max returns its second operand when either is NaN: NaN propagates.
    static VecF32 apply(VecF32 x) { return simd::max(VecF32::zero(), x); }
};
struct ActGeluErf {
    static VecF32 apply(VecF32 x) { return simd::gelu(x); }
};
struct ActGeluTanh {
    // x/2 (1 + tanh u) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3).
    static VecF32 apply(VecF32 x) {
        const auto c = VecF32::broadcast;
        const VecF32 two_u = simd::fmadd(x * x * x, c(2.0f * 0.7978845608028654f * 0.044715f),
                                         x * c(2.0f * 0.7978845608028654f));
        return x * simd::sigmoid(two_u);
    }
};
struct ActSilu {
    static VecF32 apply(VecF32 x) { return x * simd::sigmoid(x); }
};

// Calls fn(Act{}) with the functor for a run-time activation, so the tile
// loops are compiled once per activation with no branch inside them.
template <class Fn>
void with_activation(GemmActivation act, Fn&& fn) {
    switch (act) {
        case GemmActivation::none: return fn(ActNone{});
        case GemmActivation::relu: return fn(ActRelu{});
        case GemmActivation::gelu_erf: return fn(ActGeluErf{});
        case GemmActivation::gelu_tanh: return fn(ActGeluTanh{});
        case GemmActivation::silu: return fn(ActSilu{});
    }
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail
