// Packing for the GEMM driver: any layout of A and B (row-major, transposed
// view, general strides, float32 or bf16) into the sliver layouts the
// micro-kernels read. Sliver element (k, r) of A (r a row) and of B (r a
// column) sits at (k / KU) * R * KU + r * KU + k % KU, R = MR or NR: KU
// consecutive k of one row or column are adjacent (KU = 2 for the bf16 pair
// dot products, else 1). Padding (rows past M, columns past N, k past an odd
// K) is zero, so the micro-kernel never branches on edges.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastnn/simd.h"
#include "fastnn/simd_transpose.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail {

using simd::VecF32;

// Element (i, j) at data[i * rs + j * cs].
template <class T>
struct Matrix {
    const T* data;
    int64_t rs, cs;
    const T* at(int64_t i, int64_t j) const { return data + i * rs + j * cs; }
};

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

inline void put(float* d, float x) { *d = x; }
inline void put(float* d, bf16 x) { *d = simd::bf16_to_float(x); }
inline void put(bf16* d, bf16 x) { *d = x; }

// A (m x kc) into ceil(m / MR) slivers. Sliver element (k, i) sits at
// (k / KU) * MR * KU + i * KU + k % KU: KU consecutive k of one row are
// adjacent (KU = 2 for the bf16 pair dot products). Padding is zero.
template <int MR, int KU, class P, class T>
void pack_a(const Matrix<T>& a, int64_t m, int64_t kc, P* dst) {
    const int64_t kcp = round_up(kc, KU);
    for (int64_t i0 = 0; i0 < m; i0 += MR, dst += MR * kcp) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, m - i0));
        if (rows < MR || kcp != kc) std::memset(static_cast<void*>(dst), 0, sizeof(P) * MR * kcp);
        if (a.cs == 1) {
            for (int i = 0; i < rows; ++i) {
                const T* src = a.at(i0 + i, 0);
                for (int64_t k = 0; k < kc; ++k) put(dst + (k / KU) * MR * KU + i * KU + k % KU, src[k]);
            }
        } else {
            for (int64_t k = 0; k < kc; ++k) {
                const T* src = a.at(i0, k);
                P* d = dst + (k / KU) * MR * KU + k % KU;
                for (int i = 0; i < rows; ++i) put(d + i * KU, src[i * a.rs]);
            }
        }
    }
}

// pack_a with KU = 1 for float A whose rows are adjacent (unit row stride: a
// transposed view, as grad_out^T in a weight gradient): at one k the block's
// m values are contiguous, copied a sliver's MR (<= width) at a time into
// every sliver, k outermost, so the source is read once in order.
template <int MR>
void pack_a_unit_row_stride(const Matrix<float>& a, int64_t m, int64_t kc, float* dst) {
    static_assert(MR <= VecF32::width, "one vector per sliver and k");
    for (int64_t k = 0; k < kc; ++k) {
        const float* src = a.at(0, k);
        float* d = dst + k * MR;
        for (int64_t i0 = 0; i0 < m; i0 += MR, d += MR * kc) {
            const int rows = static_cast<int>(std::min<int64_t>(MR, m - i0));
            VecF32::load_partial(src + i0, rows).store_partial(d, MR);
        }
    }
}

// B (kc x n) into ceil(n / NR) slivers; element (k, j) of a sliver at
// (k / KU) * NR * KU + j * KU + k % KU.
template <int NR, int KU, class P, class T>
void pack_b(const Matrix<T>& b, int64_t kc, int64_t n, P* dst) {
    using simd::VecF32;
    constexpr int W = VecF32::width;
    const int64_t kcp = round_up(kc, KU);
    for (int64_t j0 = 0; j0 < n; j0 += NR, dst += NR * kcp) {
        const int cols = static_cast<int>(std::min<int64_t>(NR, n - j0));
        if (cols < NR || kcp != kc) std::memset(static_cast<void*>(dst), 0, sizeof(P) * NR * kcp);
        if constexpr (KU == 1 && std::is_same_v<P, float>) {
            if (b.cs == 1 && cols == NR) {
                for (int64_t k = 0; k < kc; ++k) {
                    const T* src = b.at(k, j0);
                    for (int v = 0; v < NR / W; ++v) VecF32::load(src + v * W).store(dst + k * NR + v * W);
                }
                continue;
            }
        }
        if (b.rs == 1) {
            for (int j = 0; j < cols; ++j) {
                const T* src = b.at(0, j0 + j);
                for (int64_t k = 0; k < kc; ++k) put(dst + (k / KU) * NR * KU + j * KU + k % KU, src[k]);
            }
        } else {
            for (int64_t k = 0; k < kc; ++k) {
                const T* src = b.at(k, j0);
                P* d = dst + (k / KU) * NR * KU + k % KU;
                for (int j = 0; j < cols; ++j) put(d + j * KU, src[j * b.cs]);
            }
        }
    }
}

#if FASTNN_SIMD_AVX512 || FASTNN_SIMD_AVX2
// Packs `count` lines of 32-bit elements (line l at src + l * ls, contiguous
// over `len` steps) into slivers of R lines: dst[s][k][r] = line(s R + r)[k],
// zero past the last line and for k in [len, padded_len) (a sliver holds R *
// padded_len elements). This is the packing of a row-major A (lines are
// rows) and of a transposed B (lines are columns), a square block of a
// vector's width (16 x 16 on AVX-512, 8 x 8 on AVX2) at a time through
// registers instead of one strided scalar store per element. With the
// element-by-element packing, the float32 Linear (A row-major, B = weight^T)
// ran at 0.69-0.71x torch on AVX2 where matmul ran at 0.89-0.92x (Zen 3);
// alternated call by call, 512 x 2048 x 2048 and 2048 x 1024 x 1024 take 9%
// less time with the blocks.
template <int R>
void pack_lines_transposed(const float* src, int64_t ls, int64_t count, int64_t len, float* dst,
                           int64_t padded_len = -1) {
    constexpr int B = VecF32::width;
    if (padded_len < len) padded_len = len;
    for (int64_t l0 = 0; l0 < count; l0 += R, dst += R * padded_len) {
        const int lines = static_cast<int>(std::min<int64_t>(R, count - l0));
        for (int g = 0; g < R; g += B) {
            const int group = std::clamp(lines - g, 0, B), width = std::min(B, R - g);
            for (int64_t k0 = 0; k0 < len; k0 += B) {
                const int kn = static_cast<int>(std::min<int64_t>(B, len - k0));
                VecF32 r[B];
                for (int t = 0; t < B; ++t)
                    r[t] = t < group ? simd::load_lanes(src + (l0 + g + t) * ls + k0, kn) : VecF32::zero();
                simd::transpose_square(r);
                for (int k = 0; k < kn; ++k) simd::store_lanes(r[k], dst + (k0 + k) * R + g, width);
            }
        }
        if (padded_len > len) std::memset(dst + len * R, 0, sizeof(float) * R * (padded_len - len));
    }
}
#endif

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail
