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
#endif

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
