// float32 GEMM micro-kernels, compiled once per ISA (CMake:
// FASTNN_KERNEL_SOURCES), and the column sum of Linear's bias gradient.
//
// Floor: 2 M N K FLOPs; with MR x NR accumulators in registers each k step
// loads NR/W vectors of B and broadcasts MR values of A for MR * NR/W FMAs.
// Tile shapes (all registers but a few hold accumulators):
//   AVX-512 14 x 32: 28 zmm accumulators + 2 B vectors + 1 broadcast of 32;
//     28 FMAs per 16 loads, so two FMA pipes stay ahead of the load ports,
//     and 28 independent chains cover the 4-cycle FMA latency 3.5 times.
//   AVX2 6 x 16: 12 ymm accumulators + 2 B + 1 broadcast of 16 (the classic
//     Haswell shape, 12 chains for 2 pipes x 4-5 cycles latency).
//   portable 4 x 16: arrays the compiler may map onto SSE registers.
// bf16 inputs are converted to float32 while packing, so the same kernel
// serves them (the AVX512_BF16 dot-product path is gemm_avx512_bf16.cpp).
#include <cmath>

#include "gemm_dots.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

using gemm_detail::TileUpdate;
using simd::VecF32;

#if FASTNN_SIMD_AVX512
constexpr int kMR = 14, kNV = 2;
#elif FASTNN_SIMD_AVX2
constexpr int kMR = 6, kNV = 2;
#else
constexpr int kMR = 4, kNV = 2;
#endif

struct Fp32Kernel {
    using P = float;
    static constexpr int MR = kMR, NR = kNV * VecF32::width, KU = 1;
    static constexpr gemm_detail::SliverCache b_sliver = gemm_detail::SliverCache::b_in_l2;
    static constexpr bool reads_in_place = true;

    template <class T>
    static void pack_a(const gemm_detail::Matrix<T>& a, int64_t m, int64_t kc, float* dst) {
        if constexpr (std::is_same_v<T, float>) {
#if FASTNN_SIMD_AVX512 || FASTNN_SIMD_AVX2
            if (a.cs == 1) return gemm_detail::pack_lines_transposed<MR>(a.data, a.rs, m, kc, dst);
#endif
            if (a.rs == 1) return gemm_detail::pack_a_unit_row_stride<MR>(a, m, kc, dst);
        }
        gemm_detail::pack_a<MR, KU>(a, m, kc, dst);
    }

    template <class T>
    static void pack_b(const gemm_detail::Matrix<T>& b, int64_t kc, int64_t n, float* dst) {
#if FASTNN_SIMD_AVX512 || FASTNN_SIMD_AVX2
        if constexpr (std::is_same_v<T, float>)
            if (b.rs == 1 && b.cs != 1) return gemm_detail::pack_lines_transposed<NR>(b.data, b.cs, n, kc, dst);
#endif
        gemm_detail::pack_b<NR, KU>(b, kc, n, dst);
    }

    // A sliver's k steps are a_step and b_step floats apart: MR and NR when
    // packed, a row or column stride when read in place (gemm_driver.h).
    // The last row tile of a block may hold fewer than MR rows: on AVX-512
    // (MR = 14) a tile of 8 or 4 rows takes them instead of 14 rows of which
    // m are kept (M = 64: 4 x 14 + 8; M = 16: 14 + 4). 4 rows still keep 8
    // accumulator chains, as many as two FMA pipes of latency 4 need.
    static void micro(int64_t kc, const float* a, int64_t a_step, const float* b, int64_t b_step, float* c,
                      int64_t ldc, int m, int n, const TileUpdate& u) {
        if constexpr (MR > 8) {
            if (m <= 4) return micro_rows<4>(kc, a, a_step, b, b_step, c, ldc, m, n, u);
            if (m <= 8) return micro_rows<8>(kc, a, a_step, b, b_step, c, ldc, m, n, u);
        }
        micro_rows<MR>(kc, a, a_step, b, b_step, c, ldc, m, n, u);
    }

    template <int R>
    static void micro_rows(int64_t kc, const float* a, int64_t a_step, const float* b, int64_t b_step, float* c,
                           int64_t ldc, int m, int n, const TileUpdate& u) {
        constexpr int W = VecF32::width;
        gemm_detail::prefetch_tile<NR>(c, ldc, m);
        VecF32 total[R][kNV];
        gemm_detail::sum_in_blocks<R, kNV>(kc, u.sum_steps, total, [&](VecF32 (&acc)[R][kNV], int64_t steps) {
            for (int64_t k = 0; k < steps; ++k, a += a_step, b += b_step) {
                gemm_detail::prefetch_slivers<R, NR>(a, a_step, b, b_step);
                VecF32 bv[kNV];
#pragma GCC unroll 4
                for (int v = 0; v < kNV; ++v) bv[v] = VecF32::load(b + v * W);
#pragma GCC unroll 32
                for (int i = 0; i < R; ++i) {
                    const VecF32 ai = VecF32::broadcast(a[i]);
#pragma GCC unroll 4
                    for (int v = 0; v < kNV; ++v) acc[i][v] = simd::fmadd(ai, bv[v], acc[i][v]);
                }
            }
        });
        gemm_detail::store_tile<R, kNV>(total, c, ldc, m, n, u);
    }
};

void gemm_kernel(const GemmParams& p, const CacheSizes& caches) {
    if (p.a.dtype == DType::bf16)
        gemm_detail::gemm_typed<Fp32Kernel, bf16>(p, caches);
    else
        gemm_detail::gemm_typed<Fp32Kernel, float>(p, caches);
}

// Each column is a plain running sum plus the exact rounding error of every
// add (Knuth's TwoSum), accumulated in a second sum: Ogita, Rump and Oishi's
// Sum2, as accurate as summing in twice the precision and rounding once,
// whatever the row count (a plain or pairwise float sum loses up to
// log2(rows) bits; Kahan's loses the error of each compensated operand).
// So the result is that of a float64 sum, which the convolution's bias
// gradient of other layouts computes: eager and compiled graphs, which may
// hand backward different strides, agree bit for bit. Where the plain sum
// is not finite it is the answer (inf stays inf, inf - inf and NaN give NaN)
// and the error terms, NaN there, are dropped. (A cheaper pairwise start,
// groups of 8 rows before TwoSum, broke that agreement: bench/notes/gemm.md.)
//
// The rows go in blocks fixed by the row count alone, each block summed row
// after row over a range of kSumColumns columns (sequential reads), then the
// blocks' pairs are added in block order with the same compensation: every
// thread count gives the same bits. The first version walked each 64-column
// chunk down all rows, a 1 KiB-strided stream at 256 columns: 12 GB/s on one
// core, 20 on two (25088 x 256).
constexpr int64_t kSumRows = 256, kMaxSumBlocks = 64, kSumColumns = 1024;

// Vectors of columns whose (sum, error) pairs stay in registers while a pass
// walks down a block's rows (16 of the 32 zmm). Kept in memory and reloaded
// per row, the pairs made each row wait on the last row's stores: 2048 x 96
// took 66 us on one core (torch's sum(0): 15).
constexpr int kSumVectors = 8;

// sum, error (+)= value with the rounding error of the add kept.
inline void two_sum_add(VecF32& sum, VecF32& error, VecF32 value) {
    const VecF32 total = sum + value;
    const VecF32 value_part = total - sum;
    error = error + ((sum - (total - value_part)) + (value - value_part));
    sum = total;
}

// (sum, error) of `cols` unit-stride columns (at most kSumVectors vectors)
// over `rows` rows rs apart, the pairs in registers; stored to sums, errors
// (whole vectors).
template <int NV, class T>
void sum_rows(const T* x, int64_t rs, int64_t rows, int64_t cols, float* sums, float* errors) {
    constexpr int W = VecF32::width;
    const int last = static_cast<int>(cols - (NV - 1) * W);
    VecF32 sum[NV], error[NV];
    for (int v = 0; v < NV; ++v) sum[v] = error[v] = VecF32::zero();
    for (int64_t r = 0; r < rows; ++r, x += rs) {
        for (int v = 0; v + 1 < NV; ++v) two_sum_add(sum[v], error[v], VecF32::load(x + v * W));
        two_sum_add(sum[NV - 1], error[NV - 1], simd::load_lanes(x + (NV - 1) * W, last));
    }
    for (int v = 0; v < NV; ++v) {
        sum[v].store(sums + v * W);
        error[v].store(errors + v * W);
    }
}

template <class T, int... V>
void sum_rows_in_registers(const T* x, int64_t rs, int64_t rows, int64_t cols, float* sums, float* errors,
                           std::integer_sequence<int, V...>) {
    const int64_t nv = gemm_detail::ceil_div(cols, VecF32::width);
    ((nv == V + 1 ? sum_rows<V + 1>(x, rs, rows, cols, sums, errors) : void()), ...);
}

// The same for columns cs apart, gathered one vector at a time.
template <class T>
void sum_rows_gathered(const T* x, int64_t rs, int64_t cs, int64_t rows, int64_t cols, float* sums, float* errors) {
    constexpr int W = VecF32::width;
    float gathered[W];
    for (int64_t j = 0; j < cols; j += W) {
        const int live = static_cast<int>(std::min<int64_t>(W, cols - j));
        VecF32 sum = VecF32::zero(), error = VecF32::zero();
        for (int64_t r = 0; r < rows; ++r) {
            const T* row = x + r * rs + j * cs;
            for (int t = 0; t < live; ++t) gathered[t] = simd::to_float(row[t * cs]);
            two_sum_add(sum, error, VecF32::load_partial(gathered, live));
        }
        sum.store(sums + j);
        error.store(errors + j);
    }
}

template <class T, class TOut>
void column_sum_typed(const ColumnSumParams& p) {
    constexpr int W = VecF32::width;
    const int64_t rows = p.x.shape[0], n = p.x.shape[1];
    const int64_t rs = p.x.strides[0], cs = p.x.strides[1], os = p.out.strides[0];
    const T* x = static_cast<const T*>(p.x.data);
    TOut* out = static_cast<TOut*>(p.out.data);
    if (n == 0) return;
    const int64_t blocks = std::clamp<int64_t>(gemm_detail::ceil_div(rows, kSumRows), 1, kMaxSumBlocks);
    const int64_t block_rows = gemm_detail::ceil_div(std::max<int64_t>(rows, 1), blocks);
    const int64_t np = gemm_detail::round_up(n, W), ranges = gemm_detail::ceil_div(n, kSumColumns);
    // (sum, error) rows of np floats per block.
    float* pairs = thread_workspace<float>(WorkspaceSlot::gemm_scratch, static_cast<size_t>(2 * blocks * np));
    if (!pairs) throw std::bad_alloc();
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(block_rows * kSumColumns, 1));
    parallel_for(blocks * ranges, grain, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
            const int64_t b = task / ranges, j0 = task % ranges * kSumColumns;
            const int64_t j1 = std::min(n, j0 + kSumColumns);
            const int64_t r0 = b * block_rows, r1 = std::min(rows, (b + 1) * block_rows);
            float* sums = pairs + 2 * b * np;
            float* errors = sums + np;
            for (int64_t jc = j0; jc < j1; jc += kSumVectors * W) {
                const int64_t cols = std::min(j1, jc + kSumVectors * W) - jc;
                const T* first = x + r0 * rs + jc * cs;
                if (cs == 1)
                    sum_rows_in_registers(first, rs, r1 - r0, cols, sums + jc, errors + jc,
                                          std::make_integer_sequence<int, kSumVectors>{});
                else
                    sum_rows_gathered(first, rs, cs, r1 - r0, cols, sums + jc, errors + jc);
            }
        }
    });
    parallel_for(np / W, 64, [&](int64_t v0, int64_t v1) {
        float sums[W], errors[W];
        for (int64_t v = v0; v < v1; ++v) {
            VecF32 sum = VecF32::load(pairs + v * W), error = VecF32::load(pairs + np + v * W);
            for (int64_t b = 1; b < blocks; ++b) {
                two_sum_add(sum, error, VecF32::load(pairs + 2 * b * np + v * W));
                error = error + VecF32::load(pairs + (2 * b + 1) * np + v * W);
            }
            sum.store(sums);
            error.store(errors);
            for (int t = 0; t < W && v * W + t < n; ++t) {
                const float total = std::isfinite(sums[t]) ? sums[t] + errors[t] : sums[t];
                out[(v * W + t) * os] = simd::from_float<TOut>(total);
            }
        }
    });
}

void column_sum_kernel(const ColumnSumParams& p) {
    const bool in_bf16 = p.x.dtype == DType::bf16, out_bf16 = p.out.dtype == DType::bf16;
    if (in_bf16 && out_bf16) column_sum_typed<bf16, bf16>(p);
    else if (in_bf16) column_sum_typed<bf16, float>(p);
    else column_sum_typed<float, float>(p);
}

}  // namespace

const GemmKernels gemm_kernels = {gemm_kernel, column_sum_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
