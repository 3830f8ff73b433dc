// Vector transcendental functions on the VecF32 vocabulary, written once for
// every ISA. Each is a range reduction plus a polynomial evaluated with FMAs
// (Horner), accurate to about 1 ulp over the whole float range (tested against
// float64 on extreme inputs by tests/test_activation.py). NaN propagates; the
// limits at +-inf are exact.
//
// Coefficients: exp is Sleef's expf (Cody-Waite reduction by ln 2, degree-6
// polynomial on |r| <= ln2/2). tanh and the error-function pieces were fitted
// for this file (iteratively reweighted least squares toward the minimax
// polynomial in float64, coefficients rounded to float and the float
// evaluation re-checked): tanh on [0, 0.625] (0.63 ulp); the pieces of
// normal_cdf_and_gauss are described there.
//
// Same namespace rule as simd.h: include only from per-ISA kernel files.
#pragma once

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::simd {

// The dtype a result is rounded to. At bfloat16 (8 significant bits) the
// functions may use shorter polynomials and reciprocal estimates whose
// errors (2^-12 relative or less) stay a small fraction of that rounding.
enum class Precision { float32, bfloat16 };

template <int N>
inline VecF32 horner(VecF32 x, const float (&c)[N]) {
    VecF32 acc = VecF32::broadcast(c[N - 1]);
    for (int i = N - 2; i >= 0; --i) acc = fmadd(acc, x, VecF32::broadcast(c[i]));
    return acc;
}

// 1/a for a >= 1 and finite. At float32 the estimate is refined by one
// Newton step, t (1 + (1 - a t)) with the residual from one FMA: within an ulp
// of the quotient for about a third of a division's cost (vdivps zmm holds its
// port ~10 cycles; in float32 GELU it was a third of the function's time). At
// bfloat16 the estimate alone (2^-12 or better) is 1/8 of the output's
// rounding.
template <Precision kPrecision>
inline VecF32 reciprocal(VecF32 a) {
    const VecF32 t = reciprocal_estimate(a);
    if constexpr (kPrecision == Precision::bfloat16) return t;
    return fmadd(t, fnmadd(a, t, VecF32::broadcast(1.0f)), t);
}

// e^x. The argument is clamped to [-104, 89] first: below, the result rounds
// to 0 (e^-104 < half the smallest subnormal); above, it overflows to inf
// (e^88.73 > FLT_MAX). min/max keep NaN (they return their second operand
// when either is NaN). 2^n (n in [-150, 128]) is applied by scale_pow2,
// rounding a subnormal result once, except in the lanes below -104, which
// are set to 0 without being scaled: there the scaling underflows, and on
// Intel cores an underflowing result takes a microcode assist of ~150 cycles
// (-inf is how masks and causal attention drop a score: a softmax with half
// of each row -inf ran 5x slower than on finite rows). At bfloat16 precision
// the Taylor polynomial of degree 4 (relative error 2^-14.6 on
// |r| <= ln2/2) replaces the degree-7 one.
template <Precision kPrecision = Precision::float32>
inline VecF32 exp(VecF32 x) {
    static constexpr float poly_float[] = {0.5f, 0.166666671633720397949219f, 0.0416664853692054748535156f,
                                           0.00833336077630519866943359f, 0.00139304355252534151077271f,
                                           0.000198527617612853646278381f};
    static constexpr float poly_bf16[] = {0.5f, 0.16666667f, 0.041666668f};
    const MaskF32 rounds_to_zero = cmp_lt(x, VecF32::broadcast(-104.0f));
    x = min(VecF32::broadcast(89.0f), max(VecF32::broadcast(-104.0f), x));
    const VecF32 n = round_nearest(x * VecF32::broadcast(1.44269504088896341f));
    // ln 2 split: the high part has 16 significant bits, so n * hi is exact.
    VecF32 r = fmadd(n, VecF32::broadcast(-0.693145751953125f), x);
    r = fmadd(n, VecF32::broadcast(-1.428606765330187045e-06f), r);
    const VecF32 tail = kPrecision == Precision::float32 ? horner(r, poly_float) : horner(r, poly_bf16);
    const VecF32 p = fmadd(r * r, tail, r) + VecF32::broadcast(1.0f);
    return scale_pow2_or_zero(p, n, rounds_to_zero);
}

// tanh: an odd polynomial below 0.625 (x + x^3 P(x^2)), where 1 - 2/(e^2|x| + 1)
// would lose bits to cancellation; above it, that formula (its result is
// >= 0.55, so the subtraction costs under one bit), saturating to 1 when e^2|x|
// overflows.
inline VecF32 tanh(VecF32 x) {
    static constexpr float poly[] = {-0.3333333134651184f, 0.1333320438861847f, -0.05394681170582771f,
                                     0.021701743826270103f, -0.008181042037904263f, 0.002146868733689189f};
    const VecF32 one = VecF32::broadcast(1.0f);
    const VecF32 a = abs(x);
    const VecF32 z = a * a;
    const VecF32 small = fmadd(a * z, horner(z, poly), a);
    const VecF32 e = exp(a + a);
    const VecF32 large = one - VecF32::broadcast(2.0f) / (e + one);
    // The sign is applied last so that tanh(-0) = -0.
    return copysign(select(cmp_lt(a, VecF32::broadcast(0.625f)), small, large), x);
}

// sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x), both without cancellation: with
// e = e^-|x|, they are 1/(1+e) and e/(1+e), swapped by the sign of x. Exact 0
// and 1 at -+inf, correct subnormals for x < -87.
struct SigmoidPair {
    VecF32 pos, neg;
};
template <Precision kPrecision = Precision::float32>
inline SigmoidPair sigmoid_pair(VecF32 x) {
    const VecF32 e = exp<kPrecision>(VecF32::zero() - abs(x));
    const VecF32 one = VecF32::broadcast(1.0f);
    const VecF32 big = kPrecision == Precision::float32 ? one / (one + e) : reciprocal_estimate(one + e);
    const VecF32 tiny = e * big;
    const MaskF32 negative = cmp_lt(x, VecF32::zero());
    return {select(negative, tiny, big), select(negative, big, tiny)};
}
template <Precision kPrecision = Precision::float32>
inline VecF32 sigmoid(VecF32 x) { return sigmoid_pair<kPrecision>(x).pos; }

// The standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2, with the Gaussian
// e^(-x^2/2) it is built from (GELU's backward needs both). With a = |x| / sqrt 2,
//   erfc(a) = t P(t) e^(-a^2),  t = 1 / (1 + p a),  P(t) = 1 + (t - 1) R(t),
// one branch-free formula for every a >= 0: P(1) = 1 exactly, so Phi(0) = 1/2,
// and the relative error of erfc holds out to its underflow, so Phi(x) for
// x << 0 keeps its relative accuracy (PyTorch's 1 + erf(z) cancels to 0 from
// x = -5.9). Phi(x > 0) = 1 - erfc(a)/2.
//
// Below a ~ 1 the roundings of t, P and their product, each relative to 1,
// add up to ~3 ulps of Phi, where PyTorch's 1 + erf(z) rounds once (and
// cancels less than 6x): at float precision a < 0.875 takes erf's odd
// polynomial instead, z (c0 + z^2 S(z^2)). At bf16 precision the output's
// rounding (2^-9) dwarfs both, so R has lower degree and there is no
// small-argument piece.
//
// R was fitted for this file (iteratively reweighted least squares toward the
// minimax relative error of erfc on a in [0, 10.1], float64 against
// torch.special.erfcx, coefficients rounded to float): degree 7 with p = 3/8,
// 1.3e-8; degree 4 with p = 7/16, 5.3e-6 (1/1500 of a bf16 ulp). S (degree
// 4 in z^2) was fitted the same way for the relative error of erf on
// [0, 0.875): 9.5e-9.
struct NormalCdf {
    VecF32 cdf;    // Phi(x)
    VecF32 gauss;  // e^(-x^2/2)
};

template <Precision kPrecision = Precision::float32>
inline NormalCdf normal_cdf_and_gauss(VecF32 x) {
    constexpr bool kFloat = kPrecision == Precision::float32;
    static constexpr float r_float[] = {0.7883874773979187f,   0.5777208805084229f,  0.3725306987762451f,
                                        0.2505331337451935f,   -0.02200585789978504f, 0.20564356446266174f,
                                        -0.22516784071922302f, 0.06137072667479515f};
    static constexpr float r_bf16[] = {0.752788245677948f, 0.5124814510345459f, 0.2454431802034378f,
                                       0.21578168869018555f, -0.14765147864818573f};
    const VecF32 half = VecF32::broadcast(0.5f), one = VecF32::broadcast(1.0f);
    const VecF32 z = x * VecF32::broadcast(0.707106781186547524f);
    // Clamped where erfc has long underflowed (from a = 10.1), so that the
    // reciprocal's Newton step never sees inf (inf * 0); NaN passes.
    const VecF32 a = min(VecF32::broadcast(16.0f), abs(z));
    const VecF32 a2 = a * a;
    const VecF32 t = reciprocal<kPrecision>(fmadd(a, VecF32::broadcast(kFloat ? 0.375f : 0.4375f), one));
    const VecF32 r = kFloat ? horner(t, r_float) : horner(t, r_bf16);
    const VecF32 half_tp = (half * t) * fmadd(t - one, r, one);
    const VecF32 gauss = exp<kPrecision>(VecF32::zero() - a2);
    // erfc(a)/2 for x < 0, 1 - erfc(a)/2 for x > 0. At float precision the
    // latter is used from a = 0.875 up, where erfc(a)/2 <= 0.11: the
    // product's rounding is under 1/8 ulp of the result; at bf16 the output's
    // rounding dominates.
    const VecF32 half_erfc = half_tp * gauss;
    VecF32 cdf = select(cmp_lt(x, VecF32::zero()), half_erfc, one - half_erfc);
    if constexpr (kFloat) {
        static constexpr float erf_poly[] = {-0.3761257529258728f, 0.11282648891210556f, -0.02679726481437683f,
                                             0.005039758514612913f, -0.0006239198264665902f};
        // 2/sqrt(pi) = c0 + c0_lo; the pair keeps the leading term's rounding out.
        const VecF32 q = fmadd(a2, horner(a2, erf_poly), VecF32::broadcast(-5.8635382771399236e-08f));
        const VecF32 erf_z = fmadd(z, VecF32::broadcast(1.128379225730896f), z * q);
        cdf = select(cmp_lt(a, VecF32::broadcast(0.875f)), fmadd(half, erf_z, half), cdf);
    }
    return {cdf, gauss};
}

inline VecF32 normal_cdf(VecF32 x) { return normal_cdf_and_gauss(x).cdf; }

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::simd
