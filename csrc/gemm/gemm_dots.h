// The GEMM entry every kernel build instantiates (gemm_typed) and the two
// problems it does not give to the tiled driver, because they have no tile
// to fill:
//   - at most kDotOutputs outputs: each a float64 dot product;
//   - at most kRowDotsMax rows (or columns) of C, with A's rows and B's
//     columns contiguous along K (a Linear layer at a few tokens): each
//     output a dot product of two contiguous K-vectors, read where they lie.
// Floor of the second: M N K FMAs against the N K values of B, which are
// read once; at M = 1 that is one FMA per 4 bytes, so B's streaming speed
// decides (4 MB of float32 weights: ~190 us at the ~22 GB/s one core reads).
// The tiled driver packed all of B into slivers for MR-row tiles of which
// M rows were used (1 x 1024 x 1024: 861 us against MKL's 190).
#pragma once

#include "gemm_driver.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail {

// At most this many outputs per batch entry are dot products, summed in
// float64: PyTorch's dot kernels sum with many partial sums, which a float32
// sum of K terms could not match.
inline constexpr int64_t kDotOutputs = 16;

template <class T>
void finalize_sums(const Problem<T>& pr, int64_t bi, const float* sums, int64_t lds, int64_t rows, int64_t col0,
                   int64_t cols) {
    char* c = static_cast<char*>(pr.c) + (bi * pr.c_bs + col0 * pr.c_cs) * static_cast<int64_t>(dtype_size(pr.c_dtype));
    with_activation(pr.epilogue.act, [&](auto act) {
        if (pr.c_dtype == DType::bf16)
            finalize_block<bf16, decltype(act)>(sums, lds, reinterpret_cast<bf16*>(c), pr.c_rs, pr.c_cs, rows, cols,
                                                pr.epilogue, 0, col0);
        else
            finalize_block<float, decltype(act)>(sums, lds, reinterpret_cast<float*>(c), pr.c_rs, pr.c_cs, rows,
                                                 cols, pr.epilogue, 0, col0);
    });
}

template <class T>
void run_dots(const Problem<T>& pr) {
    float sums[kDotOutputs];
    for (int64_t bi = 0; bi < pr.batch; ++bi) {
        const T* a = pr.a.data + bi * pr.a_bs;
        const T* b = pr.b.data + bi * pr.b_bs;
        for (int64_t i = 0; i < pr.m; ++i) {
            for (int64_t j = 0; j < pr.n; ++j) {
                double s = 0.0;
                for (int64_t k = 0; k < pr.k; ++k)
                    s += double(simd::to_float(a[i * pr.a.rs + k * pr.a.cs])) *
                         double(simd::to_float(b[k * pr.b.rs + j * pr.b.cs]));
                sums[i * pr.n + j] = static_cast<float>(s);
            }
        }
        finalize_sums(pr, bi, sums, pr.n, pr.m, 0, pr.n);
    }
}

// Rows per group of accumulators (8 x 3 of the 32 zmm), groups per call.
inline constexpr int kRowGroup = 8, kRowDotsMax = 2 * kRowGroup;

// Vector steps (16 K each on AVX-512) summed in registers before they join
// the output's total: the error grows like kRowDotsBlock + K / (width *
// kRowDotsBlock) + log2(width) roundings, as the tiled kernel's blocked sums.
inline constexpr int64_t kRowDotsBlock = 16;

// Columns of B per pass for RM rows of A: RM x NB accumulators, at most 24
// of the 32 zmm registers. Each vector step loads NB vectors of B and RM of
// A for RM x NB FMAs; at one row the loop is bound by B's loads, which is
// the memory-bound case anyway.
template <int RM>
inline constexpr int kRowDotsCols = RM <= 2 ? 8 : RM <= 4 ? 6 : 3;

// sums[r * NB + j] = dot(a[r], b[j]) over K for r < RM, j < NB; each row and
// column contiguous along K.
template <int RM, int NB, class T>
void row_dots_block(const T* const (&a)[RM], const T* const (&b)[NB], int64_t K, float* sums) {
    constexpr int W = VecF32::width;
    VecF32 total[RM][NB];
    for (int r = 0; r < RM; ++r)
        for (int j = 0; j < NB; ++j) total[r][j] = VecF32::zero();
    const int64_t whole = K / W * W;
    int64_t k = 0;
    auto step = [&](VecF32 (&acc)[RM][NB], int64_t at, int lanes) {
        VecF32 bv[NB];
        for (int j = 0; j < NB; ++j) bv[j] = lanes == W ? simd::load_ahead(b[j] + at) : VecF32::load_partial(b[j] + at, lanes);
        for (int r = 0; r < RM; ++r) {
            const VecF32 av = simd::load_lanes(a[r] + at, lanes);
            for (int j = 0; j < NB; ++j) acc[r][j] = simd::fmadd(av, bv[j], acc[r][j]);
        }
    };
    while (k < K) {
        VecF32 acc[RM][NB];
        for (int r = 0; r < RM; ++r)
            for (int j = 0; j < NB; ++j) acc[r][j] = VecF32::zero();
        const int64_t end = std::min(whole, k + kRowDotsBlock * W);
        for (; k < end; k += W) step(acc, k, W);
        if (k == whole && k < K) step(acc, k, static_cast<int>(K - k)), k = K;
        for (int r = 0; r < RM; ++r)
            for (int j = 0; j < NB; ++j) total[r][j] = total[r][j] + acc[r][j];
    }
    for (int r = 0; r < RM; ++r)
        for (int j = 0; j < NB; ++j) sums[r * NB + j] = simd::reduce_add(total[r][j]);
}

// Columns of C per finalize pass (a multiple of every kRowDotsCols).
inline constexpr int64_t kRowDotsChunk = 48;

// sums[(row0 + r) * kRowDotsChunk + j - c0] for RM rows from row0 and the
// columns c0..c1 of batch entry bi.
template <int RM, class T>
void row_group_dots(const Problem<T>& pr, int64_t bi, int64_t row0, int64_t c0, int64_t c1, float* sums) {
    constexpr int NB = kRowDotsCols<RM>;
    static_assert(kRowDotsChunk % NB == 0);
    const T* a[RM];
    for (int r = 0; r < RM; ++r) a[r] = pr.a.data + bi * pr.a_bs + (row0 + r) * pr.a.rs;
    for (int64_t j0 = c0; j0 < c1; j0 += NB) {
        const T* b[NB];
        // Past the last column the block repeats it (read, not stored).
        for (int j = 0; j < NB; ++j) b[j] = pr.b.data + bi * pr.b_bs + std::min(j0 + j, pr.n - 1) * pr.b.cs;
        float block[RM * NB];
        row_dots_block<RM, NB>(a, b, pr.k, block);
        for (int r = 0; r < RM; ++r)
            for (int j = 0; j < NB; ++j) sums[(row0 + r) * kRowDotsChunk + (j0 - c0) + j] = block[r * NB + j];
    }
}

// Rows of C by columns: pr.m = RM1 + RM2 rows (RM2 = 0: one group), A's
// rows and B's columns unit stride along K. Threads take chunks of
// kRowDotsChunk columns (and batch entries); a second group of rows meets
// the chunk's columns of B while they are in L2 (48 x 4 KB at K = 1024).
// Each output is summed by one thread in one order, so the bits do not
// depend on the thread count.
template <int RM1, int RM2, class T>
void run_row_dots(const Problem<T>& pr) {
    const int64_t chunks = ceil_div(pr.n, kRowDotsChunk), items = pr.batch * chunks;
    const double flops = 2.0 * pr.batch * pr.m * pr.n * pr.k;
    const int64_t threads = std::clamp<int64_t>(static_cast<int64_t>(flops / kMinFlopsPerThread), 1, num_threads());
    parallel_for(items, ceil_div(items, threads), [&](int64_t begin, int64_t end) {
        float sums[(RM1 + RM2) * kRowDotsChunk];
        for (int64_t item = begin; item < end; ++item) {
            const int64_t bi = item / chunks, c0 = item % chunks * kRowDotsChunk;
            const int64_t c1 = std::min(pr.n, c0 + kRowDotsChunk);
            row_group_dots<RM1>(pr, bi, 0, c0, c1, sums);
            if constexpr (RM2 > 0) row_group_dots<RM2>(pr, bi, RM1, c0, c1, sums);
            finalize_sums(pr, bi, sums, kRowDotsChunk, RM1 + RM2, c0, c1 - c0);
        }
    });
}

// C^T = B^T A^T: the same problem with rows and columns exchanged.
template <class T>
Problem<T> transposed(const Problem<T>& pr) {
    Problem<T> t = pr;
    std::swap(t.m, t.n);
    t.a = {pr.b.data, pr.b.cs, pr.b.rs};
    t.b = {pr.a.data, pr.a.cs, pr.a.rs};
    std::swap(t.a_bs, t.b_bs);
    std::swap(t.c_rs, t.c_cs);
    t.epilogue.bias_on_rows = !pr.epilogue.bias_on_rows;
    return t;
}

// M = 1..8 rows in one group, 9..16 in a group of 8 and one of M - 8.
template <int... RM, class T>
bool try_row_dots(const Problem<T>& pr, std::integer_sequence<int, RM...>) {
    return ((pr.m == RM + 1 ? (run_row_dots<RM + 1, 0>(pr), true) : false) || ...) ||
           ((pr.m == kRowGroup + RM + 1 ? (run_row_dots<kRowGroup, RM + 1>(pr), true) : false) || ...);
}

// Whether the problem is few rows (or columns) of dots over contiguous
// K-vectors, and if so runs it. Each output ends in a horizontal sum of its
// vector accumulator (~9 instructions per output on AVX-512), which the
// FMAs must outweigh; the tiled kernel instead wastes (MR - M) / MR of its
// FMAs. Where they cross (one thread, Linear with N = 1024 and 4096 against
// the tiled path): K = 32 at M = 2, 64 at M = 4, 128 at M = 8, so K >= 16 M;
// with two groups (M = 9..16) K >= 32 M (at M = 16, K = 256: 0.53-0.82x
// torch against 0.65-1.10 tiled; K = 1024: 0.91-1.28 against 0.74-0.89).
template <class T>
bool row_dots(const Problem<T>& pr) {
    const bool contiguous = pr.a.cs == 1 && pr.b.rs == 1;
    const Problem<T> few = pr.m <= pr.n ? pr : transposed(pr);
    const int64_t k_per_row = few.m > kRowGroup ? 32 : 16;
    // bfloat16 operands are widened per vector loaded (two more operations
    // per load), and past one group of rows the tiled AMX and vdpbf16ps
    // kernels win (Linear 16 x 4096 x 4096: 0.44x torch here, 0.63 tiled).
    const int64_t max_rows = std::is_same_v<T, float> ? kRowDotsMax : kRowGroup;
    if (!contiguous || few.m > max_rows || pr.k < k_per_row * few.m) return false;
    return try_row_dots(few, std::make_integer_sequence<int, kRowGroup>{});
}

template <class Kern, class T>
void gemm_typed(const GemmParams& p, const CacheSizes& caches) {
    std::vector<float> bias_storage;
    Problem<T> pr;
    if (!make_problem(p, bias_storage, pr)) return;
    if (pr.m * pr.n <= kDotOutputs && pr.k > 0) run_dots(pr);
    else if (!row_dots(pr)) run_problem<Kern>(pr, caches);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::gemm_detail
