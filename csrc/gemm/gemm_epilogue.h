// The GEMM epilogue's activations on float32 vectors, applied to a C tile
// while it is still in registers. Same formulas as torch.nn.functional:
//   relu(x)      = max(x, 0)
//   gelu(x)      = x/2 (1 + erf(x / sqrt 2))
//   gelu_tanh(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
//                = x sigmoid(2u)       (one exp instead of a tanh)
//   silu(x)      = x sigmoid(x)
// exp: Cody-Waite reduction by ln 2 and Cephes' degree-6 polynomial, < 2 ulp
// over the clamped range. erf: Eigen's rational approximation x P(x^2)/Q(x^2)
// on [-4, 4] (|error| < 5e-7; erf is +-1 in float beyond), which the output's
// GEMM rounding dominates. NaN inputs give NaN outputs (x multiplies last).
#pragma once

#include <cmath>

#include "fastnn/gemm.h"
#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail {

using simd::VecF32;

// round-to-nearest(n) and p * 2^n for integral n in [-126, 127].
#if FASTNN_SIMD_AVX512
inline VecF32 round_nearest(VecF32 x) { return {_mm512_roundscale_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline VecF32 scale_pow2(VecF32 p, VecF32 n) { return {_mm512_scalef_ps(p.v, n.v)}; }
#elif FASTNN_SIMD_AVX2
inline VecF32 round_nearest(VecF32 x) { return {_mm256_round_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline VecF32 scale_pow2(VecF32 p, VecF32 n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
    return {_mm256_mul_ps(p.v, _mm256_castsi256_ps(e))};
}
#else
inline VecF32 round_nearest(VecF32 x) {
    for (float& v : x.v) v = std::nearbyint(v);
    return x;
}
inline VecF32 scale_pow2(VecF32 p, VecF32 n) {
    for (int i = 0; i < VecF32::width; ++i) p.v[i] = std::ldexp(p.v[i], static_cast<int>(n.v[i]));
    return p;
}
#endif

inline VecF32 vexp(VecF32 x) {
    const auto c = VecF32::broadcast;
    // e^88 is finite and e^-87 normal: the only uses here are sigmoids, for
    // which the clamped values already give the limits 0 and x.
    x = simd::min(simd::max(x, c(-87.0f)), c(88.0f));
    const VecF32 n = round_nearest(x * c(1.44269504088896341f));
    VecF32 r = simd::fmadd(n, c(-0.693359375f), x);
    r = simd::fmadd(n, c(2.12194440e-4f), r);
    VecF32 p = c(1.9875691500e-4f);
    p = simd::fmadd(p, r, c(1.3981999507e-3f));
    p = simd::fmadd(p, r, c(8.3334519073e-3f));
    p = simd::fmadd(p, r, c(4.1665795894e-2f));
    p = simd::fmadd(p, r, c(1.6666665459e-1f));
    p = simd::fmadd(p, r, c(5.0000001201e-1f));
    p = simd::fmadd(p, r * r, r + c(1.0f));
    return scale_pow2(p, n);
}

inline VecF32 verf(VecF32 x) {
    const auto c = VecF32::broadcast;
    x = simd::min(simd::max(x, c(-4.0f)), c(4.0f));
    const VecF32 x2 = x * x;
    VecF32 p = c(-2.72614225801306e-10f);
    p = simd::fmadd(p, x2, c(2.77068142495902e-08f));
    p = simd::fmadd(p, x2, c(-2.10102402082508e-06f));
    p = simd::fmadd(p, x2, c(-5.69250639462346e-05f));
    p = simd::fmadd(p, x2, c(-7.34990630326855e-04f));
    p = simd::fmadd(p, x2, c(-2.95459980854025e-03f));
    p = simd::fmadd(p, x2, c(-1.60960333262415e-02f));
    VecF32 q = c(-1.45660718464996e-05f);
    q = simd::fmadd(q, x2, c(-2.13374055278905e-04f));
    q = simd::fmadd(q, x2, c(-1.68282697438203e-03f));
    q = simd::fmadd(q, x2, c(-7.37332916720468e-03f));
    q = simd::fmadd(q, x2, c(-1.42647390514189e-02f));
    return x * p / q;
}

struct ActNone {
    static VecF32 apply(VecF32 x) { return x; }
};
struct ActRelu {
    // max returns its second operand when either is NaN: NaN propagates.
    static VecF32 apply(VecF32 x) { return simd::max(VecF32::zero(), x); }
};
struct ActGeluErf {
    static VecF32 apply(VecF32 x) {
        const VecF32 half_x = x * VecF32::broadcast(0.5f);
        return simd::fmadd(half_x, verf(x * VecF32::broadcast(0.70710678118654752f)), half_x);
    }
};
struct ActGeluTanh {
    static VecF32 apply(VecF32 x) {
        const auto c = VecF32::broadcast;
        const VecF32 x3 = x * x * x;
        const VecF32 minus_2u = simd::fmadd(x3, c(-2.0f * 0.7978845608028654f * 0.044715f),
                                            x * c(-2.0f * 0.7978845608028654f));
        return x / (c(1.0f) + vexp(minus_2u));
    }
};
struct ActSilu {
    static VecF32 apply(VecF32 x) { return x / (VecF32::broadcast(1.0f) + vexp(VecF32::zero() - x)); }
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
