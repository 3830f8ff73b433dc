// Vector operations the optimizer kernels need beyond simd.h's vocabulary.
// Included only from optim_kernels.cpp, so like simd.h everything here is
// compiled per ISA and lives in that ISA's namespace.
#pragma once

#include <cmath>
#include <type_traits>

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::simd {

#if FASTNN_SIMD_AVX512
inline VecF32 sqrt(VecF32 a) { return {_mm512_sqrt_ps(a.v)}; }
#elif FASTNN_SIMD_AVX2
inline VecF32 sqrt(VecF32 a) { return {_mm256_sqrt_ps(a.v)}; }
#else
inline VecF32 sqrt(VecF32 a) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = std::sqrt(a.v[i]);
    return r;
}
#endif

// a*b + c rounded once, as torch's CPU kernels compute it. simd.h's portable
// fmadd rounds twice (baseline x86-64 has no FMA, and fmaf() is a libm call
// per element); here the product of two floats is exact in double, so only
// the rare double rounding of the sum can differ from a true FMA.
inline VecF32 fmadd_once(VecF32 a, VecF32 b, VecF32 c) {
#if FASTNN_SIMD_AVX512 || FASTNN_SIMD_AVX2
    return fmadd(a, b, c);
#else
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i)
        r.v[i] = static_cast<float>(static_cast<double>(a.v[i]) * b.v[i] + c.v[i]);
    return r;
#endif
}

// torch.maximum: NaN when either operand is NaN (x86 max alone drops a NaN
// in its first operand).
inline VecF32 maximum_nan(VecF32 a, VecF32 b) { return select(is_nan(a), a, max(a, b)); }

// torch.lerp on CPU: one fused multiply-add from whichever end is nearer, so
// a weight of exactly 1 returns `end` exactly.
inline VecF32 lerp(VecF32 start, VecF32 end, float weight) {
    const VecF32 diff = end - start;
    if (std::fabs(weight) < 0.5f) return fmadd_once(VecF32::broadcast(weight), diff, start);
    return fmadd_once(VecF32::broadcast(weight - 1.0f), diff, end);
}

// Whole-vector or masked-tail access with one spelling, so an element loop
// body is written once for both (Full is std::true_type / std::false_type).
template <class Full, class T>
inline VecF32 load(const T* p, int n) {
    if constexpr (Full::value) return load_ahead(p);
    else return VecF32::load_partial(p, n);
}

template <class Full, class T>
inline void store(VecF32 v, T* p, int n) {
    if constexpr (Full::value) v.store(p);
    else v.store_partial(p, n);
}

// body(Full, i, n) over [lo, hi) in whole vectors, then one masked tail.
template <class Body>
inline void for_each_vector(int64_t lo, int64_t hi, Body&& body) {
    constexpr int W = VecF32::width;
    int64_t i = lo;
    for (; i + W <= hi; i += W) body(std::true_type{}, i, W);
    if (i < hi) body(std::false_type{}, i, static_cast<int>(hi - i));
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::simd
