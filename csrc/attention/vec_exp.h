// e^x on float32 vectors for the softmax inside attention, whose arguments
// are scores minus a maximum at least as large (the running row maximum in
// the forward pass, the log-sum-exp in the backward): x <= 0, -inf for a
// masked or causally cut score, or NaN. Range reduction x = n ln2 + r, |r| <=
// ln2 / 2 (ln2 split in two so n ln2 is exact), then Cephes' degree-6
// polynomial for e^r (about 1 ulp), then a scale by 2^n. The forward pass and
// the backward's recomputation call this one function: their probabilities
// must agree bitwise. Results that would be subnormal (x below about -87.3)
// are flushed to zero on AVX2 and the portable path: in a softmax they are
// below the rounding of any row sum. With x <= 0 nothing overflows, so there
// is no upper clamp or inf blend, and a NaN passes through the clamp and the
// arithmetic (max returns its second operand when either is NaN) without a
// blend of its own: 19 vector operations on AVX2 where a general exp takes 24.
#pragma once

#include <cmath>

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::simd {

inline VecF32 exp_poly(VecF32 r) {
    VecF32 p = VecF32::broadcast(1.9875691500e-4f);
    p = fmadd(p, r, VecF32::broadcast(1.3981999507e-3f));
    p = fmadd(p, r, VecF32::broadcast(8.3334519073e-3f));
    p = fmadd(p, r, VecF32::broadcast(4.1665795894e-2f));
    p = fmadd(p, r, VecF32::broadcast(1.6666665459e-1f));
    p = fmadd(p, r, VecF32::broadcast(5.0000001201e-1f));
    return fmadd(p, r * r, r + VecF32::broadcast(1.0f));
}

#if FASTNN_SIMD_AVX512

inline VecF32 softmax_exp(VecF32 x) {
    // scalef handles subnormal results; the clamp keeps r finite for x =
    // -inf. Lanes below -104 (e^x rounds to 0; every masked or causally cut
    // score is -inf) are zeroed without being scaled: scaled, they underflow,
    // and on Intel cores an underflowing result takes a microcode assist of
    // ~150 cycles (causal attention at 64 keys ran 3x slower than non-causal).
    const MaskF32 rounds_to_zero = cmp_lt(x, VecF32::broadcast(-104.0f));
    x = max(VecF32::broadcast(-150.0f), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x.v, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x.v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    return scale_pow2_or_zero(exp_poly({r}), {n}, rounds_to_zero);
}

#elif FASTNN_SIMD_AVX2

inline VecF32 softmax_exp(VecF32 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f);
    const __m256 underflow = _mm256_cmp_ps(x.v, lo, _CMP_LT_OQ);
    const __m256 xc = _mm256_max_ps(lo, x.v);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return {_mm256_andnot_ps(underflow, _mm256_mul_ps(exp_poly({r}).v, _mm256_castsi256_ps(e)))};
}

#else

inline VecF32 softmax_exp(VecF32 x) {
    VecF32 y;
    for (int i = 0; i < VecF32::width; ++i) y.v[i] = std::exp(x.v[i]);
    return y;
}

#endif

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::simd
