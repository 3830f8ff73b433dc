// Per-thread state a GEMM kernel sets up around its micro-kernel calls, and
// the one such state in use: AMX's tile configuration. Compiled per ISA like
// simd.h (the AMX part only where the unit is built with -mamx-tile).
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__AMX_TILE__)
#include <immintrin.h>
#endif

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {

// Kern::Scope where the kernel declares one, else nothing.
struct NoScope {};
template <class Kern, class = void>
struct ScopeOf {
    using type = NoScope;
};
template <class Kern>
struct ScopeOf<Kern, std::void_t<typename Kern::Scope>> {
    using type = typename Kern::Scope;
};

#if defined(__AMX_TILE__)
// Palette 1: rows and bytes per row of each of the eight tile registers. The
// fastnn AMX kernels use them all as 16 rows x 64 bytes: four C tiles
// (16 x 16 float32 or int32) and two tiles each of A and B.
struct alignas(64) AmxTileConfig {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
};

// The tile configuration is per thread, and other code on the thread
// (PyTorch's own AMX kernels) may load its own between two GEMMs: each
// thread's share of a GEMM loads it first and releases the tiles after.
struct AmxTileScope {
    AmxTileScope() {
        static const AmxTileConfig cfg = [] {
            AmxTileConfig c;
            for (int t = 0; t < 8; ++t) c.rows[t] = 16, c.bytes_per_row[t] = 64;
            return c;
        }();
        _tile_loadconfig(&cfg);
    }
    ~AmxTileScope() { _tile_release(); }
    AmxTileScope(const AmxTileScope&) = delete;
    AmxTileScope& operator=(const AmxTileScope&) = delete;
};

// Declares `name`, a tile_peak_loop Product for one tile instruction (the
// intrinsic `insn`). The tile numbers stay literals: GCC's tile intrinsics
// paste them into the instruction's text.
#define FASTNN_AMX_PEAK_PRODUCT(name, insn) \
    struct name {                           \
        static void into_four_tiles() {     \
            insn(0, 4, 6);                  \
            insn(1, 4, 6);                  \
            insn(2, 4, 6);                  \
            insn(3, 4, 6);                  \
        }                                   \
    }

// The register-only peak of a tile product: Product::into_four_tiles()
// multiplies tiles 4 and 6 (both loaded from `operand`, 1 KB) into each of
// the C tiles 0-3 (starting from `init`), four independent chains that cover
// the instruction's latency at its throughput. Returns a sum of the results
// so the work is kept.
template <class Product, class Acc>
Acc tile_peak_loop(long iterations, const void* operand, Acc init) {
    if (iterations < 1) return Acc(0);
    AmxTileScope scope;
    alignas(64) Acc out[16 * 16];
    for (Acc& v : out) v = init;
    _tile_loadd(4, operand, 64);
    _tile_loadd(6, operand, 64);
    _tile_loadd(0, out, 64);
    _tile_loadd(1, out, 64);
    _tile_loadd(2, out, 64);
    _tile_loadd(3, out, 64);
    for (long i = 0; i < iterations; ++i) Product::into_four_tiles();
    Acc sum = Acc(0);
    _tile_stored(0, out, 64);
    sum += out[0];
    _tile_stored(1, out, 64);
    sum += out[1];
    _tile_stored(2, out, 64);
    sum += out[2];
    _tile_stored(3, out, 64);
    return sum + out[3];
}
#endif

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
