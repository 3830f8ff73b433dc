// int8 <-> float32 vocabulary beside simd.h's VecF32, for the quant kernels
// only: widening int8 loads, the rounding int8 store that defines fastnn's
// quantization, and an int32 vector as wide as VecF32 for GEMM epilogues.
// Same rules as simd.h: kernel translation units only, one namespace per ISA.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::qsimd {

using simd::VecF32;
inline constexpr int W = VecF32::width;

// Quantization rounding, shared by every path: NaN -> 0, clamp to the int8
// range in float (bounds are integers, so clamping before rounding equals
// FBGEMM's round-then-clamp), round half to even (the default MXCSR mode, as
// cvtps2dq and nearbyint use).
inline int8_t round_to_i8(float v) {
    if (!(v == v)) return 0;
    v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
    return static_cast<int8_t>(std::nearbyint(v));
}

#if FASTNN_SIMD_AVX512

inline __mmask16 tail16(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline VecF32 abs(VecF32 a) { return {_mm512_abs_ps(a.v)}; }
inline VecF32 load_i8(const int8_t* p) {
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))};
}
inline VecF32 load_i8_partial(const int8_t* p, int n) {
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(tail16(n), p)))};
}
inline __m512i rounded_i32(VecF32 v) {
    const __mmask16 ordered = _mm512_cmp_ps_mask(v.v, v.v, _CMP_ORD_Q);
    const __m512 c = _mm512_min_ps(_mm512_max_ps(v.v, _mm512_set1_ps(-128.0f)), _mm512_set1_ps(127.0f));
    return _mm512_maskz_cvtps_epi32(ordered, c);
}
inline void store_i8(VecF32 v, int8_t* p) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(rounded_i32(v)));
}
inline void store_i8_partial(VecF32 v, int8_t* p, int n) {
    _mm512_mask_cvtepi32_storeu_epi8(p, tail16(n), rounded_i32(v));
}

struct VecI32 {
    __m512i v;
    static VecI32 zero() { return {_mm512_setzero_si512()}; }
    static VecI32 load(const int32_t* p) { return {_mm512_loadu_si512(p)}; }
    static VecI32 load_partial(const int32_t* p, int n) { return {_mm512_maskz_loadu_epi32(tail16(n), p)}; }
    void store(int32_t* p) const { _mm512_storeu_si512(p, v); }
    void store_partial(int32_t* p, int n) const { _mm512_mask_storeu_epi32(p, tail16(n), v); }
    VecF32 to_f32() const { return {_mm512_cvtepi32_ps(v)}; }
};
inline VecI32 operator-(VecI32 a, VecI32 b) { return {_mm512_sub_epi32(a.v, b.v)}; }

#elif FASTNN_SIMD_AVX2

inline VecF32 abs(VecF32 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
inline VecF32 load_i8(const int8_t* p) {
    return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))))};
}
inline VecF32 load_i8_partial(const int8_t* p, int n) {
    int8_t buf[W] = {};
    std::memcpy(buf, p, n);
    return load_i8(buf);
}
inline __m128i rounded_i8x8(VecF32 v) {
    const __m256 ordered = _mm256_cmp_ps(v.v, v.v, _CMP_ORD_Q);
    __m256 c = _mm256_and_ps(v.v, ordered);
    c = _mm256_min_ps(_mm256_max_ps(c, _mm256_set1_ps(-128.0f)), _mm256_set1_ps(127.0f));
    const __m256i i = _mm256_cvtps_epi32(c);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return _mm_packs_epi16(w, w);
}
inline void store_i8(VecF32 v, int8_t* p) { _mm_storel_epi64(reinterpret_cast<__m128i*>(p), rounded_i8x8(v)); }
inline void store_i8_partial(VecF32 v, int8_t* p, int n) {
    int8_t buf[16];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(buf), rounded_i8x8(v));
    std::memcpy(p, buf, n);
}

struct VecI32 {
    __m256i v;
    static VecI32 zero() { return {_mm256_setzero_si256()}; }
    static VecI32 load(const int32_t* p) { return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))}; }
    static VecI32 load_partial(const int32_t* p, int n) {
        int32_t buf[W] = {};
        std::memcpy(buf, p, sizeof(int32_t) * n);
        return load(buf);
    }
    void store(int32_t* p) const { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
    void store_partial(int32_t* p, int n) const {
        int32_t buf[W];
        store(buf);
        std::memcpy(p, buf, sizeof(int32_t) * n);
    }
    VecF32 to_f32() const { return {_mm256_cvtepi32_ps(v)}; }
};
inline VecI32 operator-(VecI32 a, VecI32 b) { return {_mm256_sub_epi32(a.v, b.v)}; }

#else

inline VecF32 abs(VecF32 a) {
    for (float& x : a.v) x = std::fabs(x);
    return a;
}
inline VecF32 load_i8_partial(const int8_t* p, int n) {
    VecF32 r = VecF32::zero();
    for (int i = 0; i < n; ++i) r.v[i] = static_cast<float>(p[i]);
    return r;
}
inline VecF32 load_i8(const int8_t* p) { return load_i8_partial(p, W); }
inline void store_i8_partial(VecF32 v, int8_t* p, int n) {
    for (int i = 0; i < n; ++i) p[i] = round_to_i8(v.v[i]);
}
inline void store_i8(VecF32 v, int8_t* p) { store_i8_partial(v, p, W); }

struct VecI32 {
    int32_t v[W];
    static VecI32 zero() { return {}; }
    static VecI32 load_partial(const int32_t* p, int n) {
        VecI32 r{};
        for (int i = 0; i < n; ++i) r.v[i] = p[i];
        return r;
    }
    static VecI32 load(const int32_t* p) { return load_partial(p, W); }
    void store_partial(int32_t* p, int n) const {
        for (int i = 0; i < n; ++i) p[i] = v[i];
    }
    void store(int32_t* p) const { store_partial(p, W); }
    VecF32 to_f32() const {
        VecF32 r;
        for (int i = 0; i < W; ++i) r.v[i] = static_cast<float>(v[i]);
        return r;
    }
};
// Wrapping subtraction, as the SIMD paths: the compensated result is exact
// modulo 2^32 (see kInt8GemmMaxK).
inline VecI32 operator-(VecI32 a, VecI32 b) {
    VecI32 r;
    for (int i = 0; i < W; ++i)
        r.v[i] = static_cast<int32_t>(static_cast<uint32_t>(a.v[i]) - static_cast<uint32_t>(b.v[i]));
    return r;
}

#endif

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::qsimd
