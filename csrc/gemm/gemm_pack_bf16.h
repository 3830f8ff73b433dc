// Packing of bf16 operands into k-pair slivers, shared by the AVX512_BF16
// (vdpbf16ps) and AMX (tdpbf16ps) kernels, which both multiply pairs of bf16
// and add both products to one float32: a 32-bit unit of a packed sliver
// holds (X[k, r], X[k+1, r]), units ordered by k pair, then by line r.
// Slivers hold `kcp` k (even, >= kc): pairs past kc are zero, so a kernel
// that steps K in larger chunks than the caller's K still adds only zeros.
// Compiled into each including translation unit's own namespace (simd.h).
#pragma once

#include <cstring>

#include "gemm_pack.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail {

// Lines (rows of A, columns of B) contiguous over K hold their k pairs as
// 32-bit units, so packing them is the float32 transpose of 32-bit
// elements. Needs an even kc and an even line stride (returns false: the
// caller packs element by element).
template <int R>
bool pack_pair_lines(const bf16* src, int64_t ls, int64_t count, int64_t kc, int64_t kcp, bf16* dst) {
    if (kc % 2 != 0 || ls % 2 != 0) return false;
    pack_lines_transposed<R>(reinterpret_cast<const float*>(src), ls / 2, count, kc / 2, reinterpret_cast<float*>(dst),
                             kcp / 2);
    return true;
}

// Row-major B: interleave rows k and k+1 element by element (16-bit unpacks
// work within 128-bit lanes; one cross-lane permute puts columns in order).
template <int NR>
void pack_b_row_pairs(const Matrix<bf16>& b, int64_t kc, int64_t kcp, int64_t n, bf16* dst) {
    static_assert(NR == 32, "one 32 x bf16 load per row");
    const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    const int64_t pairs = (kc + 1) / 2;
    for (int64_t j0 = 0; j0 < n; j0 += NR, dst += NR * kcp) {
        const int cols = static_cast<int>(std::min<int64_t>(NR, n - j0));
        const __mmask32 mask = cols == 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << cols) - 1u);
        for (int64_t kp = 0; kp < pairs; ++kp) {
            const __m512i r0 = _mm512_maskz_loadu_epi16(mask, b.at(2 * kp, j0));
            const __m512i r1 = 2 * kp + 1 < kc ? _mm512_maskz_loadu_epi16(mask, b.at(2 * kp + 1, j0))
                                               : _mm512_setzero_si512();
            const __m512i lo = _mm512_unpacklo_epi16(r0, r1), hi = _mm512_unpackhi_epi16(r0, r1);
            _mm512_storeu_si512(dst + kp * 2 * NR, _mm512_permutex2var_epi64(lo, first, hi));
            _mm512_storeu_si512(dst + kp * 2 * NR + NR, _mm512_permutex2var_epi64(lo, second, hi));
        }
        if (2 * pairs < kcp) std::memset(static_cast<void*>(dst + pairs * 2 * NR), 0, sizeof(bf16) * NR * (kcp - 2 * pairs));
    }
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail
