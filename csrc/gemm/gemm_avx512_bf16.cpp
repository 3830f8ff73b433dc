// bfloat16 GEMM on AVX512_BF16: vdpbf16ps multiplies pairs of bf16 and adds
// both products to a float32 lane, twice the FLOPs of an FMA per instruction.
// Built with -mavx512bf16 (its own namespace, see simd.h) and chosen at run
// time only where cpu_features().avx512_bf16.
//
// Packing keeps bf16 (half the bytes of the float32 path, so KC doubles for
// the same L1 share) and interleaves K in pairs: a 32-bit lane of a packed B
// vector holds (B[k, j], B[k+1, j]) and the A broadcast holds (A[i, k],
// A[i, k+1]); an odd K is padded with a zero. Tile 14 x 32 as the float32
// AVX-512 kernel: 28 accumulators, 2 B loads and 14 broadcasts per k pair.
#include "gemm_driver.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

using gemm_detail::TileUpdate;
using simd::VecF32;

struct Bf16DotKernel {
    using P = bf16;
    static constexpr int MR = 14, NV = 2, NR = NV * 16, KU = 2;

    static void micro(int64_t kcp, const bf16* a, const bf16* b, float* c, int64_t ldc, int m, int n,
                      const TileUpdate& u) {
        VecF32 acc[MR][NV];
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = VecF32::zero();
        for (int64_t kp = 0; kp < kcp / 2; ++kp, a += MR * 2, b += NR * 2) {
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
        gemm_detail::store_tile<MR, NV>(acc, c, ldc, m, n, u);
    }
};

}  // namespace

void gemm_bf16_dot(const GemmParams& p, const CacheSizes& caches) {
    gemm_detail::gemm_typed<Bf16DotKernel, bf16>(p, caches);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
