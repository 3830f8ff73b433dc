// Transposes of 32-bit data through registers, shared by the layout changes
// of GEMM packing, planar convolution and the attention backward's prepass:
// one 16 x 16 block is 16 loads, 64 shuffles and 16 stores on AVX-512 (an
// 8 x 8 block 8 loads, 24 shuffles and 8 stores on AVX2), where the scalar
// form is one strided store per element, one store-port cycle each.
//
// Same namespace rule as simd.h: include only from per-ISA kernel files.
#pragma once

#include <cstdint>

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::simd {

#if FASTNN_SIMD_AVX512
// In-register transpose of 16 rows of 16 floats (or any 32-bit data: the
// shuffles move bits unchanged): r[j] becomes column j.
inline void transpose16x16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 2; ++i) {
        for (int c = 0; c < 4; ++c) {
            t[8 * i + c] = _mm512_shuffle_f32x4(r[8 * i + c], r[8 * i + 4 + c], 0x88);
            t[8 * i + 4 + c] = _mm512_shuffle_f32x4(r[8 * i + c], r[8 * i + 4 + c], 0xDD);
        }
    }
    for (int c = 0; c < 8; ++c) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD);
    }
}
#elif FASTNN_SIMD_AVX2
// In-register transpose of 8 rows of 8 floats: r[j] becomes column j. Pairs
// of rows interleave, then quarters (columns c and c + 4 of four rows in
// the two 128-bit halves), then the halves of rows 0-3 and 4-7 join.
inline void transpose8x8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; ++c) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}
#endif

#if FASTNN_SIMD_AVX512 || FASTNN_SIMD_AVX2
// r[j] becomes column j of the square block of VecF32::width rows.
inline void transpose_square(VecF32 (&r)[VecF32::width]) {
#if FASTNN_SIMD_AVX512
    __m512 m[16];
    for (int i = 0; i < 16; ++i) m[i] = r[i].v;
    transpose16x16(m);
    for (int i = 0; i < 16; ++i) r[i].v = m[i];
#else
    __m256 m[8];
    for (int i = 0; i < 8; ++i) m[i] = r[i].v;
    transpose8x8(m);
    for (int i = 0; i < 8; ++i) r[i].v = m[i];
#endif
}
#endif

// dst[j * ld + i] = src[i * ls + j] for i < rows, j < cols (both <= 16);
// through registers on AVX-512.
inline void transpose_block(const float* src, int64_t ls, int rows, int cols, float* dst, int64_t ld) {
#if FASTNN_SIMD_AVX512
    const __mmask16 in = static_cast<__mmask16>((1u << cols) - 1u), out = static_cast<__mmask16>((1u << rows) - 1u);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(in, src + i * ls) : _mm512_setzero_ps();
    transpose16x16(r);
    for (int j = 0; j < cols; ++j) _mm512_mask_storeu_ps(dst + j * ld, out, r[j]);
#else
    for (int j = 0; j < cols; ++j)
        for (int i = 0; i < rows; ++i) dst[j * ld + i] = src[i * ls + j];
#endif
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::simd
