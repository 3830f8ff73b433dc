// LayerNorm / RMSNorm rows, compiled once per ISA (CMake: FASTNN_KERNEL_SOURCES).
//
// Floor: memory. Forward reads x and writes y (plus 8 bytes of statistics per
// row); backward reads grad_out and x and writes grad_x. A row of up to ~8K
// floats stays in L1/L2 between the two sweeps each pass makes over it (stats
// then normalize; sums then grad_x), so DRAM sees each tensor once and the
// arithmetic (a few FMAs per element) hides under the loads.
//
// Statistics in two sweeps over the row (the second from L1): the mean summed
// in float64 lanes (as if summed exactly, then rounded once), then the sum of
// squared deviations from it. The extended mean (rounded value plus the part
// the rounding lost) keeps rows with a large mean and a small variance
// (1e4 + randn) accurate: x - mean is exact there, and y is computed from it.
// Both sweeps are independent chains of a few vector operations per element;
// a compensated float sum (TwoSum) for the mean was one serial chain of four
// dependent operations per vector and made the forward compute-bound.
// RMSNorm needs only a sum of squares.
//
// Parameter gradients: each fixed block of rows accumulates its own sums (the
// block size depends on the shape only), and the blocks are added in order
// afterwards, so the result is the same for any thread count. Within a block,
// kParamRows rows at a time are summed in float32 and then added into the
// block's float64 sums.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fastnn/norm.h"
#include "fastnn/parallel.h"
#include "fastnn/simd.h"
#include "norm_rows.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

using simd::VecF32;
constexpr int W = VecF32::width;
// Independent accumulators per row: enough to cover the add/FMA latency of
// the statistics loop, few enough to stay in registers (32 on AVX-512, 16 on
// AVX2).
#if FASTNN_SIMD_AVX512
constexpr int kChains = 4;
#else
constexpr int kChains = 2;
#endif
constexpr int64_t kGroup = int64_t(kChains) * W;

// A task smaller than this (in elements) costs more to hand to a worker than
// it saves.
constexpr int64_t kElementsPerTask = 16384;
// Outputs this large do not stay in the last-level cache next to their inputs:
// non-temporal stores skip the read-for-ownership of every destination line.
constexpr int64_t kStreamingStoreBytes = int64_t(16) << 20;
// Parameter-gradient blocks: at most kMaxBlocks, each at least this many
// elements and kMinBlockRows rows (bounding the partial sums to 1/4 of x).
constexpr int64_t kMaxBlocks = 64;
constexpr int64_t kMinBlockElements = 32768;
constexpr int64_t kMinBlockRows = 8;
// Rows summed in float32 before joining the block's float64 sums: a float sum
// of a few terms costs a few roundings of the partial sum, against one
// rounding per term already (x - mean, xhat, the product), while the float64
// additions, one per element and kParamRows rows, leave the sweep
// memory-bound (they were 1.5 of its 3.8 ms at 8192 x 1024 when every row
// was added in double).
constexpr int64_t kParamRows = 8;
// Rows a backward sweep takes together (backward_rows); kParamRows is a
// multiple. Their sums take 2 kGroupRows registers.
#if FASTNN_SIMD_AVX512
constexpr int kGroupRows = 4;
#else
constexpr int kGroupRows = 2;
#endif
static_assert(kParamRows % kGroupRows == 0);

// True in the first n lanes.
simd::MaskF32 first_lanes(int n) {
    static const float kOnes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static_assert(W <= 16);
    return simd::cmp_lt(VecF32::zero(), VecF32::load_partial(kOnes, n));
}

// Writes out[0, n) from fn(i, lanes), a vector for elements [i, i + lanes).
// With kStream the aligned middle goes out through non-temporal stores.
template <bool kStream, class T, class Fn>
void write_row(T* out, int64_t n, Fn&& fn) {
    int64_t i = 0;
    if constexpr (kStream) {
        constexpr uintptr_t kVecBytes = W * sizeof(T);
        const uintptr_t misaligned = reinterpret_cast<uintptr_t>(out) % kVecBytes;
        const int64_t head = std::min<int64_t>(n, misaligned ? (kVecBytes - misaligned) / sizeof(T) : 0);
        if (head > 0) {
            fn(int64_t(0), static_cast<int>(head)).store_partial(out, static_cast<int>(head));
            i = head;
        }
        for (; i + W <= n; i += W) fn(i, W).stream(out + i);
    }
    for (; i + W <= n; i += W) fn(i, W).store(out + i);
    if (i < n) fn(i, static_cast<int>(n - i)).store_partial(out + i, static_cast<int>(n - i));
}

// acc + v * v rounded once. The portable fmadd rounds twice, which shows in
// rstd of rows with a large mean; there each product is formed in double
// (exact for floats) instead.
VecF32 add_square(VecF32 v, VecF32 acc) {
#if FASTNN_SIMD_AVX512 || FASTNN_SIMD_AVX2
    return simd::fmadd(v, v, acc);
#else
    for (int i = 0; i < W; ++i) acc.v[i] = static_cast<float>(static_cast<double>(v.v[i]) * v.v[i] + acc.v[i]);
    return acc;
#endif
}

// sum((x - hi - lo)^2), or sum(x^2) without kCentered, in two levels: each
// chain's lanes sum kBlockGroups groups, and the block sums are added into a
// second set of accumulators. A row whose squares span many magnitudes (one
// outlier holding most of the variance) then loses low bits in ~2 sqrt(terms)
// additions per lane instead of in every one, which keeps it within torch's
// error (its moments are combined pairwise).
constexpr int64_t kBlockGroups = 8;

template <bool kCentered, class T>
float sum_of_squares(const T* x, int64_t n, float hi, float lo) {
    const VecF32 vhi = VecF32::broadcast(hi), vlo = VecF32::broadcast(lo);
    auto deviation = [=](VecF32 v) { return kCentered ? (v - vhi) - vlo : v; };
    VecF32 total[kChains], block[kChains];
    for (int c = 0; c < kChains; ++c) total[c] = VecF32::zero();
    int64_t i = 0;
    while (i + kGroup <= n) {
        for (int c = 0; c < kChains; ++c) block[c] = VecF32::zero();
        for (int64_t g = 0; g < kBlockGroups && i + kGroup <= n; ++g, i += kGroup)
            for (int c = 0; c < kChains; ++c)
                block[c] = add_square(deviation(simd::load_ahead(x + i + c * W)), block[c]);
        for (int c = 0; c < kChains; ++c) total[c] = total[c] + block[c];
    }
    VecF32 rest = VecF32::zero();
    for (; i < n; i += W) {
        const int lanes = static_cast<int>(std::min<int64_t>(W, n - i));
        VecF32 d = deviation(simd::load_lanes(x + i, lanes));
        if (kCentered && lanes < W) d = simd::select(first_lanes(lanes), d, VecF32::zero());
        rest = add_square(d, rest);
    }
    for (int c = 1; c < kChains; ++c) total[0] = total[0] + total[c];
    return simd::reduce_add(total[0] + rest);
}

// sum(x) over a row in float64 lanes, two accumulators (four independent
// chains). A float64 sum of floats does not overflow.
template <class T>
double row_sum(const T* x, int64_t n) {
    simd::LaneSumF64 a, b;
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
        a.add(simd::load_ahead(x + i));
        b.add(simd::load_ahead(x + i + W));
    }
    for (; i < n; i += W) a.add(simd::load_lanes(x + i, static_cast<int>(std::min<int64_t>(W, n - i))));
    return a.total() + b.total();
}

struct RowMoments {
    float mean;      // rounded once (0 for rms)
    float mean_low;  // mean - (double) mean, the part the rounding lost
    float rstd;
};

// Rows this short are mostly cancellation: grad_x is orthogonal to xhat (and
// to 1), which leaves few degrees of freedom, so the last bits of the
// statistics and of each term decide the result. They are cheap, so they are
// computed in double throughout; longer rows are not sensitive this way.
constexpr int64_t kShortRow = 16;

template <bool kCentered, class T>
RowMoments short_row_moments(const T* x, int64_t n, float eps) {
    double sum = 0.0;
    if constexpr (kCentered)
        for (int64_t i = 0; i < n; ++i) sum += simd::to_float(x[i]);
    const double mean = sum / static_cast<double>(n);
    double m2 = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double d = simd::to_float(x[i]) - mean;
        m2 += d * d;
    }
    const float rstd = static_cast<float>(1.0 / std::sqrt(m2 / static_cast<double>(n) + eps));
    const float rounded = static_cast<float>(mean);
    return {rounded, static_cast<float>(mean - rounded), rstd};
}

template <bool kCentered, class T>
RowMoments row_moments(const T* x, int64_t n, float eps) {
    if (n <= kShortRow) return short_row_moments<kCentered>(x, n, eps);
    const double inv_n = 1.0 / static_cast<double>(n);
    if constexpr (kCentered) {
        const double mean = row_sum(x, n) * inv_n;
        const float hi = static_cast<float>(mean), lo = static_cast<float>(mean - hi);
        const double var = static_cast<double>(sum_of_squares<true>(x, n, hi, lo)) * inv_n;
        return {hi, lo, static_cast<float>(1.0 / std::sqrt(var + eps))};
    } else {
        const double mean_square = static_cast<double>(sum_of_squares<false>(x, n, 0.0f, 0.0f)) * inv_n;
        return {0.0f, 0.0f, static_cast<float>(1.0 / std::sqrt(mean_square + eps))};
    }
}

// y = (x - mean) * rstd * weight + bias, with (x - mean) * rstd formed as
// (x - mean_hi) * rstd - mean_low * rstd in one rounding. next (or nullptr):
// the row the task takes next, requested a line at a time meanwhile. This
// sweep and the variance's read the row from L1, and without those requests
// memory idled through them: 8192 x 1024 float32 out=, 2 threads, Zen 3 VM,
// RMSNorm 2.04 -> 1.76 ms, LayerNorm 1.91 -> 1.82 (best of 20, alternating).
template <bool kCentered, bool kStream, bool kWeight, bool kBias, class T>
void normalize_row(const T* x, T* y, int64_t n, const RowMoments& st, const float* w, const float* b,
                   const T* next) {
    constexpr int64_t kLineElements = 64 / sizeof(T);
    const VecF32 mean = VecF32::broadcast(st.mean), rstd = VecF32::broadcast(st.rstd);
    const VecF32 low_term = VecF32::broadcast(-st.mean_low * st.rstd);
    // Captures by value: the vector stores may alias any memory (__m512 is
    // may_alias), so captured references would be reloaded every iteration.
    write_row<kStream>(y, n, [=](int64_t i, int lanes) {
        if (next && i % kLineElements < W) __builtin_prefetch(next + i, 0, 3);
        const VecF32 v = simd::load_lanes(x + i, lanes);
        VecF32 r = kCentered ? simd::fmadd(v - mean, rstd, low_term) : v * rstd;
        if constexpr (kWeight && kBias) r = simd::fmadd(r, simd::load_lanes(w + i, lanes), simd::load_lanes(b + i, lanes));
        else if constexpr (kWeight) r = r * simd::load_lanes(w + i, lanes);
        else if constexpr (kBias) r = r + simd::load_lanes(b + i, lanes);
        return r;
    });
}

// weight/bias as contiguous float32: the tensor itself when it already is,
// else a converted copy (N elements, read once per row: converting bfloat16
// or gathering a stride once per call instead of once per row).
inline const float* float_param(const TensorView& v, bool present, std::vector<float>& storage) {
    if (!present) return nullptr;
    const int64_t n = v.shape[0], stride = n > 1 ? v.strides[0] : 1;
    if (v.dtype == DType::f32 && stride == 1) return static_cast<const float*>(v.data);
    storage.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
        storage[i] = v.dtype == DType::f32 ? static_cast<const float*>(v.data)[i * stride]
                                           : simd::to_float(static_cast<const bf16*>(v.data)[i * stride]);
    return storage.data();
}

template <bool kCentered, class T>
void forward_typed(const NormForwardParams& p) {
    const int nlead = p.x.ndim - 1;
    const int64_t n = p.x.shape[nlead];
    const TensorView* ops[] = {&p.x, &p.y, &p.rstd, &p.mean};
    const RowLayout rows = make_row_layout(ops, kCentered ? 4 : 3, nlead);
    if (rows.rows == 0) return;
    const int64_t x_step = n > 1 ? p.x.strides[nlead] : 1, y_step = n > 1 ? p.y.strides[nlead] : 1;
    const bool staged = x_step != 1 || y_step != 1;
    const bool stream = !staged && rows.rows * n * int64_t(sizeof(T)) >= kStreamingStoreBytes;
    std::vector<float> w_copy, b_copy;
    const float* w = float_param(p.weight, p.has_weight, w_copy);
    const float* b = float_param(p.bias, kCentered && p.has_bias, b_copy);

    bool_switch(stream, [&](auto kStream) {
    bool_switch(w != nullptr, [&](auto kWeight) {
    bool_switch(b != nullptr, [&](auto kBias) {
        const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(n, 1));
        parallel_for(rows.rows, grain, [&](int64_t begin, int64_t end) {
            std::vector<T> x_buf(staged ? n : 0), y_buf(staged ? n : 0);
            for (int64_t r = begin; r < end; ++r) {
                const T* x = gather_row(rows.row(0, r), x_step, n, x_buf.data());
                T* y = staged ? y_buf.data() : reinterpret_cast<T*>(rows.row(1, r));
                const RowMoments st = row_moments<kCentered>(x, n, p.eps);
                const T* next = !staged && r + 1 < end ? reinterpret_cast<const T*>(rows.row(0, r + 1)) : nullptr;
                normalize_row<kCentered, kStream, kWeight, kBias>(x, y, n, st, w, b, next);
                if (staged) scatter_row(y_buf.data(), rows.row(1, r), y_step, n);
                *reinterpret_cast<float*>(rows.row(2, r)) = st.rstd;
                if constexpr (kCentered) *reinterpret_cast<float*>(rows.row(3, r)) = st.mean;
            }
            if constexpr (kStream) simd::store_fence();
        });
    });
    });
    });
}

// R rows of the backward pass (R = kGroupRows, or 1 for the rest of a block).
// With d = x - mean (x for rms), xhat = d * rstd and g = grad_out * weight:
//   grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat))
//          = rstd * (g - d * k - mean(g)),   k = rstd^2 * mean(g * d)
// Working from d rather than a rounded xhat saves a rounding on each term of
// the cancelling difference. The first sweep also adds grad_out * xhat and
// grad_out into the float32 parameter partial sums dw_part and db_part. The R
// rows go through each sweep together, column vector by column vector: the
// parameter sums of a column stay in registers across the rows (one load and
// store of the partial sums per R rows, not per row), and 2R input rows
// stream from memory at once.
template <int R, bool kCentered, bool kWeight, bool kGradW, bool kGradB, bool kStream, class T>
void backward_rows(const T* const* dy_rows, const T* const* x_rows, T* const* dx, int64_t n, const float* mean,
                   const float* rstd, const float* w, float* dw_part, float* db_part, const T* const* next_dy_rows,
                   const T* const* next_x_rows) {
    // Local copies: the vector stores may alias any memory, so pointers read
    // through the arrays would be reloaded after every store.
    const T* dy[R];
    const T* x[R];
    const T* next_dy[R];
    const T* next_x[R];
    const bool prefetch = next_dy_rows != nullptr;
    VecF32 vmean[R], vrstd[R], sum_g[R], sum_gd[R];
    for (int k = 0; k < R; ++k) {
        dy[k] = dy_rows[k];
        x[k] = x_rows[k];
        next_dy[k] = prefetch ? next_dy_rows[k] : nullptr;
        next_x[k] = prefetch ? next_x_rows[k] : nullptr;
        vmean[k] = VecF32::broadcast(kCentered ? mean[k] : 0.0f);
        vrstd[k] = VecF32::broadcast(rstd[k]);
        sum_g[k] = sum_gd[k] = VecF32::zero();
    }
    auto column = [&](int64_t i, int lanes) {
        const VecF32 wv = kWeight ? simd::load_lanes(w + i, lanes) : VecF32::zero();
        VecF32 dw = kGradW ? simd::load_lanes(dw_part + i, lanes) : VecF32::zero();
        VecF32 db = kGradB ? simd::load_lanes(db_part + i, lanes) : VecF32::zero();
        for (int k = 0; k < R; ++k) {
            // The next group's rows, requested a group ahead: on its own the
            // hardware prefetcher leaves this sweep waiting on memory.
            if (prefetch) {
                __builtin_prefetch(next_x[k] + i, 0, 3);
                __builtin_prefetch(next_dy[k] + i, 0, 3);
            }
            VecF32 d = simd::load_lanes(x[k] + i, lanes);
            if constexpr (kCentered) d = d - vmean[k];
            // Lanes past the row read 0, whose d (-mean) may be infinite.
            if (lanes < W) d = simd::select(first_lanes(lanes), d, VecF32::zero());
            const VecF32 go = simd::load_lanes(dy[k] + i, lanes);
            const VecF32 g = kWeight ? go * wv : go;
            if constexpr (kCentered) sum_g[k] = sum_g[k] + g;
            sum_gd[k] = simd::fmadd(g, d, sum_gd[k]);
            if constexpr (kGradW) dw = simd::fmadd(go, d * vrstd[k], dw);
            if constexpr (kGradB) db = db + go;
        }
        if constexpr (kGradW) simd::store_lanes(dw, dw_part + i, lanes);
        if constexpr (kGradB) simd::store_lanes(db, db_part + i, lanes);
    };
    int64_t i = 0;
    for (; i + W <= n; i += W) column(i, W);
    if (i < n) column(i, static_cast<int>(n - i));

    const float inv_n = 1.0f / static_cast<float>(n);
    VecF32 mean_g[R], neg_k[R];
    for (int k = 0; k < R; ++k) {
        mean_g[k] = VecF32::broadcast(kCentered ? simd::reduce_add(sum_g[k]) * inv_n : 0.0f);
        neg_k[k] = VecF32::broadcast(-rstd[k] * (rstd[k] * (simd::reduce_add(sum_gd[k]) * inv_n)));
    }
    for (int k = 0; k < R; ++k) {
        const T* xk = x[k];
        const T* dyk = dy[k];
        const VecF32 vm = vmean[k], vr = vrstd[k], mg = mean_g[k], nk = neg_k[k];
        // Captured by value (see normalize_row).
        write_row<kStream>(dx[k], n, [=](int64_t i, int lanes) {
            const VecF32 d = kCentered ? simd::load_lanes(xk + i, lanes) - vm : simd::load_lanes(xk + i, lanes);
            const VecF32 go = simd::load_lanes(dyk + i, lanes);
            const VecF32 t = simd::fmadd(d, nk, kWeight ? go * simd::load_lanes(w + i, lanes) : go);
            return (kCentered ? t - mg : t) * vr;
        });
    }
}

// part (n floats) added into acc (n doubles), then zeroed.
void flush_partial(float* part, double* acc, int64_t n) {
    for (int64_t i = 0; i < n; i += W) {
        const int lanes = static_cast<int>(std::min<int64_t>(W, n - i));
        simd::add_to_double(acc + i, simd::load_lanes(part + i, lanes), lanes);
        simd::store_lanes(VecF32::zero(), part + i, lanes);
    }
}

// backward_row in double, for rows of at most kShortRow elements.
template <bool kCentered, bool kWeight, bool kGradW, bool kGradB, class T>
void short_backward_row(const T* dy, const T* x, T* dx, int64_t n, float mean, float rstd, const float* w,
                        double* dw_acc, double* db_acc) {
    double d[kShortRow], g[kShortRow], sum_g = 0.0, sum_gd = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double go = simd::to_float(dy[i]);
        d[i] = simd::to_float(x[i]) - (kCentered ? static_cast<double>(mean) : 0.0);
        g[i] = kWeight ? go * simd::to_float(w[i]) : go;
        sum_g += g[i];
        sum_gd += g[i] * d[i];
        if constexpr (kGradW) dw_acc[i] += go * d[i] * rstd;
        if constexpr (kGradB) db_acc[i] += go;
    }
    const double r = rstd, mean_g = kCentered ? sum_g / static_cast<double>(n) : 0.0;
    const double k = r * r * sum_gd / static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) dx[i] = simd::from_float<T>(static_cast<float>(r * (g[i] - d[i] * k - mean_g)));
}

// Fixed row blocks for the parameter gradients: a function of the shape only.
int64_t rows_per_block(int64_t rows, int64_t n) {
    const int64_t by_size = std::max<int64_t>(1, rows * std::max<int64_t>(n, 1) / kMinBlockElements);
    const int64_t blocks = std::max<int64_t>(1, std::min({kMaxBlocks, by_size, rows / kMinBlockRows}));
    return (rows + blocks - 1) / blocks;
}

template <bool kCentered, class T>
void backward_typed(const NormBackwardParams& p) {
    const int nlead = p.x.ndim - 1;
    const int64_t n = p.x.shape[nlead];
    const TensorView* ops[] = {&p.grad_out, &p.x, &p.grad_x, &p.rstd, &p.mean};
    const RowLayout rows = make_row_layout(ops, kCentered ? 5 : 4, nlead);
    const bool grad_w = p.want_grad_weight, grad_b = kCentered && p.want_grad_bias;
    const int nparams = int(grad_w) + int(grad_b);

    const int64_t block = rows.rows > 0 ? rows_per_block(rows.rows, n) : 1;
    const int64_t nblocks = (rows.rows + block - 1) / block;
    // Partial sums per block: [block][grad_weight, grad_bias][n], in double so
    // that adding the blocks (and short rows, which add straight into them)
    // costs no precision.
    std::vector<double> partial(static_cast<size_t>(nparams > 0 ? nblocks * nparams * n : 0));
    if (rows.rows > 0 && n > 0) {
        auto step = [&](const TensorView& v) { return n > 1 ? v.strides[nlead] : int64_t(1); };
        const int64_t dy_step = step(p.grad_out), x_step = step(p.x), dx_step = step(p.grad_x);
        const bool staged = dy_step != 1 || x_step != 1 || dx_step != 1;
        const bool stream = !staged && rows.rows * n * int64_t(sizeof(T)) >= kStreamingStoreBytes;
        std::vector<float> w_copy;
        const float* w = float_param(p.weight, p.has_weight, w_copy);

        bool_switch(stream, [&](auto kStream) {
        bool_switch(w != nullptr, [&](auto kWeight) {
        bool_switch(grad_w, [&](auto kGradW) {
        bool_switch(grad_b, [&](auto kGradB) {
            // Without parameter gradients any split of the rows gives the same
            // result; with them, each task owns whole blocks.
            const int64_t unit = nparams > 0 ? block : 1;
            const int64_t units = nparams > 0 ? nblocks : rows.rows;
            const int64_t grain = nparams > 0 ? 1 : std::max<int64_t>(1, kElementsPerTask / n);
            parallel_for(units, grain, [&](int64_t begin, int64_t end) {
                const bool short_rows = n <= kShortRow;
                const size_t buf = staged ? static_cast<size_t>(kGroupRows * n) : 0;
                std::vector<T> dy_buf(buf), x_buf(buf), dx_buf(buf);
                std::vector<float> float_part(short_rows ? 0 : static_cast<size_t>(nparams * n));
                float* dw_part = grad_w ? float_part.data() : nullptr;
                float* db_part = grad_b ? float_part.data() + (grad_w ? n : 0) : nullptr;
                const T* dy[kGroupRows];
                const T* x[kGroupRows];
                const T* next_dy[kGroupRows];
                const T* next_x[kGroupRows];
                T* dx[kGroupRows];
                const T* const* no_rows = nullptr;
                float mean[kGroupRows], rstd[kGroupRows];
                for (int64_t u = begin; u < end; ++u) {
                    double* block_partial = nparams > 0 ? partial.data() + u * nparams * n : nullptr;
                    double* dw_acc = grad_w ? block_partial : nullptr;
                    double* db_acc = grad_b ? block_partial + (grad_w ? n : 0) : nullptr;
                    const int64_t r_begin = u * unit, r_end = std::min(rows.rows, (u + 1) * unit);
                    for (int64_t r0 = r_begin; r0 < r_end;) {
                        const int group = short_rows || r_end - r0 < kGroupRows ? 1 : kGroupRows;
                        for (int k = 0; k < group; ++k) {
                            const int64_t r = r0 + k;
                            dy[k] = gather_row(rows.row(0, r), dy_step, n, dy_buf.data() + (staged ? k * n : 0));
                            x[k] = gather_row(rows.row(1, r), x_step, n, x_buf.data() + (staged ? k * n : 0));
                            dx[k] = staged ? dx_buf.data() + k * n : reinterpret_cast<T*>(rows.row(2, r));
                            rstd[k] = *reinterpret_cast<const float*>(rows.row(3, r));
                            mean[k] = kCentered ? *reinterpret_cast<const float*>(rows.row(4, r)) : 0.0f;
                        }
                        if (short_rows)
                            short_backward_row<kCentered, kWeight, kGradW, kGradB>(dy[0], x[0], dx[0], n, mean[0],
                                                                                   rstd[0], w, dw_acc, db_acc);
                        else if (group == kGroupRows) {
                            const bool ahead = !staged && r0 + 2 * kGroupRows <= r_end;
                            for (int k = 0; ahead && k < kGroupRows; ++k) {
                                next_dy[k] = reinterpret_cast<const T*>(rows.row(0, r0 + kGroupRows + k));
                                next_x[k] = reinterpret_cast<const T*>(rows.row(1, r0 + kGroupRows + k));
                            }
                            backward_rows<kGroupRows, kCentered, kWeight, kGradW, kGradB, kStream>(
                                dy, x, dx, n, mean, rstd, w, dw_part, db_part, ahead ? next_dy : no_rows,
                                ahead ? next_x : no_rows);
                        } else {
                            backward_rows<1, kCentered, kWeight, kGradW, kGradB, kStream>(
                                dy, x, dx, n, mean, rstd, w, dw_part, db_part, no_rows, no_rows);
                        }
                        if (staged)
                            for (int k = 0; k < group; ++k) scatter_row(dx[k], rows.row(2, r0 + k), dx_step, n);
                        r0 += group;
                        if (!short_rows && ((r0 - r_begin) % kParamRows == 0 || r0 == r_end)) {
                            if (kGradW) flush_partial(dw_part, dw_acc, n);
                            if (kGradB) flush_partial(db_part, db_acc, n);
                        }
                    }
                }
                if constexpr (kStream) simd::store_fence();
            });
        });
        });
        });
        });
    }
    if (nparams == 0) return;

    // Blocks added in index order, columns in parallel.
    auto reduce_into = [&](const TensorView& out, int slot) {
        char* base = static_cast<char*>(out.data);
        const int64_t stride = out.shape[0] > 1 ? out.strides[0] : 1;
        parallel_for(n, kElementsPerTask / std::max<int64_t>(nblocks, 1) + 1, [&](int64_t begin, int64_t end) {
            for (int64_t j = begin; j < end; ++j) {
                double s = 0.0;
                for (int64_t b = 0; b < nblocks; ++b) s += partial[(b * nparams + slot) * n + j];
                if (out.dtype == DType::bf16)
                    reinterpret_cast<bf16*>(base)[j * stride] = simd::float_to_bf16(static_cast<float>(s));
                else
                    reinterpret_cast<float*>(base)[j * stride] = static_cast<float>(s);
            }
        });
    };
    if (grad_w) reduce_into(p.grad_weight, 0);
    if (grad_b) reduce_into(p.grad_bias, grad_w ? 1 : 0);
}

// Parameters are converted to float32 once per call, so only x's dtype picks
// an instantiation.
template <template <bool, class> class Fn, class Params>
void dispatch(bool centered, DType x, const Params& p) {
    bool_switch(centered, [&](auto kCentered) {
        if (x == DType::bf16) Fn<kCentered, bf16>::run(p);
        else Fn<kCentered, float>::run(p);
    });
}

template <bool kCentered, class T>
struct Forward {
    static void run(const NormForwardParams& p) { forward_typed<kCentered, T>(p); }
};

template <bool kCentered, class T>
struct Backward {
    static void run(const NormBackwardParams& p) { backward_typed<kCentered, T>(p); }
};

void norm_forward_kernel(const NormForwardParams& p) { dispatch<Forward>(p.kind == NormKind::layer, p.x.dtype, p); }

void norm_backward_kernel(const NormBackwardParams& p) { dispatch<Backward>(p.kind == NormKind::layer, p.x.dtype, p); }

}  // namespace

const NormKernels norm_kernels = {norm_forward_kernel, norm_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
