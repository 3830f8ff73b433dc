// The GotoBLAS/BLIS loops around a register-blocked micro-kernel, shared by
// every ISA build and by the AVX512_BF16 build (each instantiates them with
// its own kernel traits, in its own namespace).
//
// Loop nest for one thread's rectangle of C (rows m0..m1, columns n0..n1):
//   jc over N by NC:  B panel KC x NC packed per (jc, pc), lives in L3
//     pc over K by KC:
//       ic over M by MC:  A block MC x KC packed, lives in L2
//         jr over NC by NR:  one B sliver KC x NR, stays in L1 ...
//           ir over MC by MR:  ... while A slivers stream from L2
//             micro-kernel: MR x NR tile of C in registers over KC
// KC, MC and NC come from the cache sizes the machine reports. Packing makes
// every operand layout (row-major, transposed, any strides, bf16) look the
// same to the micro-kernel, so there is one kernel per ISA and no copies of
// the caller's data beyond the panels. Threads take disjoint rectangles of C
// (split over M and N to minimise packing, or over the batch), so each C
// element is summed by one thread in the same order whatever the thread
// count: results are bit-identical across thread counts.
//
// C is written directly when it is float32 with unit column stride (or unit
// row stride: then the problem is transposed, C^T = B^T A^T). Otherwise
// (bfloat16 C, general strides) the tile results go to a float32 scratch
// block and one pass per NC block applies alpha, beta, bias and activation
// and converts.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastnn/gemm.h"
#include "fastnn/parallel.h"
#include "fastnn/simd.h"
#include "fastnn/tile_scope.h"
#include "fastnn/workspace.h"
#include "gemm_epilogue.h"
#include "gemm_pack.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail {

// What a micro-kernel does with its finished accumulator tile:
//   C = act(alpha * acc + c_scale * C + bias)
struct TileUpdate {
    int64_t sum_steps;   // k steps summed in registers before joining the tile's total
    float alpha;
    float c_scale;       // 0: C is not read (beta == 0 ignores NaN in C)
    const float* bias;   // at the tile's first column (or row); nullptr: none
    bool bias_on_rows;
    GemmActivation act;  // none except on the last K block
};

struct Epilogue {
    float alpha, beta;
    const float* bias;  // float32, contiguous; nullptr: none
    bool bias_on_rows;
    GemmActivation act;
};

// L1 data caches of 64 sets of 64-byte lines (x86 cores of this decade).
inline constexpr int64_t kL1Sets = 64, kLineBytes = 64;

struct Blocking {
    int64_t mc, nc, kc;
    int64_t sum_steps;
    int64_t l1_ways;  // of a 64-set L1 (reads_well_in_place)
};

// Which slivers of a micro-kernel call KC sizes against L2.
enum class SliverCache { b_in_l2, a_and_b_in_l2 };

// Blocking (after Low et al., "Analytical modeling is enough for
// high-performance BLIS", with the measured exceptions below): KC is as long
// as L2 allows, because what limits these kernels is the C tile, loaded and
// stored once per KC block.
//   The FMA and vdpbf16ps kernels load only NR / 16 vectors of B per MR x NR
//   / 16 FMAs (2 per 28), little enough to stream the sliver from L2; the
//   KC x NR sliver of B takes an eighth of L2 (KC = 1024 float32 steps for a
//   1 MiB L2). Measured on 2 Zen 4 cores at 2048^3, float32: 184 GFLOP/s at
//   KC = 128 (the sliver in L1), 195 at 256, 204 at 512, 210 at 1024;
//   bfloat16 374 at 256, 410 at 1024. On a 2 MiB L2 (Intel Xeon) the eighth
//   is 2048 steps, which was too long: one thread, float32 Linear 512 x 2048
//   x 2048 0.82-0.85x MKL's speed at 2048, 0.87-0.96x at 1024 (median 0.84
//   -> 0.92), 2048^3 0.94 -> 0.97; so at most kMaxStreamedSteps.
//   AMX loads a 1 KB tile of A or B per 16 K of a tile product (its loop
//   alone runs 20% slower with the B sliver in L2 than in L1), so the A and
//   B slivers together take an eighth of L2 (KC = 2048 bf16 for 2 MiB).
//   Measured on a 2-core Xeon VM against the L1 rule (KC = 288), whole GEMM
//   with inputs from DRAM: 1024^3 1.70 -> 1.55 ms, 2048^3 14.7 -> 10.0 ms;
//   KC = 4096 at 4096^3 was slower (90 against 77 ms).
// Then the MC x KC block of A takes half of L2 and the KC x NC panel of B a
// quarter of L3 (shared by the cores).
//
// Accuracy: a float32 sum of K products has a rounding error growing with K;
// oneDNN's is smaller than one running sum per C element. So the micro-kernel
// sums kSumSteps k steps in registers, adds that partial sum into the tile's
// total (in L1), and starts again: the error grows like kSumSteps +
// K / kSumSteps, below oneDNN's, whatever KC is, at the cost of one pass over
// the tile per kSumSteps. On AVX2 (6 x 16 tile, its total spilled to the
// stack) that pass cost 7% at 64 steps (Zen 3, one thread, 1024^3 87.9 ->
// 94.2 GFLOP/s without it); at 128 steps the mean error equals that of
// torch's MKL sgemm on the same machine to the digit at K = 256 (its AVX2
// kernel sums 128-step chains too) and is 0.5-0.86x of it at K = 1024 to
// 16384, and 1024^3 runs at 91.5 GFLOP/s, 2048^3 82.6 against 78.7.
#if FASTNN_SIMD_AVX2
inline constexpr int64_t kSumSteps = 128;
#else
inline constexpr int64_t kSumSteps = 64;
#endif
inline constexpr int64_t kMaxKcSteps = 2048;
inline constexpr int64_t kMaxStreamedSteps = 1024;

template <int MR, int NR, int KU, class P>
Blocking make_blocking(const CacheSizes& caches, SliverCache sliver) {
    const int64_t elt = sizeof(P), k_step = std::max(16, KU);
    int64_t kc = (caches.l2 / 8) / ((sliver == SliverCache::a_and_b_in_l2 ? MR + NR : NR) * elt);
    const int64_t max_steps = sliver == SliverCache::b_in_l2 ? kMaxStreamedSteps : kMaxKcSteps;
    kc = std::clamp<int64_t>(kc / k_step * k_step, std::max<int64_t>(64, k_step), max_steps * KU);
    int64_t mc = (caches.l2 / 2) / (kc * elt);
    mc = std::clamp<int64_t>(mc / MR * MR, MR, 4096 / MR * MR);
    int64_t nc = (caches.l3 / 4) / (kc * elt);
    nc = std::clamp<int64_t>(nc / NR * NR, NR, 8192 / NR * NR);
    return {mc, nc, kc, kSumSteps, std::max<int64_t>(1, caches.l1d / (kL1Sets * kLineBytes))};
}

// Runs a micro-kernel's k loop (run(acc, steps) adds `steps` steps into acc)
// in blocks of sum_steps. Three levels: each block's register sums join a
// group of kBlocksPerGroup blocks, and the groups join total, so a float
// sum's error grows like sum_steps + kBlocksPerGroup + K / (sum_steps *
// kBlocksPerGroup) rather than sum_steps + K / sum_steps. With two levels,
// Linear (3, 1025) x (1025, 65) (small outputs sum blocks of 16) exceeded 2x
// the error of torch's MKL on 0.3-0.5% of random draws on an Intel Xeon;
// the third level costs one pass over the tile per group.
inline constexpr int64_t kBlocksPerGroup = 16;

template <int MR, int NV, class Run>
inline void sum_in_blocks(int64_t steps, int64_t sum_steps, VecF32 (&total)[MR][NV], Run&& run) {
    VecF32 group[MR][NV];
    int64_t block = 0;
    for (int64_t s0 = 0; s0 < steps; s0 += sum_steps, ++block) {
        VecF32 acc[MR][NV];
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = VecF32::zero();
        run(acc, std::min(sum_steps, steps - s0));
        const bool opens = block % kBlocksPerGroup == 0;
        const bool closes = (block + 1) % kBlocksPerGroup == 0 || s0 + sum_steps >= steps;
        VecF32 (&sum)[MR][NV] = block < kBlocksPerGroup ? total : group;
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) sum[i][v] = opens ? acc[i][v] : sum[i][v] + acc[i][v];
        if (closes && block >= kBlocksPerGroup)
#pragma GCC unroll 32
            for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) total[i][v] = total[i][v] + group[i][v];
    }
}

// The packed slivers are read in order, one k step (MR values of A, NR
// columns of B: 56 and 128 bytes in the AVX-512 kernels) per MR * NR FMAs,
// from L2 when KC is long. Each step requests the lines kSliverPrefetchSteps
// steps ahead: on an Intel Xeon VM the hardware prefetcher left the loop
// waiting on those L2 loads (one core, 2048^3 float32: 124-138 GFLOP/s
// without, 156-174 with 16 steps; 4 and 32 steps were no better).
inline constexpr int kSliverPrefetchSteps = 16;

// a and b at one k step of their slivers, whose steps are a_step and b_step
// floats apart (MR and NR when packed; a stride when read in place, where a
// step's floats may straddle one more line).
template <int MR, int NR>
inline void prefetch_slivers(const float* a, int64_t a_step, const float* b, int64_t b_step) {
    const float* pa = a + kSliverPrefetchSteps * a_step;
    const float* pb = b + kSliverPrefetchSteps * b_step;
    __builtin_prefetch(pa, 0, 3);
    __builtin_prefetch(pa + MR - 1, 0, 3);
    for (int line = 0; line < NR; line += 16) __builtin_prefetch(pb + line, 0, 3);
    __builtin_prefetch(pb + NR - 1, 0, 3);
}

// The C tile is read (or written) after the k loop: request its lines now so
// that they arrive while the FMAs run.
template <int NR>
inline void prefetch_tile(const float* c, int64_t ldc, int m) {
    for (int i = 0; i < m; ++i) {
        __builtin_prefetch(c + i * ldc, 1, 3);
        __builtin_prefetch(c + i * ldc + NR - 1, 1, 3);
    }
}

template <int MR, int NV, class Act>
inline void store_tile_with(const VecF32 (&acc)[MR][NV], float* c, int64_t ldc, int m, int n, const TileUpdate& u) {
    constexpr int W = VecF32::width;
    const VecF32 alpha = VecF32::broadcast(u.alpha), c_scale = VecF32::broadcast(u.c_scale);
    const bool read_c = u.c_scale != 0.0f;
    if (m == MR && n == NV * W) {
        // A whole tile, unrolled: the rolled loop below tests its edge, C and
        // bias cases per vector, ~7% of a K = 96 product's time (Linear
        // 2048 x 96 -> 288).
        VecF32 col_bias[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) col_bias[v] = u.bias && !u.bias_on_rows ? VecF32::load(u.bias + v * W) : VecF32::zero();
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) {
            float* row = c + i * ldc;
            const VecF32 row_bias = u.bias && u.bias_on_rows ? VecF32::broadcast(u.bias[i]) : VecF32::zero();
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                VecF32 x = acc[i][v] * alpha;
                if (read_c) x = simd::fmadd(c_scale, VecF32::load(row + v * W), x);
                if (u.bias) x = x + (u.bias_on_rows ? row_bias : col_bias[v]);
                Act::apply(x).store(row + v * W);
            }
        }
        return;
    }
    for (int i = 0; i < MR && i < m; ++i) {
        float* row = c + i * ldc;
        const VecF32 row_bias = u.bias && u.bias_on_rows ? VecF32::broadcast(u.bias[i]) : VecF32::zero();
        for (int v = 0; v < NV; ++v) {
            const int cols = n - v * W;
            if (cols <= 0) break;
            VecF32 x = acc[i][v] * alpha;
            if (cols >= W) {
                if (read_c) x = simd::fmadd(c_scale, VecF32::load(row + v * W), x);
                if (u.bias) x = x + (u.bias_on_rows ? row_bias : VecF32::load(u.bias + v * W));
                Act::apply(x).store(row + v * W);
            } else {
                if (read_c) x = simd::fmadd(c_scale, VecF32::load_partial(row + v * W, cols), x);
                if (u.bias) x = x + (u.bias_on_rows ? row_bias : VecF32::load_partial(u.bias + v * W, cols));
                Act::apply(x).store_partial(row + v * W, cols);
            }
        }
    }
}

template <int MR, int NV>
inline void store_tile(const VecF32 (&acc)[MR][NV], float* c, int64_t ldc, int m, int n, const TileUpdate& u) {
    with_activation(u.act, [&](auto act) { store_tile_with<MR, NV, decltype(act)>(acc, c, ldc, m, n, u); });
}

// C block (m x n, at row0/col0 of the problem) = act(alpha * S + beta * C +
// bias), S float32 row-major (nullptr: zero, for K == 0). Strided C goes
// through a small buffer so the arithmetic is the same vector code.
template <class TOut, class Act>
void finalize_block(const float* s, int64_t lds, TOut* c, int64_t crs, int64_t ccs, int64_t m, int64_t n,
                    const Epilogue& e, int64_t row0, int64_t col0) {
    constexpr int W = VecF32::width;
    const VecF32 alpha = VecF32::broadcast(e.alpha), beta = VecF32::broadcast(e.beta);
    for (int64_t i = 0; i < m; ++i) {
        TOut* row = c + i * crs;
        for (int64_t j = 0; j < n; j += W) {
            const int cols = static_cast<int>(std::min<int64_t>(W, n - j));
            VecF32 x = s ? VecF32::load_partial(s + i * lds + j, cols) * alpha : VecF32::zero();
            TOut strided[W];
            if (ccs != 1)
                for (int t = 0; t < cols; ++t) strided[t] = row[(j + t) * ccs];
            const TOut* c_in = ccs == 1 ? row + j : strided;
            if (e.beta != 0.0f) x = simd::fmadd(beta, VecF32::load_partial(c_in, cols), x);
            if (e.bias)
                x = x + (e.bias_on_rows ? VecF32::broadcast(e.bias[row0 + i])
                                        : VecF32::load_partial(e.bias + col0 + j, cols));
            x = Act::apply(x);
            if (ccs == 1) {
                x.store_partial(row + j, cols);
            } else {
                x.store_partial(strided, cols);
                for (int t = 0; t < cols; ++t) row[(j + t) * ccs] = strided[t];
            }
        }
    }
}

// One GEMM after validation, in the micro-kernel's terms.
template <class T>
struct Problem {
    int64_t batch, m, n, k;
    Matrix<T> a, b;          // batch 0
    int64_t a_bs, b_bs;      // batch strides (0: broadcast)
    void* c;
    DType c_dtype;
    int64_t c_rs, c_cs, c_bs;
    bool direct;             // float32 C with unit column stride
    Epilogue epilogue;
    Blocking blocking;
};

// A float operand whose sliver is already contiguous at every k (A with unit
// row stride: MR adjacent rows; B with unit column stride: NR adjacent
// columns) is read where it lies by kernels that take a k step per sliver,
// if its k steps are less than kInPlaceStepBytes apart; only the edge sliver
// is packed. A Linear layer's weight gradient g^T x (g: tokens x 96..384
// outputs, x: tokens x 96..384 inputs, 2048 tokens) packed as much data as
// it multiplied: one thread, 96 x 96, 373-527 us -> 276-336 (MKL 236-347).
// At 2 KiB apart a sliver's lines fall into one L2 set in 64 (128 KiB
// period): 1024 k steps put 16 lines into each, the whole of a 16-way set,
// and the sliver is read from L3 again for every sliver it meets. One thread
// on an Intel Xeon, ratio to MKL's time, in place against packed: g^T x with
// 2048 tokens x 256 at a 2 KiB step 0.71 / 0.84, 96 x 96 0.68 / 0.79; at a
// 1 KiB step (8 lines per set) in place is still ahead, 0.88 / 0.83, and
// (64 x 256) x (256 x 256) 0.75 / 0.70. Farther apart, each k step would
// also touch its own page.
// Steps of a whole number of lines also meet in L1 (64 sets on the x86 cores
// of this decade): a step of L lines puts a sliver's lines into 64 / gcd(L,
// 64) sets. On a Zen 3 VM (32 KiB, 8 ways), one thread, GFLOP/s in place
// against packed: at 1 KiB (4 sets) the weight gradient g^T x, 64 or 2048
// tokens x 256, 54 / 71 and 59 / 83, and g W at 2048 tokens 78 / 89; at
// 512 B and 1.5 KiB (8 sets) g^T x 64 / 72 and 68 / 82; at 768 B (16 sets)
// within noise; at 384 B (32 sets) in place ahead, 87 / 73 (torch 85). So
// a step is read in place when its sets hold at least kInPlaceSetLines lines
// (sets x ways): 32 sets on 8 ways, 16 on 12 (the Xeon's 48 KiB L1, where
// the 1 KiB step above was measured 6% ahead in place stays packed: 4 sets).
inline constexpr int64_t kInPlaceStepBytes = 2048, kInPlaceSetLines = 192;

inline bool reads_well_in_place(int64_t step, std::size_t elt, int64_t l1_ways) {
    const int64_t bytes = step * static_cast<int64_t>(elt);
    if (step <= 0 || bytes >= kInPlaceStepBytes) return false;
    if (bytes % kLineBytes != 0) return true;
    const int64_t sets = kL1Sets / std::gcd(bytes / kLineBytes, kL1Sets);
    return sets * l1_ways >= kInPlaceSetLines;
}

// Kern provides MR, NR, KU, the packed type P, b_sliver (SliverCache),
//   pack_a(a, m, kc, dst) and pack_b(b, kc, n, dst) (layouts as above),
//   reads_in_place and micro(kcp, a, b, c, ldc, m, n, TileUpdate) or, with
//   reads_in_place, micro(kcp, a, a_step, b, b_step, c, ldc, m, n,
//   TileUpdate) (a sliver's k steps a_step and b_step elements apart: MR and
//   NR when packed), and optionally a Scope type, constructed on the thread
//   before its micro-kernel calls.
template <class Kern, class T>
bool run_rectangle(const Problem<T>& pr, int64_t bi, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    using P = typename Kern::P;
    constexpr int MR = Kern::MR, NR = Kern::NR, KU = Kern::KU;
    const Blocking& blk = pr.blocking;
    const Epilogue& ep = pr.epilogue;
    const Matrix<T> a{pr.a.data + bi * pr.a_bs, pr.a.rs, pr.a.cs};
    const Matrix<T> b{pr.b.data + bi * pr.b_bs, pr.b.rs, pr.b.cs};
    const int64_t c_elt = static_cast<int64_t>(dtype_size(pr.c_dtype));
    char* c_base = static_cast<char*>(pr.c) + bi * pr.c_bs * c_elt;
    auto finalize = [&](const float* s, int64_t lds, int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
        char* c = c_base + (r0 * pr.c_rs + c0 * pr.c_cs) * c_elt;
        with_activation(ep.act, [&](auto act) {
            if (pr.c_dtype == DType::bf16)
                finalize_block<bf16, decltype(act)>(s, lds, reinterpret_cast<bf16*>(c), pr.c_rs, pr.c_cs, rows, cols,
                                                    ep, r0, c0);
            else
                finalize_block<float, decltype(act)>(s, lds, reinterpret_cast<float*>(c), pr.c_rs, pr.c_cs, rows,
                                                     cols, ep, r0, c0);
        });
    };
    if (pr.k == 0) {
        finalize(nullptr, 0, m0, m1 - m0, n0, n1 - n0);
        return true;
    }

    const int64_t kc_max = round_up(std::min(blk.kc, pr.k), KU);
    const int64_t nc_max = std::min(blk.nc, n1 - n0);
    // Per-thread packing buffers, kept for the next call (fastnn/workspace.h).
    P* packed_a = thread_workspace<P>(WorkspaceSlot::gemm_pack_a, round_up(std::min(blk.mc, m1 - m0), MR) * kc_max);
    P* packed_b = thread_workspace<P>(WorkspaceSlot::gemm_pack_b, round_up(nc_max, NR) * kc_max);
    float* scratch =
        pr.direct ? nullptr : thread_workspace<float>(WorkspaceSlot::gemm_scratch, (m1 - m0) * nc_max);
    if (!packed_a || !packed_b || (!pr.direct && !scratch)) return false;
    float* c_f32 = pr.direct ? reinterpret_cast<float*>(c_base) : nullptr;
    [[maybe_unused]] typename ScopeOf<Kern>::type scope;
    constexpr bool kInPlace = Kern::reads_in_place && std::is_same_v<T, P>;
    const bool a_in_place = kInPlace && a.rs == 1 && reads_well_in_place(a.cs, sizeof(T), blk.l1_ways);
    const bool b_in_place = kInPlace && b.cs == 1 && reads_well_in_place(b.rs, sizeof(T), blk.l1_ways);

    for (int64_t jc = n0; jc < n1; jc += blk.nc) {
        const int64_t nc = std::min(blk.nc, n1 - jc);
        for (int64_t pc = 0; pc < pr.k; pc += blk.kc) {
            const int64_t kc = std::min(blk.kc, pr.k - pc), kcp = round_up(kc, KU);
            const bool first = pc == 0, last = pc + kc == pr.k;
            // In place, only the edge sliver (at its packed position).
            const int64_t b_whole = b_in_place ? nc / NR * NR : 0;
            if (b_whole < nc) Kern::pack_b(Matrix<T>{b.at(pc, jc + b_whole), b.rs, b.cs}, kc, nc - b_whole,
                                           packed_b + b_whole * kcp);
            TileUpdate u{blk.sum_steps, 1.0f, first ? 0.0f : 1.0f, nullptr, false, GemmActivation::none};
            if (pr.direct) {
                u.alpha = ep.alpha;
                u.c_scale = first ? ep.beta : 1.0f;
                u.bias_on_rows = ep.bias_on_rows;
                if (last) u.act = ep.act;
            }
            const bool with_bias = pr.direct && last && ep.bias;
            for (int64_t ic = m0; ic < m1; ic += blk.mc) {
                const int64_t mc = std::min(blk.mc, m1 - ic);
                const int64_t a_whole = a_in_place ? mc / MR * MR : 0;
                if (a_whole < mc) Kern::pack_a(Matrix<T>{a.at(ic + a_whole, pc), a.rs, a.cs}, mc - a_whole, kc,
                                               packed_a + a_whole * kcp);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    const int n = static_cast<int>(std::min<int64_t>(NR, nc - jr));
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        const int m = static_cast<int>(std::min<int64_t>(MR, mc - ir));
                        float* c_tile;
                        int64_t ldc;
                        if (pr.direct) {
                            c_tile = c_f32 + (ic + ir) * pr.c_rs + (jc + jr) * pr.c_cs;
                            ldc = pr.c_rs;
                        } else {
                            c_tile = scratch + (ic - m0 + ir) * nc + jr;
                            ldc = nc;
                        }
                        if (with_bias) u.bias = ep.bias + (ep.bias_on_rows ? ic + ir : jc + jr);
                        const P* a_tile = packed_a + ir * kcp;
                        const P* b_tile = packed_b + jr * kcp;
                        int64_t a_step = MR, b_step = NR;
                        if constexpr (kInPlace) {
                            if (ir < a_whole) a_tile = a.at(ic + ir, pc), a_step = a.cs;
                            if (jr < b_whole) b_tile = b.at(pc, jc + jr), b_step = b.rs;
                        }
                        if constexpr (Kern::reads_in_place)
                            Kern::micro(kcp, a_tile, a_step, b_tile, b_step, c_tile, ldc, m, n, u);
                        else
                            Kern::micro(kcp, a_tile, b_tile, c_tile, ldc, m, n, u);
                    }
                }
            }
        }
        if (!pr.direct) finalize(scratch, nc, m0, m1 - m0, jc, nc);
    }
    return true;
}

inline constexpr int64_t kSmallOutput = 1024;

// Work below this many FLOPs per thread costs less than waking a worker.
inline constexpr double kMinFlopsPerThread = 1 << 20;

template <class Kern, class T>
void run_problem(Problem<T>& pr, const CacheSizes& caches) {
    constexpr int MR = Kern::MR, NR = Kern::NR;
    pr.blocking = make_blocking<MR, NR, Kern::KU, typename Kern::P>(caches, Kern::b_sliver);
    // Small outputs are matrix-vector-like problems, for which PyTorch sums
    // K with many partial sums: shorter K blocks keep the error as small.
    if (pr.m * pr.n <= kSmallOutput) pr.blocking.sum_steps = 16;
    // A bfloat16 C rounds away 16 bits: the rounding of the float32 sums is
    // far below it, and register sums over the whole KC block save the
    // partial-sum passes (~6% of the bf16 kernel's time).
    if (pr.c_dtype == DType::bf16) pr.blocking.sum_steps = pr.blocking.kc;
    const double flops = 2.0 * pr.batch * pr.m * pr.n * std::max<int64_t>(pr.k, 1);
    const int64_t threads =
        std::clamp<int64_t>(static_cast<int64_t>(flops / kMinFlopsPerThread), 1, num_threads());

    // Rectangles per batch entry: tm x tn minimising the packing per thread
    // (A is repacked per NC block of the rectangle, B once).
    const int64_t per_batch = pr.batch >= threads ? 1 : ceil_div(threads, pr.batch);
    const int64_t units_m = ceil_div(pr.m, MR), units_n = ceil_div(pr.n, NR);
    int64_t tm = 1, tn = 1;
    double best = -1.0;
    for (int64_t t = 1; t <= per_batch; ++t) {
        if (per_batch % t != 0 || t > units_m || per_batch / t > units_n) continue;
        const double rows = double(pr.m) / t, cols = double(pr.n) / (per_batch / t);
        const double cost = rows * std::ceil(cols / double(pr.blocking.nc)) + cols;
        if (best < 0 || cost < best) best = cost, tm = t, tn = per_batch / t;
    }

    const int64_t items = pr.batch * tm * tn;
    std::atomic<bool> out_of_memory{false};
    parallel_for(items, ceil_div(items, threads), [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t bi = item / (tm * tn), ti = (item / tn) % tm, tj = item % tn;
            const int64_t m0 = std::min(pr.m, units_m * ti / tm * MR), m1 = std::min(pr.m, units_m * (ti + 1) / tm * MR);
            const int64_t n0 = std::min(pr.n, units_n * tj / tn * NR), n1 = std::min(pr.n, units_n * (tj + 1) / tn * NR);
            if (m0 < m1 && n0 < n1 && !run_rectangle<Kern>(pr, bi, m0, m1, n0, n1)) out_of_memory = true;
        }
    });
    if (out_of_memory) throw std::bad_alloc();
}

// Fills a Problem from validated params: transposes the problem when C has a
// unit row stride, and brings the bias to contiguous float32 (in `storage`
// unless it already is).
template <class T>
bool make_problem(const GemmParams& p, std::vector<float>& storage, Problem<T>& pr) {
    const TensorView &a = p.a, &b = p.b, &c = p.c;
    pr.batch = c.shape[0], pr.m = c.shape[1], pr.n = c.shape[2], pr.k = a.shape[2];
    if (pr.batch == 0 || pr.m == 0 || pr.n == 0) return false;
    pr.a = {static_cast<const T*>(a.data), a.strides[1], a.strides[2]};
    pr.b = {static_cast<const T*>(b.data), b.strides[1], b.strides[2]};
    pr.a_bs = a.shape[0] == 1 ? 0 : a.strides[0];
    pr.b_bs = b.shape[0] == 1 ? 0 : b.strides[0];
    pr.c = c.data, pr.c_dtype = c.dtype;
    pr.c_rs = c.strides[1], pr.c_cs = c.strides[2], pr.c_bs = c.strides[0];
    pr.epilogue = {p.alpha, p.beta, nullptr, false, p.activation};
    const bool f32 = c.dtype == DType::f32;
    pr.direct = f32 && (pr.c_cs == 1 || pr.n == 1);
    if (!pr.direct && f32 && (pr.c_rs == 1 || pr.m == 1)) {
        std::swap(pr.m, pr.n);
        const Matrix<T> at{pr.a.data, pr.a.cs, pr.a.rs};
        pr.a = {pr.b.data, pr.b.cs, pr.b.rs};
        pr.b = at;
        std::swap(pr.a_bs, pr.b_bs);
        std::swap(pr.c_rs, pr.c_cs);
        pr.epilogue.bias_on_rows = true;
        pr.direct = true;
    }
    const TensorView& bias = p.bias;
    if (bias.data) {
        const int64_t n = bias.shape[0];
        if (bias.dtype == DType::f32 && (bias.strides[0] == 1 || n == 1)) {
            pr.epilogue.bias = static_cast<const float*>(bias.data);
        } else {
            storage.resize(static_cast<std::size_t>(n));
            for (int64_t j = 0; j < n; ++j)
                storage[j] = bias.dtype == DType::f32
                                 ? static_cast<const float*>(bias.data)[j * bias.strides[0]]
                                 : simd::bf16_to_float(static_cast<const bf16*>(bias.data)[j * bias.strides[0]]);
            pr.epilogue.bias = storage.data();
        }
    }
    return true;
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail
