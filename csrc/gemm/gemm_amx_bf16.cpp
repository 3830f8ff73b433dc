// bfloat16 GEMM on AMX: tdpbf16ps multiplies a 16 x 32 bf16 tile of A by a
// 32 x 16 tile of B (held as 16 rows of k pairs) into a 16 x 16 float32 tile
// of C: 16K FLOPs per instruction, one per 16 cycles, 1024 FLOPs per cycle
// (8 times two vdpbf16ps per cycle). Built with
// -mamx-tile -mamx-bf16 (its own namespace, see simd.h) and chosen at run
// time only where cpu_features().amx_bf16 (the CPU has it and the OS granted
// this process the tile state).
//
// The eight tile registers hold a 32 x 32 block of C (tiles 0-3), two 16-row
// slices of A (4, 5) and two 16-column slices of B (6, 7): per 32 k, four
// tile loads feed four tdpbf16ps, each load used twice. A is packed as
// [k / 32][32 rows][32 k], so a tile row is one 64-byte line; B as the
// vdpbf16ps kernel's k-pair slivers (gemm_pack_bf16.h) of 32 columns, so a
// tile row is 16 columns' pairs, 64 bytes at a 128-byte stride. K is padded
// to a multiple of 32 with zeros in both.
//
// The tiles accumulate over the whole KC block (the float32 sums of one C
// element, in tdpbf16ps's order, join C once per KC block). Full tiles of a
// plain update start from C in the tiles and store back there; the others
// (edges, alpha, beta, bias, activation) go through memory to the same
// vector epilogue as the other kernels. KC follows the driver's rule for
// kernels that load both slivers as tiles (b_sliver, gemm_driver.h): the A
// and B slivers of a call take an eighth of L2 (KC = 2048 for a 2 MiB L2),
// and each step requests the next step's tiles. The loop alone runs faster
// with the B sliver in L1 (2.1 against 0.84 TFLOP/s per core at KC = 288
// and 576), but the C block's round trip once per KC block then costs more
// than that in the whole GEMM.
#include "gemm_dots.h"
#include "gemm_pack_bf16.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

using gemm_detail::Matrix;
using gemm_detail::TileUpdate;
using simd::VecF32;

struct AmxBf16Kernel {
    using P = bf16;
    static constexpr int MR = 32, NR = 32, KU = 32;
    static constexpr gemm_detail::SliverCache b_sliver = gemm_detail::SliverCache::a_and_b_in_l2;
    static constexpr bool reads_in_place = false;
    static constexpr int kTileRows = 16, kTileCols = 16, kTileK = 32;

    using Scope = AmxTileScope;

    static void pack_a(const Matrix<bf16>& a, int64_t m, int64_t kc, bf16* dst) {
        if (a.cs != 1) return gemm_detail::pack_a<MR, KU>(a, m, kc, dst);
        // Rows contiguous over k: each 32-k chunk of a row is one masked copy.
        const int64_t kcp = gemm_detail::round_up(kc, KU);
        for (int64_t i0 = 0; i0 < m; i0 += MR, dst += MR * kcp) {
            const int rows = static_cast<int>(std::min<int64_t>(MR, m - i0));
            for (int64_t k0 = 0; k0 < kcp; k0 += kTileK) {
                const int live = static_cast<int>(std::clamp<int64_t>(kc - k0, 0, kTileK));
                const __mmask32 mask = live == 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << live) - 1u);
                bf16* chunk = dst + k0 * MR;
                for (int i = 0; i < MR; ++i) {
                    const __m512i line = i < rows ? _mm512_maskz_loadu_epi16(mask, a.at(i0 + i, k0))
                                                  : _mm512_setzero_si512();
                    _mm512_storeu_si512(chunk + i * kTileK, line);
                }
            }
        }
    }

    static void pack_b(const Matrix<bf16>& b, int64_t kc, int64_t n, bf16* dst) {
        const int64_t kcp = gemm_detail::round_up(kc, KU);
        if (b.cs == 1) return gemm_detail::pack_b_row_pairs<NR>(b, kc, kcp, n, dst);
        if (b.rs == 1 && gemm_detail::pack_pair_lines<NR>(b.data, b.cs, n, kc, kcp, dst)) return;
        // Element by element, one sliver at a time into the K-padded stride.
        const int64_t pair_kc = kc + kc % 2;
        for (int64_t j0 = 0; j0 < n; j0 += NR, dst += NR * kcp) {
            gemm_detail::pack_b<NR, 2>(Matrix<bf16>{b.at(0, j0), b.rs, b.cs}, kc, std::min<int64_t>(NR, n - j0), dst);
            std::memset(static_cast<void*>(dst + NR * pair_kc), 0, sizeof(bf16) * NR * (kcp - pair_kc));
        }
    }

    // Tiles 0-3 (+)= the products of kcp k at a and b; a and b advance past them.
    static void products(int64_t kcp, const bf16*& a, const bf16*& b) {
        constexpr int kARowBytes = kTileK * 2, kBRowBytes = NR * 2 * 2;
        // Each A and B tile feeds two products; the loads are spread between
        // the products that need them.
        for (int64_t k0 = 0; k0 < kcp; k0 += kTileK, a += MR * kTileK, b += NR * kTileK) {
            // The next step's A and B tiles (2 KB each), requested while this
            // step's products run: with KC sized for L2 the loads otherwise
            // wait on it (2048^3: 10.7 -> 10.0 ms; 2 or 4 steps ahead were
            // no better).
            const char* next_a = reinterpret_cast<const char*>(a + MR * kTileK);
            const char* next_b = reinterpret_cast<const char*>(b + NR * kTileK);
            for (int line = 0; line < MR * kTileK * int(sizeof(bf16)); line += 64) {
                __builtin_prefetch(next_a + line, 0, 3);
                __builtin_prefetch(next_b + line, 0, 3);
            }
            _tile_loadd(4, a, kARowBytes);
            _tile_loadd(6, b, kBRowBytes);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + kTileCols * 2, kBRowBytes);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, a + kTileRows * kTileK, kARowBytes);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }

    static void zero_tiles() {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }

    // acc[i][v] is row i, columns 16 v .. 16 v + 15: C tile (i / 16, v).
    static void store_tiles(VecF32 (&acc)[MR][2]) {
        constexpr int kAccRowBytes = sizeof(acc[0]);
        _tile_stored(0, &acc[0][0], kAccRowBytes);
        _tile_stored(1, &acc[0][1], kAccRowBytes);
        _tile_stored(2, &acc[kTileRows][0], kAccRowBytes);
        _tile_stored(3, &acc[kTileRows][1], kAccRowBytes);
    }

    // float32 C: a tile's running sum covers at most kSumK k (the error of a
    // float sum grows with its length: at K = 4096, one sum over a KC of 2048
    // was 1.9x the error of PyTorch's float32 GEMM on the same bf16 inputs,
    // the accuracy rule's limit); the blocks join in vector registers. bf16 C
    // sums the whole KC block (its rounding dwarfs the difference).
    static constexpr int64_t kSumK = 256;

    static void micro(int64_t kcp, const bf16* a, const bf16* b, float* c, int64_t ldc, int m, int n,
                      const TileUpdate& u) {
        const int64_t block = gemm_detail::round_up(std::max<int64_t>(u.sum_steps, kSumK), kTileK);
        if (kcp > block) {
            VecF32 total[MR][2], part[MR][2];
            for (int64_t k0 = 0; k0 < kcp; k0 += block) {
                zero_tiles();
                products(std::min(block, kcp - k0), a, b);
                store_tiles(k0 == 0 ? total : part);
                if (k0 == 0) continue;
                for (int i = 0; i < MR; ++i)
                    for (int v = 0; v < 2; ++v) total[i][v] = total[i][v] + part[i][v];
            }
            gemm_detail::store_tile<MR, 2>(total, c, ldc, m, n, u);
            return;
        }
        // A full tile whose update is C = acc or C += acc (every K block but
        // the last with its epilogue) accumulates onto C in the tiles: loaded
        // and stored by the tile unit, no pass of vector code over it.
        const bool in_tiles = m == MR && n == NR && u.alpha == 1.0f && !u.bias && u.act == GemmActivation::none &&
                              (u.c_scale == 0.0f || u.c_scale == 1.0f);
        const int64_t c_row_bytes = ldc * static_cast<int64_t>(sizeof(float));
        float* c_lower = c + kTileRows * ldc;
        if (in_tiles && u.c_scale == 1.0f) {
            _tile_loadd(0, c, c_row_bytes);
            _tile_loadd(1, c + kTileCols, c_row_bytes);
            _tile_loadd(2, c_lower, c_row_bytes);
            _tile_loadd(3, c_lower + kTileCols, c_row_bytes);
        } else {
            zero_tiles();
        }
        products(kcp, a, b);
        if (in_tiles) {
            _tile_stored(0, c, c_row_bytes);
            _tile_stored(1, c + kTileCols, c_row_bytes);
            _tile_stored(2, c_lower, c_row_bytes);
            _tile_stored(3, c_lower + kTileCols, c_row_bytes);
            return;
        }
        VecF32 acc[MR][2];
        store_tiles(acc);
        gemm_detail::store_tile<MR, 2>(acc, c, ldc, m, n, u);
    }
};

FASTNN_AMX_PEAK_PRODUCT(Dpbf16ps, _tile_dpbf16ps);

}  // namespace

void gemm_bf16_amx(const GemmParams& p, const CacheSizes& caches) {
    gemm_detail::gemm_typed<AmxBf16Kernel, bf16>(p, caches);
}

float amx_peak_loop(long iterations, int seed) {
    static_assert(kAmxPeakChains == 4, "tile_peak_loop runs four accumulator tiles");
    // A and B hold ~1e-3 so the sums stay finite and normal.
    alignas(64) bf16 operand[16 * 32];
    for (bf16& x : operand) x = simd::float_to_bf16(1e-3f);
    return tile_peak_loop<Dpbf16ps>(iterations, operand, static_cast<float>(seed));
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
