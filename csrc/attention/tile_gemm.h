// The register-blocked product every attention step is made of:
//   C[M x N] (+)= A[M x K] * B[K x N]
// with A read by scalar broadcasts at any strides (so a transposed operand
// costs nothing) and B, C padded row-major float buffers whose N is a multiple
// of the vector width. Each micro-tile keeps kRows x kVecs accumulators in
// registers for the whole K loop: per k step kVecs loads and kRows broadcasts
// feed kRows * kVecs FMAs (6 x 4 on AVX-512 uses 24 of the 32 zmm registers,
// 6 x 2 on AVX2 12 of the 16 ymm), so the loop is FMA-bound, not load-bound.
// The loop over N is outermost so one K x (kVecs * width) panel of B stays in
// L1 while every row block of A streams past it.

#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::tile {

using simd::VecF32;

#if FASTNN_SIMD_AVX512
inline constexpr int kRows = 6, kVecs = 4;
#elif FASTNN_SIMD_AVX2
inline constexpr int kRows = 6, kVecs = 2;
#else
inline constexpr int kRows = 4, kVecs = 2;
#endif
inline constexpr int kWidth = VecF32::width;

// a * b + c rounded once. The portable path has no FMA instruction (and
// fmaf is a library call), but a float product is exact in double, so one
// double multiply-add rounded to float gives the fused result (up to rare
// double-rounding ties) and the portable path sums like the SIMD paths.
#if FASTNN_SIMD_AVX512 || FASTNN_SIMD_AVX2
inline VecF32 fused_madd(VecF32 a, VecF32 b, VecF32 c) { return simd::fmadd(a, b, c); }
#else
inline VecF32 fused_madd(VecF32 a, VecF32 b, VecF32 c) {
    VecF32 r;
    for (int i = 0; i < VecF32::width; ++i)
        r.v[i] = static_cast<float>(static_cast<double>(a.v[i]) * b.v[i] + c.v[i]);
    return r;
}
#endif

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// K is summed in chunks of `chunk` terms (kChunk unless the caller says),
// each chunk in fresh registers and then added to C (in L1): a blocked sum
// whose rounding error grows with chunk + K / chunk instead of K. Attention's
// dot products feed cancellations (dP - delta in the backward pass), so this
// matters there; the cost is one load, add and store per accumulator per
// chunk: 64^3 on AVX2 (Zen 3, one thread) 80-81 GFLOP/s at 16 against 91-93
// at kLongChunk, which the products without such a cancellation take.
inline constexpr int64_t kChunk = 16, kLongChunk = 64;

// Rows of A that run along k (a_k = 1: the pixels of a channels-last
// convolution, the keys of attention) are R streams, one line per chunk
// each; a chunk requests the line kRowAhead elements on in every row (past a
// row's end that is the next row's start when rows are adjacent). Where A
// comes from DRAM the hardware prefetcher may not keep six slow streams
// ahead: 1x1 convolution N8 C256 K64 56x56 channels-last on an Intel Xeon VM,
// 5.9-6.5 -> 4.4-4.5 ms (32 elements ahead: 4.7, 128: 5.5). Attention,
// whose tiles are in L2, is unchanged.
inline constexpr int64_t kRowAhead = 64;

template <int R, int NV>
void micro_tile(int64_t K, const float* A, int64_t a_m, int64_t a_k, const float* B, int64_t ldb, float* C,
                int64_t ldc, bool accumulate, float scale, int64_t chunk) {
    const float* a[R];
    for (int r = 0; r < R; ++r) a[r] = A + r * a_m;
    int64_t k = 0;
    do {
        VecF32 acc[R][NV];
        for (int r = 0; r < R; ++r)
            for (int v = 0; v < NV; ++v) acc[r][v] = VecF32::zero();
        const int64_t k_end = K - k > chunk ? k + chunk : K;
        if (a_k == 1)
            for (int r = 0; r < R; ++r) __builtin_prefetch(a[r] + kRowAhead, 0, 3);
        for (; k < k_end; ++k) {
            VecF32 b[NV];
            for (int v = 0; v < NV; ++v) b[v] = VecF32::load(B + v * kWidth);
            for (int r = 0; r < R; ++r) {
                const VecF32 x = VecF32::broadcast(*a[r]);
                for (int v = 0; v < NV; ++v) acc[r][v] = fused_madd(x, b[v], acc[r][v]);
                a[r] += a_k;
            }
            B += ldb;
        }
        if (k == K && scale != 1.0f) {
            const VecF32 s = VecF32::broadcast(scale);
            for (int r = 0; r < R; ++r)
                for (int v = 0; v < NV; ++v) {
                    float* c = C + r * ldc + v * kWidth;
                    ((accumulate ? acc[r][v] + VecF32::load(c) : acc[r][v]) * s).store(c);
                }
        } else {
            for (int r = 0; r < R; ++r)
                for (int v = 0; v < NV; ++v) {
                    float* c = C + r * ldc + v * kWidth;
                    (accumulate ? acc[r][v] + VecF32::load(c) : acc[r][v]).store(c);
                }
        }
        accumulate = true;
    } while (k < K);
}

using MicroTile = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, bool,
                           float, int64_t);

template <int NV, std::size_t... R>
constexpr std::array<MicroTile, sizeof...(R)> micro_row(std::index_sequence<R...>) {
    return {&micro_tile<int(R) + 1, NV>...};
}

template <std::size_t... V>
constexpr std::array<std::array<MicroTile, kRows>, sizeof...(V)> micro_table(std::index_sequence<V...>) {
    return {micro_row<int(V) + 1>(std::make_index_sequence<kRows>{})...};
}

// kMicroTiles[nv - 1][r - 1] computes an r x (nv * width) tile.
inline constexpr auto kMicroTiles = micro_table(std::make_index_sequence<kVecs>{});

// A's element (m, k) is A[m * a_m + k * a_k]; B holds K rows of ldb floats;
// N is a multiple of kWidth. accumulate = false overwrites C (also for K = 0).
// scale multiplies the finished sum (C + A B when accumulating) as it is
// stored: the attention scores' scale, in the pass that writes them.
inline void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_m, int64_t a_k, const float* B,
                 int64_t ldb, float* C, int64_t ldc, bool accumulate, float scale = 1.0f, int64_t chunk = kChunk) {
    for (int64_t n0 = 0; n0 < N; n0 += kVecs * kWidth) {
        const int nv = static_cast<int>(N - n0 >= kVecs * kWidth ? kVecs : (N - n0) / kWidth);
        for (int64_t m0 = 0; m0 < M; m0 += kRows) {
            const int r = static_cast<int>(M - m0 >= kRows ? kRows : M - m0);
            kMicroTiles[nv - 1][r - 1](K, A + m0 * a_m, a_m, a_k, B + n0, ldb, C + m0 * ldc + n0, ldc, accumulate,
                                       scale, chunk);
        }
    }
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::tile
