// The int8 GEMM on AMX: tdpbssd multiplies a 16 x 64 int8 tile of A by a
// 64 x 16 tile of B (held as 16 rows of 4-byte k-groups, the layout of the
// packed B strips) into a 16 x 16 int32 tile of C: 16K multiply-adds per
// instruction, one per 16 cycles, 2048 int8 ops per cycle (4x vpdpbusd's two
// per cycle on zmm). Both operands are signed, so A is stored as it is and
// there is no compensation term. Built with -mamx-tile -mamx-int8 (its own
// namespace, see simd.h) and chosen at run time only where
// cpu_features().amx_int8 (the CPU has it and the OS granted the tile state).
//
// The driver is int8_gemm.h's: K blocks of 128 groups, a thread's B tile of
// two strips (32 columns) swept by the A panels of a block. Here a panel is
// 32 rows laid out in 64-byte lines of one row (kPanelGroup = 16 groups), so
// an A tile is 1 KB of consecutive lines; a B tile is 16 consecutive groups
// of a strip. Eight tile registers: C as 2 x 2 tiles (0-3), two A tiles (4,
// 5), two B tiles (6, 7); per 64 k, four loads feed four tdpbssd.
//
// K tail: panels are zero beyond K up to a whole line, so products there are
// 0 whatever B holds; the B strips end at ceil(K/4) groups, and the last
// partial B tile is loaded from a zero-padded copy so that nothing is read
// past the strip.
#include "int8_gemm.h"

#if !defined(__AMX_INT8__)
#error "compile with -mamx-tile -mamx-int8"
#endif

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

struct DotAmxInt8 {
    static constexpr int kMR = 32, kNV = 2, kLanes = 16;
    static constexpr int kPanelGroup = 16;  // groups per A line: 64 k, one tile row
    // K blocks of 512 k: the B tile of a block (two strips, 16 KB) stays in L1
    // while the A panels of a block stream past it from L2 (the tile loads
    // run at about half the rate from L2). Xeon VM, 2 threads, inputs from
    // DRAM: 1024^3 0.93 -> 0.88 ms, 2048^3 7.2 -> 6.8 ms against blocks of
    // 2048 k; 256 k was slower again.
    static constexpr int64_t kKcGroups = 128;
    static constexpr bool kUnsignedA = false;
    static constexpr int kTileRows = 16, kLineBytes = 64;
    static constexpr int kCRowBytes = kNV * kLanes * 4;  // the driver's int32 tile buffer is [kMR][32]
    using Scope = AmxTileScope;
    using TileFn = void (*)(const uint8_t*, const int8_t*, int64_t, int64_t, int32_t*, bool);

    // One 64-k step: A tiles at a (two 16-row halves of the panel), B tiles
    // of NS strips at b0 and b1.
    template <int NS>
    static void step(const uint8_t* a, const int8_t* b0, const int8_t* b1) {
        _tile_loadd(4, a, kLineBytes);
        _tile_loadd(6, b0, kLineBytes);
        _tile_dpbssd(0, 4, 6);
        if constexpr (NS == 2) {
            _tile_loadd(7, b1, kLineBytes);
            _tile_dpbssd(1, 4, 7);
        }
        _tile_loadd(5, a + kTileRows * kLineBytes, kLineBytes);
        _tile_dpbssd(2, 5, 6);
        if constexpr (NS == 2) _tile_dpbssd(3, 5, 7);
    }

    // c (32 x 32 int32, rows kCRowBytes apart) (+)= the panel at a times NS
    // strips of B at b, over k4 groups.
    template <int NS>
    static void tile(const uint8_t* a, const int8_t* b, int64_t k4, int64_t strip_bytes, int32_t* c,
                     bool accumulate) {
        constexpr int kHalf = kTileRows * kCRowBytes / 4;  // ints from C's row 0 to row 16
        if (accumulate) {
            _tile_loadd(0, c, kCRowBytes);
            _tile_loadd(2, c + kHalf, kCRowBytes);
            if constexpr (NS == 2) {
                _tile_loadd(1, c + kLanes, kCRowBytes);
                _tile_loadd(3, c + kHalf + kLanes, kCRowBytes);
            }
        } else {
            _tile_zero(0);
            _tile_zero(2);
            if constexpr (NS == 2) {
                _tile_zero(1);
                _tile_zero(3);
            }
        }
        const int64_t steps = k4 / kPanelGroup;
        const int64_t a_step = int64_t(kMR) * kLineBytes, b_step = int64_t(kPanelGroup) * kLineBytes;
        const int8_t* b1 = NS == 2 ? b + strip_bytes : b;  // the second strip, when there is one
        for (int64_t s = 0; s < steps; ++s) step<NS>(a + s * a_step, b + s * b_step, b1 + s * b_step);
        if (const int64_t tail = k4 - steps * kPanelGroup) {
            alignas(64) int8_t last[NS][kPanelGroup * kLineBytes] = {};
            for (int j = 0; j < NS; ++j)
                std::memcpy(last[j], b + j * strip_bytes + steps * b_step, static_cast<size_t>(tail * kLineBytes));
            step<NS>(a + steps * a_step, last[0], last[NS - 1]);
        }
        _tile_stored(0, c, kCRowBytes);
        _tile_stored(2, c + kHalf, kCRowBytes);
        if constexpr (NS == 2) {
            _tile_stored(1, c + kLanes, kCRowBytes);
            _tile_stored(3, c + kHalf + kLanes, kCRowBytes);
        }
    }

    // Panels are always whole (missing rows are zero), so only the number of
    // 16-column strips selects a routine.
    static TileFn pick(int /*rows*/, int vectors) { return vectors == 2 ? &tile<2> : &tile<1>; }
};

FASTNN_AMX_PEAK_PRODUCT(Dpbssd, _tile_dpbssd);

int32_t amx_int8_peak_loop(long iterations, int32_t seed) {
    alignas(64) int8_t operand[16 * 64];
    for (int i = 0; i < 16 * 64; ++i) operand[i] = static_cast<int8_t>(seed + i);
    return tile_peak_loop<Dpbssd>(iterations, operand, int32_t(0));
}

}  // namespace

const Int8GemmKernels int8_gemm_kernels = {"amx_int8", &Int8Gemm<DotAmxInt8>::matmul,
                                           &Int8Gemm<DotAmxInt8>::linear_dynamic, &amx_int8_peak_loop,
                                           4 * 16 * 16 * 64 * 2};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
