// Vector transcendental functions on the VecF32 vocabulary, written once for
// every ISA. Each is a range reduction plus a polynomial evaluated with FMAs
// (Horner), accurate to about 1 ulp over the whole float range (tested against
// float64 on extreme inputs by tests/test_activation.py). NaN propagates; the
// limits at +-inf are exact.
//
// Coefficients: exp is Sleef's expf (Cody-Waite reduction by ln 2, degree-6
// polynomial on |r| <= ln2/2). tanh and the error-function pieces were fitted
// for this file (iteratively reweighted least squares toward the minimax
// polynomial in float64 against mpmath, coefficients rounded to float and the
// float evaluation re-checked): tanh on [0, 0.625] (0.63 ulp), erf on [0, 1)
// (0.96 ulp with the leading coefficient kept as a float pair), and
// log(erfc(a) / t) + a^2 in t = 1/(1 + a/2) for a in [1, 10], the
// Numerical-Recipes form of erfc, refitted.
//
// Same namespace rule as simd.h: include only from per-ISA kernel files.
#pragma once

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::simd {

template <int N>
inline VecF32 horner(VecF32 x, const float (&c)[N]) {
    VecF32 acc = VecF32::broadcast(c[N - 1]);
    for (int i = N - 2; i >= 0; --i) acc = fmadd(acc, x, VecF32::broadcast(c[i]));
    return acc;
}

// e^x. The argument is clamped to [-104, 89] first: below, the result rounds
// to 0 (e^-104 < half the smallest subnormal); above, it overflows to inf
// (e^88.73 > FLT_MAX). min/max keep NaN (they return their second operand
// when either is NaN). 2^n (n in [-150, 128]) is applied by scale_pow2,
// rounding a subnormal result once.
inline VecF32 exp(VecF32 x) {
    static constexpr float poly[] = {0.5f, 0.166666671633720397949219f, 0.0416664853692054748535156f,
                                     0.00833336077630519866943359f, 0.00139304355252534151077271f,
                                     0.000198527617612853646278381f};
    x = min(VecF32::broadcast(89.0f), max(VecF32::broadcast(-104.0f), x));
    const VecF32 n = round_nearest(x * VecF32::broadcast(1.44269504088896341f));
    // ln 2 split: the high part has 16 significant bits, so n * hi is exact.
    VecF32 r = fmadd(n, VecF32::broadcast(-0.693145751953125f), x);
    r = fmadd(n, VecF32::broadcast(-1.428606765330187045e-06f), r);
    const VecF32 p = fmadd(r * r, horner(r, poly), r) + VecF32::broadcast(1.0f);
    return scale_pow2(p, n);
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
inline SigmoidPair sigmoid_pair(VecF32 x) {
    const VecF32 e = exp(VecF32::zero() - abs(x));
    const VecF32 big = VecF32::broadcast(1.0f) / (VecF32::broadcast(1.0f) + e);
    const VecF32 tiny = e * big;
    const MaskF32 negative = cmp_lt(x, VecF32::zero());
    return {select(negative, tiny, big), select(negative, big, tiny)};
}
inline VecF32 sigmoid(VecF32 x) { return sigmoid_pair(x).pos; }

// Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF. With a = |z|:
// below 1, erf(z) = z (c0 + z^2 P(z^2)); from 1 up, the tails are computed as
// erfc(a) = t e^(Q(t) - a^2), t = 1/(1 + a/2), so Phi(x) for x << 0 keeps its
// relative accuracy instead of cancelling in 1 + erf (PyTorch's formula) and
// reaches 0 only when it underflows.
inline VecF32 normal_cdf(VecF32 x) {
    static constexpr float erf_poly[] = {-0.37612637877464294f, 0.11283783614635468f, -0.026865506544709206f,
                                         0.005221235100179911f, -0.0008486949955113232f, 0.00011286431254120544f,
                                         -9.724985829961952e-06f};
    static constexpr float erfc_poly[] = {-1.2655282020568848f, 1.0004870891571045f, 0.3685678541660309f,
                                          0.13197383284568787f, -0.3180748522281647f, 0.5798279643058777f,
                                          -1.553208827972412f, 1.8252360820770264f, -0.9603930711746216f,
                                          0.19081376492977142f};
    const VecF32 half = VecF32::broadcast(0.5f), one = VecF32::broadcast(1.0f);
    const VecF32 z = x * VecF32::broadcast(0.707106781186547524f);
    const VecF32 a = abs(z);
    const VecF32 a2 = a * a;
    // 2/sqrt(pi) = c0 + c0_lo; the pair keeps the leading term's rounding out.
    const VecF32 q = fmadd(a2, horner(a2, erf_poly), VecF32::broadcast(-5.8635382771399236e-08f));
    const VecF32 erf_z = copysign(fmadd(a, VecF32::broadcast(1.128379225730896f), a * q), z);
    const VecF32 t = one / fmadd(a, half, one);
    const VecF32 erfc_a = t * exp(horner(t, erfc_poly) - a2);
    const VecF32 tail = select(cmp_lt(z, VecF32::zero()), half * erfc_a, fmadd(VecF32::zero() - half, erfc_a, one));
    return select(cmp_lt(a, one), fmadd(half, erf_z, half), tail);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::simd
