// bfloat16 GEMM on AVX512_BF16: vdpbf16ps multiplies pairs of bf16 and adds
// both products to a float32 lane, twice the FLOPs of an FMA per instruction.
// Built with -mavx512bf16 (its own namespace, see simd.h) and chosen at run
// time only where cpu_features().avx512_bf16.
//
// Packing keeps bf16 (half the bytes of the float32 path, so KC doubles for
// the same L2 share) and interleaves K in pairs: a 32-bit lane of a packed B
// vector holds (B[k, j], B[k+1, j]) and the A broadcast holds (A[i, k],
// A[i, k+1]); an odd K is padded with a zero. Tile 14 x 32 as the float32
// AVX-512 kernel: 28 accumulators, 2 B loads and 14 broadcasts per k pair.
// Partial sums join the tile total after as many products as the float32 path.
#include "gemm_dots.h"
#include "gemm_pack_bf16.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

using gemm_detail::Matrix;
using gemm_detail::TileUpdate;
using simd::VecF32;

struct Bf16DotKernel {
    using P = bf16;
    static constexpr int MR = 14, NV = 2, NR = NV * 16, KU = 2;
    static constexpr gemm_detail::SliverCache b_sliver = gemm_detail::SliverCache::b_in_l2;
    static constexpr bool reads_in_place = false;

    static void pack_a(const Matrix<bf16>& a, int64_t m, int64_t kc, bf16* dst) {
        if (a.cs == 1 && gemm_detail::pack_pair_lines<MR>(a.data, a.rs, m, kc, kc + kc % 2, dst)) return;
        gemm_detail::pack_a<MR, KU>(a, m, kc, dst);
    }

    static void pack_b(const Matrix<bf16>& b, int64_t kc, int64_t n, bf16* dst) {
        const int64_t kcp = kc + kc % 2;
        if (b.cs == 1) return gemm_detail::pack_b_row_pairs<NR>(b, kc, kcp, n, dst);
        if (b.rs == 1 && gemm_detail::pack_pair_lines<NR>(b.data, b.cs, n, kc, kcp, dst)) return;
        gemm_detail::pack_b<NR, KU>(b, kc, n, dst);
    }

    static void micro(int64_t kcp, const bf16* a, const bf16* b, float* c, int64_t ldc, int m, int n,
                      const TileUpdate& u) {
        gemm_detail::prefetch_tile<NR>(c, ldc, m);
        VecF32 total[MR][NV];
        gemm_detail::sum_in_blocks<MR, NV>(kcp / 2, u.sum_steps / 2, total, [&](VecF32 (&acc)[MR][NV], int64_t steps) {
            for (int64_t kp = 0; kp < steps; ++kp, a += MR * 2, b += NR * 2) {
                __m512bh bv[NV];
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + v * 32);
#pragma GCC unroll 32
                for (int i = 0; i < MR; ++i) {
                    int32_t pair;
                    std::memcpy(&pair, a + 2 * i, sizeof pair);
                    const __m512bh ai = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; ++v) acc[i][v].v = _mm512_dpbf16_ps(acc[i][v].v, ai, bv[v]);
                }
            }
        });
        gemm_detail::store_tile<MR, NV>(total, c, ldc, m, n, u);
    }
};

}  // namespace

void gemm_bf16_dot(const GemmParams& p, const CacheSizes& caches) {
    gemm_detail::gemm_typed<Bf16DotKernel, bf16>(p, caches);
}

// Twelve independent accumulator chains cover vdpbf16ps's latency times its
// throughput on current cores. Inline assembly: from intrinsics GCC copies
// or spills the accumulators inside the loop, which would time the copies.
float dot_peak_loop(long iterations, int seed) {
    static_assert(kDotPeakChains == 12, "the loop below names twelve accumulators");
    if (iterations < 1) return 0.0f;
    __m512 c[kDotPeakChains];
    for (int i = 0; i < kDotPeakChains; ++i) c[i] = _mm512_set1_ps(static_cast<float>(seed + i));
    // Products of ~1e-3 keep the sums finite and normal for any iteration count.
    const __m512i a = _mm512_set1_epi16(0x3a83), b = _mm512_set1_epi16(0x3a83);
    asm volatile(
        "1:\n\t"
        "vdpbf16ps %[b], %[a], %[c0]\n\t" "vdpbf16ps %[b], %[a], %[c1]\n\t" "vdpbf16ps %[b], %[a], %[c2]\n\t"
        "vdpbf16ps %[b], %[a], %[c3]\n\t" "vdpbf16ps %[b], %[a], %[c4]\n\t" "vdpbf16ps %[b], %[a], %[c5]\n\t"
        "vdpbf16ps %[b], %[a], %[c6]\n\t" "vdpbf16ps %[b], %[a], %[c7]\n\t" "vdpbf16ps %[b], %[a], %[c8]\n\t"
        "vdpbf16ps %[b], %[a], %[c9]\n\t" "vdpbf16ps %[b], %[a], %[c10]\n\t" "vdpbf16ps %[b], %[a], %[c11]\n\t"
        "dec %[n]\n\t"
        "jnz 1b"
        : [c0] "+v"(c[0]), [c1] "+v"(c[1]), [c2] "+v"(c[2]), [c3] "+v"(c[3]), [c4] "+v"(c[4]), [c5] "+v"(c[5]),
          [c6] "+v"(c[6]), [c7] "+v"(c[7]), [c8] "+v"(c[8]), [c9] "+v"(c[9]), [c10] "+v"(c[10]),
          [c11] "+v"(c[11]), [n] "+r"(iterations)
        : [a] "v"(a), [b] "v"(b));
    __m512 sum = c[0];
    for (int i = 1; i < kDotPeakChains; ++i) sum = _mm512_add_ps(sum, c[i]);
    return _mm512_reduce_add_ps(sum);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
