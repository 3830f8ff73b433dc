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

// e^r = 1 + r + r^2 P(r) on |r| <= ln2/2 at float precision (Sleef's expf),
// after the reduction x = n ln2 + r with ln 2 split in two: the high part
// has 16 significant bits, so n * kLn2Hi is exact for |n| < 256.
inline constexpr float kExpPoly[] = {0.5f, 0.166666671633720397949219f, 0.0416664853692054748535156f,
                                     0.00833336077630519866943359f, 0.00139304355252534151077271f,
                                     0.000198527617612853646278381f};
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187045e-06f;

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
    static constexpr float poly_bf16[] = {0.5f, 0.16666667f, 0.041666668f};
    const MaskF32 rounds_to_zero = cmp_lt(x, VecF32::broadcast(-104.0f));
    x = min(VecF32::broadcast(89.0f), max(VecF32::broadcast(-104.0f), x));
    const VecF32 n = round_nearest(x * VecF32::broadcast(kLog2e));
    VecF32 r = fnmadd(n, VecF32::broadcast(kLn2Hi), x);
    r = fnmadd(n, VecF32::broadcast(kLn2Lo), r);
    const VecF32 tail = kPrecision == Precision::float32 ? horner(r, kExpPoly) : horner(r, poly_bf16);
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

// erf(z) within 7.4e-8 (0.62 ulp of 1) absolutely, for GELU's forward: no
// division and no exp. |z| in [0, 4) falls in one of 8 intervals of width
// 1/2, on which erf is a degree-6 polynomial in u = |z| - (its midpoint);
// the 7 coefficients of every interval sit in 8-entry tables read by one
// in-register permute each (22 operations, against ~50 for the erfc form of
// normal_cdf_and_gauss with its exp and reciprocal). erf(4) rounds to 1 in
// float. Fitted for this file (least squares toward the minimax absolute
// error in float64 against torch.special.erf, coefficients rounded to
// float, the float evaluation re-checked: 1.7e-8 from the fit, the rest
// rounding). Relative accuracy near 0 is not kept (erf(0) is off by up to
// 7e-8): the callers add erf to 1.
inline VecF32 erf(VecF32 z) {
    static constexpr float c[7][8] = {
        {2.763263881e-01f, 7.111556530e-01f, 9.229001403e-01f, 9.866716862e-01f, 9.985373020e-01f,
         9.998993874e-01f, 9.999957085e-01f, 9.999998808e-01f},
        {1.060013652e+00f, 6.429315209e-01f, 2.365212142e-01f, 5.277483910e-02f, 7.142300252e-03f,
         5.862942198e-04f, 2.919364306e-05f, 8.818861374e-07f},
        {-2.650026381e-01f, -4.821980894e-01f, -2.956519425e-01f, -9.235618263e-02f, -1.607012376e-02f,
         -1.612270135e-03f, -9.487214993e-05f, -3.306468670e-06f},
        {-3.091166317e-01f, 2.672730200e-02f, 1.675232202e-01f, 9.017764777e-02f, 2.172696032e-02f,
         2.758208895e-03f, 1.952195744e-04f, 7.911760804e-06f},
        {1.269209385e-01f, 1.506722420e-01f, -6.124116015e-03f, -4.810649157e-02f, -1.908969320e-02f,
         -3.257592907e-03f, -2.860492386e-04f, -1.376844102e-05f},
        {7.830978185e-02f, -5.126192793e-02f, -4.677867144e-02f, 5.969792139e-03f, 1.058138441e-02f,
         2.825811040e-03f, 3.326122824e-04f, 2.020484862e-05f},
        {-3.919530287e-02f, -2.654669620e-02f, 2.051290683e-02f, 9.059786797e-03f, -2.764193574e-03f,
         -1.669102465e-03f, -2.750406566e-04f, -2.087344365e-05f},
    };
    const VecF32 a = abs(z);
    // min keeps a NaN (its second operand), which then reaches u.
    const VecF32 interval = round_toward_zero(min(VecF32::broadcast(7.0f), a + a));
    const VecU32 index = table_index8(interval);
    const VecF32 u = a - fmadd(interval, VecF32::broadcast(0.5f), VecF32::broadcast(0.25f));
    VecF32 p = lookup8(c[6], index);
    for (int k = 5; k >= 0; --k) p = fmadd(p, u, lookup8(c[k], index));
    return copysign(select(cmp_le(VecF32::broadcast(4.0f), a), VecF32::broadcast(1.0f), p), z);
}

// GELU, x/2 (1 + erf(x / sqrt 2)), PyTorch's formula: erf's absolute error
// is what it adds, at most 0.62 ulp of 1 (x = +inf: inf; -inf: NaN, as
// the float64 reference x/2 erfc(-x / sqrt 2); -0: -0).
inline VecF32 gelu(VecF32 x) {
    const VecF32 half_x = x * VecF32::broadcast(0.5f);
    return half_x * (VecF32::broadcast(1.0f) + erf(x * VecF32::broadcast(0.707106781186547524f)));
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::simd
