// The ISA mapping: one vector vocabulary (VecF32, MaskF32) with an AVX-512, an
// AVX2 and a portable implementation, so a kernel loop is written once and
// compiled per instruction set. Include it only from kernel translation units
// (*_generic.cpp, *_avx2.cpp, *_avx512*.cpp), which CMake compiles with the
// matching -m flags.
//
// Everything here lives in a namespace named after the ISA the translation unit
// is compiled for (FASTNN_ISA_NAMESPACE). Inline functions compiled with
// different target flags must never share a mangled name: the linker keeps one
// copy, and an AVX-512 copy reached from the portable path is an illegal
// instruction on a CPU without it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastnn/tensor.h"

#if defined(__AMX_BF16__)
#define FASTNN_ISA_NAMESPACE amx_bf16
#elif defined(__AMX_INT8__)
#define FASTNN_ISA_NAMESPACE amx_int8
#elif defined(__AVX512BF16__)
#define FASTNN_ISA_NAMESPACE avx512_bf16
#elif defined(__AVX512VNNI__)
#define FASTNN_ISA_NAMESPACE avx512_vnni
#elif defined(__AVX512F__)
#define FASTNN_ISA_NAMESPACE avx512
#elif defined(__AVXVNNI__)
#define FASTNN_ISA_NAMESPACE avx2_vnni
#elif defined(__AVX2__)
#define FASTNN_ISA_NAMESPACE avx2
#else
#define FASTNN_ISA_NAMESPACE generic
#endif

#if defined(__AVX512F__)
#define FASTNN_SIMD_AVX512 1
#elif defined(__AVX2__)
#define FASTNN_SIMD_AVX2 1
#endif

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fastnn::FASTNN_ISA_NAMESPACE::simd {

// Scalar float <-> bfloat16, round to nearest even, NaN kept quiet (as PyTorch).
inline float bf16_to_float(bf16 h) {
    const uint32_t u = static_cast<uint32_t>(h.bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline bf16 float_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return bf16{static_cast<uint16_t>(u >> 16)};
}

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) { return bf16_to_float(x); }
template <class T> inline T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline bf16 from_float<bf16>(float x) { return float_to_bf16(x); }

#if FASTNN_SIMD_AVX512

struct MaskF32 { __mmask16 m; };

struct VecF32 {
    static constexpr int width = 16;
    __m512 v;

    static VecF32 zero() { return {_mm512_setzero_ps()}; }
    static VecF32 broadcast(float x) { return {_mm512_set1_ps(x)}; }
    static VecF32 load(const float* p) { return {_mm512_loadu_ps(p)}; }
    static VecF32 load(const bf16* p) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
    }
    static VecF32 load_partial(const float* p, int n) { return {_mm512_maskz_loadu_ps(tail(n), p)}; }
    static VecF32 load_partial(const bf16* p, int n) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(tail(n), p));
        return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
    }
    void store(float* p) const { _mm512_storeu_ps(p, v); }
    void store(bf16* p) const { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16()); }
    void store_partial(float* p, int n) const { _mm512_mask_storeu_ps(p, tail(n), v); }
    void store_partial(bf16* p, int n) const { _mm256_mask_storeu_epi16(p, tail(n), to_bf16()); }
    // Non-temporal stores (p aligned to the vector's size): no read-for-
    // ownership of the destination line, and the output does not evict the
    // inputs from the caches. Order them with store_fence().
    void stream(float* p) const { _mm512_stream_ps(p, v); }
    void stream(bf16* p) const { _mm256_stream_si256(reinterpret_cast<__m256i*>(p), to_bf16()); }

    static __mmask16 tail(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
    // Round to nearest even in the high half of each lane (NaN: the quiet bit
    // set instead), then one word permute gathers the high halves: fewer
    // operations than shifting down and narrowing with vpmovdw.
    __m256i to_bf16() const {
        const __m512i u = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
        const __m512i high_words = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 31, 29, 27, 25,
                                                    23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        return _mm512_castsi512_si256(_mm512_permutexvar_epi16(high_words, r));
    }
};

inline VecF32 operator+(VecF32 a, VecF32 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline VecF32 operator-(VecF32 a, VecF32 b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline VecF32 operator*(VecF32 a, VecF32 b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline VecF32 operator/(VecF32 a, VecF32 b) { return {_mm512_div_ps(a.v, b.v)}; }
// 1/a within 2^-14 relative (a quarter of a division's issue cost); 0 at inf.
inline VecF32 reciprocal_estimate(VecF32 a) { return {_mm512_rcp14_ps(a.v)}; }
inline VecF32 fmadd(VecF32 a, VecF32 b, VecF32 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline VecF32 fnmadd(VecF32 a, VecF32 b, VecF32 c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }
// a*b - p exactly, for p = fl(a*b) (the rounding error of a product; TwoProd).
inline VecF32 product_error(VecF32 a, VecF32 b, VecF32 p) { return {_mm512_fmsub_ps(a.v, b.v, p.v)}; }
// max/min return b when either is NaN (x86 semantics): pass the value whose
// NaN must propagate as b.
inline VecF32 max(VecF32 a, VecF32 b) { return {_mm512_max_ps(a.v, b.v)}; }
inline VecF32 min(VecF32 a, VecF32 b) { return {_mm512_min_ps(a.v, b.v)}; }
inline MaskF32 cmp_le(VecF32 a, VecF32 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ)}; }
inline MaskF32 cmp_lt(VecF32 a, VecF32 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
inline VecF32 select(MaskF32 m, VecF32 a, VecF32 b) { return {_mm512_mask_blend_ps(m.m, b.v, a.v)}; }
inline float reduce_add(VecF32 a) { return _mm512_reduce_add_ps(a.v); }
inline void store_fence() { _mm_sfence(); }
inline float reduce_max(VecF32 a) { return _mm512_reduce_max_ps(a.v); }

// Building blocks of the vector math in simd_math.h.
inline VecF32 abs(VecF32 a) { return {_mm512_abs_ps(a.v)}; }
// |mag| with the sign bit of sgn (ternary logic 0xca: m ? mag : sgn, bitwise).
inline VecF32 copysign(VecF32 mag, VecF32 sgn) {
    const __m512i m = _mm512_set1_epi32(0x7fffffff);
    return {_mm512_castsi512_ps(_mm512_ternarylogic_epi32(m, _mm512_castps_si512(mag.v),
                                                          _mm512_castps_si512(sgn.v), 0xca))};
}
inline MaskF32 is_nan(VecF32 a) { return {_mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q)}; }
inline MaskF32 operator|(MaskF32 a, MaskF32 b) { return {static_cast<__mmask16>(a.m | b.m)}; }
inline bool any(MaskF32 a) { return a.m != 0; }
inline VecF32 round_nearest(VecF32 a) {
    return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline VecF32 round_toward_zero(VecF32 a) {
    return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)};
}
// 2^n for integer-valued n in [-126, 127].
inline VecF32 pow2i(VecF32 n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
// p * 2^n for integer-valued n, rounded once: vscalefps covers the whole
// exponent range (subnormal results, overflow to inf) in one instruction.
inline VecF32 scale_pow2(VecF32 p, VecF32 n) { return {_mm512_scalef_ps(p.v, n.v)}; }
// scale_pow2, and 0 in the lanes of `zero` without computing them: a lane
// whose result underflows costs a microcode assist (~150 cycles) on Intel
// cores, and masked-off lanes are not computed.
inline VecF32 scale_pow2_or_zero(VecF32 p, VecF32 n, MaskF32 zero) {
    return {_mm512_maskz_scalef_ps(static_cast<__mmask16>(~zero.m), p.v, n.v)};
}

// 32-bit unsigned lanes, one per float lane: the counter arithmetic of
// counter-based random number generators.
struct VecU32 {
    static constexpr int width = VecF32::width;
    __m512i v;

    static VecU32 broadcast(uint32_t x) { return {_mm512_set1_epi32(static_cast<int>(x))}; }
    static VecU32 lane_index() {
        return {_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)};
    }
};
inline VecU32 operator+(VecU32 a, VecU32 b) { return {_mm512_add_epi32(a.v, b.v)}; }
inline VecU32 operator^(VecU32 a, VecU32 b) { return {_mm512_xor_si512(a.v, b.v)}; }
inline VecU32 operator>>(VecU32 a, int n) { return {_mm512_srli_epi32(a.v, static_cast<unsigned>(n))}; }
inline VecU32 mul_lo(VecU32 a, VecU32 b) { return {_mm512_mullo_epi32(a.v, b.v)}; }
// High 32 bits of the 64-bit products: vpmuludq multiplies the even lanes,
// so the odd lanes are shifted down, multiplied, and blended back.
inline VecU32 mul_hi(VecU32 a, VecU32 b) {
    const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a.v, b.v), 32);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a.v, 32), _mm512_srli_epi64(b.v, 32));
    return {_mm512_mask_blend_epi32(0xaaaa, even, odd)};
}
// Signed comparison: exact for values below 2^31.
inline MaskF32 cmp_lt(VecU32 a, VecU32 b) { return {_mm512_cmplt_epi32_mask(a.v, b.v)}; }

// The lane-wise index trunc(i) of a float i in [0, 8) (other i, NaN
// included: an index whose table entry is unspecified), and the entries of
// an 8-float table at such indices: one in-register permute, the table
// repeated in both halves so that only the index's low 3 bits count.
inline VecU32 table_index8(VecF32 i) { return {_mm512_cvttps_epi32(i.v)}; }
inline VecF32 lookup8(const float (&table)[8], VecU32 index) {
    return {_mm512_permutexvar_ps(index.v, _mm512_broadcast_f32x8(_mm256_loadu_ps(table)))};
}

#elif FASTNN_SIMD_AVX2

struct MaskF32 { __m256 m; };

struct VecF32 {
    static constexpr int width = 8;
    __m256 v;

    static VecF32 zero() { return {_mm256_setzero_ps()}; }
    static VecF32 broadcast(float x) { return {_mm256_set1_ps(x)}; }
    static VecF32 load(const float* p) { return {_mm256_loadu_ps(p)}; }
    static VecF32 load(const bf16* p) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
    }
    // The first n lanes of a row: lanes past n are neither read nor written,
    // so a row's end may be the end of a page. Loads take vmaskmovps; a copy
    // through a stack buffer (a memcpy call) made the compiler spill every
    // vector register around the call in the loops that take it.
    static __m256i first_lanes(int n) {
        alignas(32) static constexpr int32_t kOnesThenZeros[2 * width] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                                          0,  0,  0,  0,  0,  0,  0,  0};
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kOnesThenZeros + width - n));
    }
    static VecF32 load_partial(const float* p, int n) {
        if (n == width) return load(p);
        return {_mm256_maskload_ps(p, first_lanes(n))};
    }
    static VecF32 load_partial(const bf16* p, int n) {
        if (n == width) return load(p);
        bf16 buf[width] = {};
        std::memcpy(buf, p, sizeof(bf16) * n);
        return load(buf);
    }
    void store(float* p) const { _mm256_storeu_ps(p, v); }
    void store(bf16* p) const { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), to_bf16()); }
    void stream(float* p) const { _mm256_stream_ps(p, v); }
    void stream(bf16* p) const { _mm_stream_si128(reinterpret_cast<__m128i*>(p), to_bf16()); }
    // A vmaskmovps store is microcoded on AMD Zen 2/3: ~20 cycles a vector
    // against under one for vmovups (Zen 3, measured), and the 6-lane sliver
    // stores of GEMM packing or a dropout block's vectors took one each. The
    // lanes go out instead as at most one 4-, one 2- and one 1-lane store.
    void store_partial(float* p, int n) const {
        if (n == width) return store(p);
        __m128 part = _mm256_castps256_ps128(v);
        if (n & 4) {
            _mm_storeu_ps(p, part);
            part = _mm256_extractf128_ps(v, 1);
            p += 4;
        }
        if (n & 2) {
            _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
            part = _mm_movehl_ps(part, part);
            p += 2;
        }
        if (n & 1) _mm_store_ss(p, part);
    }
    void store_partial(bf16* p, int n) const {
        if (n == width) return store(p);
        bf16 buf[width];
        store(buf);
        std::memcpy(p, buf, sizeof(bf16) * n);
    }

    __m128i to_bf16() const {
        const __m256i u = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
        const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
        r = _mm256_blendv_epi8(r, quiet, _mm256_castps_si256(nan));
        // Values are < 2^16, so the unsigned-saturating pack is exact; it packs
        // within 128-bit lanes, and the permute brings the halves together.
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xd8);
        return _mm256_castsi256_si128(packed);
    }
};

inline VecF32 operator+(VecF32 a, VecF32 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline VecF32 operator-(VecF32 a, VecF32 b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline VecF32 operator*(VecF32 a, VecF32 b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline VecF32 operator/(VecF32 a, VecF32 b) { return {_mm256_div_ps(a.v, b.v)}; }
// 1/a within 1.5 * 2^-12 relative; 0 at inf.
inline VecF32 reciprocal_estimate(VecF32 a) { return {_mm256_rcp_ps(a.v)}; }
inline VecF32 fmadd(VecF32 a, VecF32 b, VecF32 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline VecF32 fnmadd(VecF32 a, VecF32 b, VecF32 c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
inline VecF32 product_error(VecF32 a, VecF32 b, VecF32 p) { return {_mm256_fmsub_ps(a.v, b.v, p.v)}; }
inline VecF32 max(VecF32 a, VecF32 b) { return {_mm256_max_ps(a.v, b.v)}; }
inline VecF32 min(VecF32 a, VecF32 b) { return {_mm256_min_ps(a.v, b.v)}; }
inline MaskF32 cmp_le(VecF32 a, VecF32 b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ)}; }
inline MaskF32 cmp_lt(VecF32 a, VecF32 b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
inline VecF32 select(MaskF32 m, VecF32 a, VecF32 b) { return {_mm256_blendv_ps(b.v, a.v, m.m)}; }
inline void store_fence() { _mm_sfence(); }
inline float reduce_add(VecF32 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline float reduce_max(VecF32 a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline VecF32 abs(VecF32 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
inline VecF32 copysign(VecF32 mag, VecF32 sgn) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    return {_mm256_or_ps(_mm256_andnot_ps(sign, mag.v), _mm256_and_ps(sign, sgn.v))};
}
inline MaskF32 is_nan(VecF32 a) { return {_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q)}; }
inline MaskF32 operator|(MaskF32 a, MaskF32 b) { return {_mm256_or_ps(a.m, b.m)}; }
inline bool any(MaskF32 a) { return _mm256_movemask_ps(a.m) != 0; }
inline VecF32 round_nearest(VecF32 a) {
    return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline VecF32 round_toward_zero(VecF32 a) {
    return {_mm256_round_ps(a.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)};
}
inline VecF32 pow2i(VecF32 n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}

struct VecU32 {
    static constexpr int width = VecF32::width;
    __m256i v;

    static VecU32 broadcast(uint32_t x) { return {_mm256_set1_epi32(static_cast<int>(x))}; }
    static VecU32 lane_index() { return {_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)}; }
};
inline VecU32 operator+(VecU32 a, VecU32 b) { return {_mm256_add_epi32(a.v, b.v)}; }
inline VecU32 operator^(VecU32 a, VecU32 b) { return {_mm256_xor_si256(a.v, b.v)}; }
inline VecU32 operator>>(VecU32 a, int n) { return {_mm256_srli_epi32(a.v, n)}; }
inline VecU32 mul_lo(VecU32 a, VecU32 b) { return {_mm256_mullo_epi32(a.v, b.v)}; }
inline VecU32 mul_hi(VecU32 a, VecU32 b) {
    const __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(a.v, b.v), 32);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a.v, 32), _mm256_srli_epi64(b.v, 32));
    return {_mm256_blend_epi32(even, odd, 0xaa)};
}
inline MaskF32 cmp_lt(VecU32 a, VecU32 b) { return {_mm256_castsi256_ps(_mm256_cmpgt_epi32(b.v, a.v))}; }
inline VecU32 table_index8(VecF32 i) { return {_mm256_cvttps_epi32(i.v)}; }
inline VecF32 lookup8(const float (&table)[8], VecU32 index) {
    return {_mm256_permutevar8x32_ps(_mm256_loadu_ps(table), index.v)};
}

#else  // portable: fixed-width arrays the compiler may auto-vectorize

struct MaskF32 { bool m[8]; };

struct VecF32 {
    static constexpr int width = 8;
    float v[width];

    static VecF32 zero() { return broadcast(0.0f); }
    static VecF32 broadcast(float x) {
        VecF32 r;
        for (int i = 0; i < width; ++i) r.v[i] = x;
        return r;
    }
    template <class T>
    static VecF32 load(const T* p) { return load_partial(p, width); }
    template <class T>
    static VecF32 load_partial(const T* p, int n) {
        VecF32 r = zero();
        for (int i = 0; i < n; ++i) r.v[i] = to_float(p[i]);
        return r;
    }
    template <class T>
    void store(T* p) const { store_partial(p, width); }
    template <class T>
    void store_partial(T* p, int n) const {
        for (int i = 0; i < n; ++i) p[i] = from_float<T>(v[i]);
    }
    template <class T>
    void stream(T* p) const { store(p); }
};

#define FASTNN_GENERIC_BINARY(name, expr)                        \
    inline VecF32 name(VecF32 a, VecF32 b) {                     \
        VecF32 r;                                                \
        for (int i = 0; i < VecF32::width; ++i) r.v[i] = (expr); \
        return r;                                                \
    }
FASTNN_GENERIC_BINARY(operator+, a.v[i] + b.v[i])
FASTNN_GENERIC_BINARY(operator-, a.v[i] - b.v[i])
FASTNN_GENERIC_BINARY(operator*, a.v[i] * b.v[i])
FASTNN_GENERIC_BINARY(operator/, a.v[i] / b.v[i])
// Same NaN rule as the x86 instructions: b when either is NaN.
FASTNN_GENERIC_BINARY(max, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
FASTNN_GENERIC_BINARY(min, a.v[i] < b.v[i] ? a.v[i] : b.v[i])
#undef FASTNN_GENERIC_BINARY
// 1/a (exact here; the x86 paths' estimates are within 2^-12 relative).
inline VecF32 reciprocal_estimate(VecF32 a) { return VecF32::broadcast(1.0f) / a; }

// Baseline x86-64 has no FMA instruction, and fmaf() would be a libm call per
// element; the portable path multiplies and adds (two roundings).
inline VecF32 fmadd(VecF32 a, VecF32 b, VecF32 c) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
}
inline VecF32 fnmadd(VecF32 a, VecF32 b, VecF32 c) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = c.v[i] - a.v[i] * b.v[i];
    return r;
}
// The product of two floats is exact in double, and so is its difference
// from the rounded product (that error is itself a float).
inline VecF32 product_error(VecF32 a, VecF32 b, VecF32 p) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = static_cast<float>(double(a.v[i]) * b.v[i] - p.v[i]);
    return r;
}
inline MaskF32 cmp_le(VecF32 a, VecF32 b) {
    MaskF32 m;
    for (int i = 0; i < VecF32::width; ++i) m.m[i] = a.v[i] <= b.v[i];
    return m;
}
inline MaskF32 cmp_lt(VecF32 a, VecF32 b) {
    MaskF32 m;
    for (int i = 0; i < VecF32::width; ++i) m.m[i] = a.v[i] < b.v[i];
    return m;
}
inline VecF32 select(MaskF32 m, VecF32 a, VecF32 b) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = m.m[i] ? a.v[i] : b.v[i];
    return r;
}
inline void store_fence() {}
inline float reduce_add(VecF32 a) {
    float s = 0.0f;
    for (int i = 0; i < VecF32::width; ++i) s += a.v[i];
    return s;
}
inline float reduce_max(VecF32 a) {
    float s = a.v[0];
    for (int i = 1; i < VecF32::width; ++i) s = a.v[i] > s ? a.v[i] : s;
    return s;
}

inline VecF32 abs(VecF32 a) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = std::fabs(a.v[i]);
    return r;
}
inline VecF32 copysign(VecF32 mag, VecF32 sgn) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = std::copysign(mag.v[i], sgn.v[i]);
    return r;
}
inline MaskF32 is_nan(VecF32 a) {
    MaskF32 m;
    for (int i = 0; i < VecF32::width; ++i) m.m[i] = a.v[i] != a.v[i];
    return m;
}
inline MaskF32 operator|(MaskF32 a, MaskF32 b) {
    MaskF32 m;
    for (int i = 0; i < VecF32::width; ++i) m.m[i] = a.m[i] || b.m[i];
    return m;
}
inline bool any(MaskF32 a) {
    for (int i = 0; i < VecF32::width; ++i)
        if (a.m[i]) return true;
    return false;
}
inline VecF32 round_nearest(VecF32 a) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = std::nearbyint(a.v[i]);
    return r;
}
inline VecF32 round_toward_zero(VecF32 a) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) r.v[i] = std::trunc(a.v[i]);
    return r;
}
// Out-of-range or NaN n gives a finite power here (the float-to-int
// conversion of those is undefined in C++); callers mask such lanes anyway.
inline VecF32 pow2i(VecF32 n) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i) {
        const float c = n.v[i] >= -126.0f ? (n.v[i] <= 127.0f ? n.v[i] : 127.0f) : -126.0f;
        const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(c) + 127) << 23;
        std::memcpy(&r.v[i], &bits, sizeof bits);
    }
    return r;
}

struct VecU32 {
    static constexpr int width = VecF32::width;
    uint32_t v[width];

    static VecU32 broadcast(uint32_t x) {
        VecU32 r;
        for (int i = 0; i < width; ++i) r.v[i] = x;
        return r;
    }
    static VecU32 lane_index() {
        VecU32 r;
        for (int i = 0; i < width; ++i) r.v[i] = static_cast<uint32_t>(i);
        return r;
    }
};
#define FASTNN_GENERIC_U32(name, expr)                           \
    inline VecU32 name(VecU32 a, VecU32 b) {                     \
        VecU32 r;                                                \
        for (int i = 0; i < VecU32::width; ++i) r.v[i] = (expr); \
        return r;                                                \
    }
FASTNN_GENERIC_U32(operator+, a.v[i] + b.v[i])
FASTNN_GENERIC_U32(operator^, a.v[i] ^ b.v[i])
FASTNN_GENERIC_U32(mul_lo, a.v[i] * b.v[i])
FASTNN_GENERIC_U32(mul_hi, static_cast<uint32_t>((uint64_t(a.v[i]) * b.v[i]) >> 32))
#undef FASTNN_GENERIC_U32
inline VecU32 operator>>(VecU32 a, int n) {
    VecU32 r;
    for (int i = 0; i < VecU32::width; ++i) r.v[i] = a.v[i] >> n;
    return r;
}
inline MaskF32 cmp_lt(VecU32 a, VecU32 b) {
    MaskF32 m;
    for (int i = 0; i < VecU32::width; ++i) m.m[i] = static_cast<int32_t>(a.v[i]) < static_cast<int32_t>(b.v[i]);
    return m;
}
inline VecU32 table_index8(VecF32 i) {
    VecU32 r;
    for (int k = 0; k < VecU32::width; ++k)
        r.v[k] = i.v[k] >= 0.0f && i.v[k] < 8.0f ? static_cast<uint32_t>(i.v[k]) : 0u;
    return r;
}
inline VecF32 lookup8(const float (&table)[8], VecU32 index) {
    VecF32 r;
    for (int k = 0; k < VecF32::width; ++k) r.v[k] = table[index.v[k] & 7u];
    return r;
}

#endif

#if !FASTNN_SIMD_AVX512
// p * 2^n for integer-valued n in [-150, 128], as two factors so that each
// stays a normal power of two and a subnormal result is rounded once.
inline VecF32 scale_pow2(VecF32 p, VecF32 n) {
    const VecF32 n1 = round_nearest(n * VecF32::broadcast(0.5f));
    return p * pow2i(n1) * pow2i(n - n1);
}
// scale_pow2, and 0 in the lanes of `zero`, which are scaled by 2^0 so that
// none underflows (an underflowing result costs a microcode assist on Intel
// cores). A vector with no zero lane and every n in [-126, 127] (2^n a normal
// float: every exp argument from -87.3 to 88, which is nearly all of them)
// takes one multiply by 2^n instead, the same bits (each way rounds once)
// for 5 vector operations and a branch instead of 13.
inline VecF32 scale_pow2_or_zero(VecF32 p, VecF32 n, MaskF32 zero) {
    const MaskF32 outside = cmp_lt(n, VecF32::broadcast(-126.0f)) | cmp_lt(VecF32::broadcast(127.0f), n);
    if (!any(zero | outside)) return p * pow2i(n);
    return select(zero, VecF32::zero(), scale_pow2(p, select(zero, VecF32::zero(), n)));
}
#endif

// A vector load of a stream that also requests the line kStreamPrefetchBytes
// ahead. Some machines' hardware prefetchers do not keep a slow stream
// ahead of its loop: on an Intel Xeon VM (2 cores), bf16 sigmoid over an
// 8 MB DRAM-resident input ran at 2.6 ms without it and 0.92 ms with it (0.9
// ms from cache); float32 1.8 -> 1.0 ms. 2 KB is about one DRAM latency of
// the slowest loops (~20 cycles per 64-byte vector).
inline constexpr int kStreamPrefetchBytes = 2048;
// The first n lanes (n <= width; the rest zero), a whole vector when n is
// the width: the last, partial vector of a row.
template <class T>
inline VecF32 load_lanes(const T* p, int n) {
    return n == VecF32::width ? VecF32::load(p) : VecF32::load_partial(p, n);
}

template <class T>
inline void store_lanes(VecF32 v, T* p, int n) {
    if (n == VecF32::width) v.store(p);
    else v.store_partial(p, n);
}

template <class T>
inline VecF32 load_ahead(const T* p) {
    __builtin_prefetch(reinterpret_cast<const char*>(p) + kStreamPrefetchBytes, 0, 3);
    return VecF32::load(p);
}

// A float64 sum per lane of float32 vectors: the conversions are exact, so a
// row of floats summed this way is rounded at 53 bits, not at each addition
// (the LayerNorm mean, the average pools' windows). Two independent float64
// vectors per add.
struct LaneSumF64 {
#if FASTNN_SIMD_AVX512
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    void add(VecF32 v) {
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v.v)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v.v), 1))));
    }
    // += v * s, one rounding per lane.
    void add_scaled(VecF32 v, double s) {
        const __m512d sv = _mm512_set1_pd(s);
        lo = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v.v)), sv, lo);
        hi = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v.v), 1))), sv, hi);
    }
    // += p[0, width); store writes the lanes to p[0, width).
    void add(const double* p) {
        lo = _mm512_add_pd(lo, _mm512_loadu_pd(p));
        hi = _mm512_add_pd(hi, _mm512_loadu_pd(p + 8));
    }
    void store(double* p) const {
        _mm512_storeu_pd(p, lo);
        _mm512_storeu_pd(p + 8, hi);
    }
    double total() const { return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)); }
    // Each lane's sum times s, rounded to float.
    VecF32 scaled(double s) const {
        const __m512d sv = _mm512_set1_pd(s);
        const __m256 l = _mm512_cvtpd_ps(_mm512_mul_pd(lo, sv)), h = _mm512_cvtpd_ps(_mm512_mul_pd(hi, sv));
        return {_mm512_insertf32x8(_mm512_castps256_ps512(l), h, 1)};
    }
#elif FASTNN_SIMD_AVX2
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    void add(VecF32 v) {
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v.v)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v.v, 1)));
    }
    void add_scaled(VecF32 v, double s) {
        const __m256d sv = _mm256_set1_pd(s);
        lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v.v)), sv, lo);
        hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v.v, 1)), sv, hi);
    }
    void add(const double* p) {
        lo = _mm256_add_pd(lo, _mm256_loadu_pd(p));
        hi = _mm256_add_pd(hi, _mm256_loadu_pd(p + 4));
    }
    void store(double* p) const {
        _mm256_storeu_pd(p, lo);
        _mm256_storeu_pd(p + 4, hi);
    }
    double total() const {
        double lanes[4];
        _mm256_storeu_pd(lanes, _mm256_add_pd(lo, hi));
        return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    }
    VecF32 scaled(double s) const {
        const __m256d sv = _mm256_set1_pd(s);
        return {_mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(hi, sv)), _mm256_cvtpd_ps(_mm256_mul_pd(lo, sv)))};
    }
#else
    double lanes[VecF32::width] = {};
    void add(VecF32 v) {
        for (int i = 0; i < VecF32::width; ++i) lanes[i] += double(v.v[i]);
    }
    void add_scaled(VecF32 v, double s) {
        for (int i = 0; i < VecF32::width; ++i) lanes[i] += double(v.v[i]) * s;
    }
    void add(const double* p) {
        for (int i = 0; i < VecF32::width; ++i) lanes[i] += p[i];
    }
    void store(double* p) const {
        for (int i = 0; i < VecF32::width; ++i) p[i] = lanes[i];
    }
    double total() const {
        double t = 0.0;
        for (int i = 0; i < VecF32::width; ++i) t += lanes[i];
        return t;
    }
    VecF32 scaled(double s) const {
        VecF32 r;
        for (int i = 0; i < VecF32::width; ++i) r.v[i] = static_cast<float>(lanes[i] * s);
        return r;
    }
#endif
};

// p[i] += double(v[i]) for the first n lanes: float partial sums joining a
// float64 total (the norm layers' parameter gradients, summed over rows).
inline void add_to_double(double* p, VecF32 v, int n) {
#if FASTNN_SIMD_AVX512
    if (n == VecF32::width) {
        const __m256 lo = _mm512_castps512_ps256(v.v);
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v.v), 1));
        _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p), _mm512_cvtps_pd(lo)));
        _mm512_storeu_pd(p + 8, _mm512_add_pd(_mm512_loadu_pd(p + 8), _mm512_cvtps_pd(hi)));
        return;
    }
#elif FASTNN_SIMD_AVX2
    if (n == VecF32::width) {
        _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), _mm256_cvtps_pd(_mm256_castps256_ps128(v.v))));
        _mm256_storeu_pd(p + 4, _mm256_add_pd(_mm256_loadu_pd(p + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v.v, 1))));
        return;
    }
#endif
    float lanes[VecF32::width];
    v.store(lanes);
    for (int i = 0; i < n; ++i) p[i] += double(lanes[i]);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::simd
