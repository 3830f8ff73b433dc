// LayerNorm / RMSNorm rows, compiled once per ISA (CMake: FASTNN_KERNEL_SOURCES).
//
// Floor: memory. Forward reads x and writes y (plus 8 bytes of statistics per
// row); backward reads grad_out and x and writes grad_x. A row of up to ~8K
// floats stays in L1/L2 between the two sweeps each pass makes over it (stats
// then normalize; sums then grad_x), so DRAM sees each tensor once and the
// arithmetic (a few FMAs per element) hides under the loads.
//
// Statistics in one sweep. LayerNorm runs Welford's update on x - x[0]: in
// kChains independent vector accumulators (to cover the FMA latency), all with
// the same count, so merging them (and then their lanes) is the exact
// equal-count case of Chan's formula; the remainder of fewer than kChains
// vectors is summed twice in L1 and merged by Chan's formula. The shift keeps
// rows with a large mean and a small variance (1e4 + randn) accurate: x - x[0]
// is exact there (and a constant row gives exactly 0), and y is computed from
// it, never from the rounded mean. The mean itself comes from a compensated
// sum of x - x[0] (error-free TwoSum transformations, lanes added in double),
// rounded once; Welford's running means are a few ulps worse.
// RMSNorm needs only a sum of squares (positive terms, no cancellation).
//
// Parameter gradients: each fixed block of rows accumulates its own float32
// partial sums (the block size depends on the shape only), and the blocks are
// added in order afterwards, so the result is the same for any thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fastnn/norm.h"
#include "fastnn/parallel.h"
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
// Long rows add grad_out * xhat into float vectors for this many rows, then
// into the block's double sums: float error grows with the terms summed, and
// the flush (n float->double adds) is cheap next to 8 rows of work.
constexpr int64_t kFloatAccumulatedRows = 8;

template <class T>
VecF32 load_n(const T* p, int n) {
    return n == W ? VecF32::load(p) : VecF32::load_partial(p, n);
}

template <class T>
void store_n(VecF32 v, T* p, int n) {
    if (n == W) v.store(p);
    else v.store_partial(p, n);
}

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

// Count, mean and sum of squared deviations of a set of values.
struct Moments {
    double n = 0;
    float mean = 0, m2 = 0;
};

Moments merge(const Moments& a, const Moments& b) {
    const double n = a.n + b.n;
    if (n == 0) return a;
    const float delta = b.mean - a.mean;
    const float wb = static_cast<float>(b.n / n), wab = static_cast<float>(a.n * b.n / n);
    return {n, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * wab};
}

// a + b = sum + returned error, exactly (Knuth's TwoSum).
VecF32 two_sum(VecF32 a, VecF32 b, VecF32& sum) {
    sum = a + b;
    const VecF32 z = sum - a;
    return (a - (sum - z)) + (b - z);
}

// Sum of x - s over vectors x, to the last bits (Ogita, Rump and Oishi's
// Sum2): the rounding errors of each difference and of each addition are
// recovered exactly by TwoSum and accumulated in `low`, whose own rounding is
// second order; the sum is sum + low.
struct DifferenceSum {
    VecF32 sum = VecF32::zero(), low = VecF32::zero();
    void add(VecF32 x, VecF32 s) {
        VecF32 d;
        const VecF32 lost = two_sum(x, VecF32::zero() - s, d);
        low = low + (lost + two_sum(sum, d, sum));
    }
};

// The chains' sums merged exactly into one vector (plus the low parts), then
// the lanes added in double: a float reduction here would lose what the
// compensation kept.
template <int K>
double sum_of(const DifferenceSum (&parts)[K]) {
    VecF32 hi = parts[0].sum, lo = parts[0].low;
    for (int c = 1; c < K; ++c) lo = lo + parts[c].low + two_sum(hi, parts[c].sum, hi);
    float hi_lanes[W], lo_lanes[W];
    hi.store(hi_lanes);
    lo.store(lo_lanes);
    double even = 0.0, odd = 0.0;
    for (int j = 0; j < W; j += 2) {
        even += static_cast<double>(hi_lanes[j]) + static_cast<double>(lo_lanes[j]);
        odd += static_cast<double>(hi_lanes[j + 1]) + static_cast<double>(lo_lanes[j + 1]);
    }
    return even + odd;
}

// Moments of x[i] - shift: Welford's update gives m2; the mean comes from a
// compensated sum instead, since Welford's running means (and the rounding of
// x - shift) cost a few ulps that torch's summation does not.
struct ShiftedMoments {
    double mean;  // of x - shift
    float m2;
};

template <class T>
ShiftedMoments shifted_moments(const T* x, int64_t n, float shift) {
    const VecF32 s = VecF32::broadcast(shift);
    Moments total;
    DifferenceSum sum[kChains];
    int64_t i = 0;
    if (n >= kGroup) {
        VecF32 mean[kChains], m2[kChains];
        for (int c = 0; c < kChains; ++c) mean[c] = m2[c] = VecF32::zero();
        int64_t count = 0;
        for (; i + kGroup <= n; i += kGroup) {
            const VecF32 inv = VecF32::broadcast(1.0f / static_cast<float>(++count));
            for (int c = 0; c < kChains; ++c) {
                const VecF32 v = VecF32::load(x + i + c * W);
                const VecF32 d = v - s;
                const VecF32 delta = d - mean[c];
                mean[c] = simd::fmadd(delta, inv, mean[c]);
                m2[c] = simd::fmadd(delta, d - mean[c], m2[c]);
                sum[c].add(v, s);
            }
        }
        // k parts of equal count c merge to mean = avg(mean_k) and
        // m2 = sum(m2_k) + c * sum((mean_k - mean)^2): first the chains, then
        // the lanes.
        VecF32 mean_sum = mean[0], m2_sum = m2[0];
        for (int c = 1; c < kChains; ++c) {
            mean_sum = mean_sum + mean[c];
            m2_sum = m2_sum + m2[c];
        }
        const VecF32 lane_mean = mean_sum * VecF32::broadcast(1.0f / kChains);
        VecF32 spread = VecF32::zero();
        for (int c = 0; c < kChains; ++c) {
            const VecF32 e = mean[c] - lane_mean;
            spread = simd::fmadd(e, e, spread);
        }
        const VecF32 lane_m2 = simd::fmadd(spread, VecF32::broadcast(static_cast<float>(count)), m2_sum);
        const float row_mean = simd::reduce_add(lane_mean) * (1.0f / W);
        const VecF32 e = lane_mean - VecF32::broadcast(row_mean);
        const float lane_spread = simd::reduce_add(e * e);
        total.n = static_cast<double>(i);
        total.mean = row_mean;
        total.m2 = simd::reduce_add(lane_m2) + static_cast<float>(count * kChains) * lane_spread;
    }
    // Fewer than kGroup elements left (in L1): mean, then squared deviations.
    // Lanes past the row are set to the shift, so they add 0.
    Moments rest;
    if (i < n) {
        VecF32 rest_sum = VecF32::zero();
        for (int64_t j = i; j < n; j += W) {
            const int lanes = static_cast<int>(std::min<int64_t>(W, n - j));
            VecF32 v = load_n(x + j, lanes);
            if (lanes < W) v = simd::select(first_lanes(lanes), v, s);
            rest_sum = rest_sum + (v - s);
            sum[0].add(v, s);
        }
        rest.n = static_cast<double>(n - i);
        rest.mean = simd::reduce_add(rest_sum) / static_cast<float>(n - i);
        const VecF32 rm = VecF32::broadcast(rest.mean);
        VecF32 sq = VecF32::zero();
        for (int64_t j = i; j < n; j += W) {
            const int lanes = static_cast<int>(std::min<int64_t>(W, n - j));
            VecF32 e = load_n(x + j, lanes) - s - rm;
            if (lanes < W) e = simd::select(first_lanes(lanes), e, VecF32::zero());
            sq = simd::fmadd(e, e, sq);
        }
        rest.m2 = simd::reduce_add(sq);
    }
    const double mean = n > 0 ? sum_of(sum) / static_cast<double>(n) : 0.0;
    return {mean, merge(total, rest).m2};
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

template <class T>
float sum_of_squares(const T* x, int64_t n) {
    VecF32 acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = VecF32::zero();
    int64_t i = 0;
    for (; i + kGroup <= n; i += kGroup)
        for (int c = 0; c < kChains; ++c) {
            const VecF32 v = VecF32::load(x + i + c * W);
            acc[c] = add_square(v, acc[c]);
        }
    for (; i < n; i += W) {  // partial loads fill the missing lanes with 0
        const VecF32 v = load_n(x + i, static_cast<int>(std::min<int64_t>(W, n - i)));
        acc[0] = add_square(v, acc[0]);
    }
    for (int c = 1; c < kChains; ++c) acc[0] = acc[0] + acc[c];
    return simd::reduce_add(acc[0]);
}

struct RowStats {
    float shift;   // subtracted from x before scaling (0 for rms)
    float center;  // mean of x - shift
    float mean;    // shift + center, rounded once
    float rstd;
};

// Rows this short are mostly cancellation: grad_x is orthogonal to xhat (and
// to 1), which leaves few degrees of freedom, so the last bits of the
// statistics and of each term decide the result. They are cheap, so they are
// computed in double throughout; longer rows are not sensitive this way.
constexpr int64_t kShortRow = 16;

template <bool kCentered, class T>
RowStats short_row_stats(const T* x, int64_t n, float eps) {
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
    const float shift = static_cast<float>(mean);
    return {shift, static_cast<float>(mean - shift), shift, rstd};
}

template <bool kCentered, class T>
RowStats row_stats(const T* x, int64_t n, float eps) {
    if (n <= kShortRow) return short_row_stats<kCentered>(x, n, eps);
    if constexpr (kCentered) {
        const float shift = simd::to_float(x[0]);
        const ShiftedMoments m = shifted_moments(x, n, shift);
        const double var = std::max(static_cast<double>(m.m2) / static_cast<double>(n), 0.0);
        return {shift, static_cast<float>(m.mean), static_cast<float>(shift + m.mean),
                static_cast<float>(1.0 / std::sqrt(var + eps))};
    } else {
        const double mean_square = static_cast<double>(sum_of_squares(x, n)) / static_cast<double>(n);
        return {0.0f, 0.0f, 0.0f, static_cast<float>(1.0 / std::sqrt(mean_square + eps))};
    }
}

// y = ((x - shift - center) * rstd) * weight + bias
template <bool kStream, bool kWeight, bool kBias, class T, class Wt>
void normalize_row(const T* x, T* y, int64_t n, const RowStats& st, const Wt* w, const Wt* b) {
    const VecF32 shift = VecF32::broadcast(st.shift), center = VecF32::broadcast(st.center);
    const VecF32 rstd = VecF32::broadcast(st.rstd);
    write_row<kStream>(y, n, [&](int64_t i, int lanes) {
        VecF32 v = (load_n(x + i, lanes) - shift - center) * rstd;
        if constexpr (kWeight && kBias) v = simd::fmadd(v, load_n(w + i, lanes), load_n(b + i, lanes));
        else if constexpr (kWeight) v = v * load_n(w + i, lanes);
        else if constexpr (kBias) v = v + load_n(b + i, lanes);
        return v;
    });
}

// Contiguous copies of weight/bias when their stride is not 1 (they are N
// elements, read once per row).
template <class Wt>
const Wt* contiguous_param(const TensorView& v, bool present, std::vector<Wt>& storage) {
    if (!present) return nullptr;
    const char* p = static_cast<const char*>(v.data);
    if (v.shape[0] <= 1 || v.strides[0] == 1) return reinterpret_cast<const Wt*>(p);
    storage.resize(static_cast<size_t>(v.shape[0]));
    return gather_row(p, v.strides[0], v.shape[0], storage.data());
}

template <bool kCentered, class T, class Wt>
void forward_typed(const NormForwardParams& p) {
    const int nlead = p.x.ndim - 1;
    const int64_t n = p.x.shape[nlead];
    const TensorView* ops[] = {&p.x, &p.y, &p.rstd, &p.mean};
    const RowLayout rows = make_row_layout(ops, kCentered ? 4 : 3, nlead);
    if (rows.rows == 0) return;
    const int64_t x_step = n > 1 ? p.x.strides[nlead] : 1, y_step = n > 1 ? p.y.strides[nlead] : 1;
    const bool staged = x_step != 1 || y_step != 1;
    const bool stream = !staged && rows.rows * n * int64_t(sizeof(T)) >= kStreamingStoreBytes;
    std::vector<Wt> w_copy, b_copy;
    const Wt* w = contiguous_param(p.weight, p.has_weight, w_copy);
    const Wt* b = contiguous_param(p.bias, kCentered && p.has_bias, b_copy);

    bool_switch(stream, [&](auto kStream) {
    bool_switch(w != nullptr, [&](auto kWeight) {
    bool_switch(b != nullptr, [&](auto kBias) {
        const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(n, 1));
        parallel_for(rows.rows, grain, [&](int64_t begin, int64_t end) {
            std::vector<T> x_buf(staged ? n : 0), y_buf(staged ? n : 0);
            for (int64_t r = begin; r < end; ++r) {
                const T* x = gather_row(rows.row(0, r), x_step, n, x_buf.data());
                T* y = staged ? y_buf.data() : reinterpret_cast<T*>(rows.row(1, r));
                const RowStats st = row_stats<kCentered>(x, n, p.eps);
                normalize_row<kStream, kWeight, kBias>(x, y, n, st, w, b);
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

// One row of the backward pass. With d = x - mean (x for rms), xhat = d * rstd
// and g = grad_out * weight:
//   grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat))
//          = rstd * (g - d * k - mean(g)),   k = rstd^2 * mean(g * d)
// Working from d rather than a rounded xhat saves a rounding on each term of
// the cancelling difference. The first sweep also adds grad_out * xhat and
// grad_out into the block's parameter partial sums.
template <bool kCentered, bool kWeight, bool kGradW, bool kGradB, bool kStream, class T, class Wt>
void backward_row(const T* dy, const T* x, T* dx, int64_t n, float mean, float rstd, const Wt* w,
                  float* dw_acc, float* db_acc) {
    const VecF32 vmean = VecF32::broadcast(kCentered ? mean : 0.0f), vrstd = VecF32::broadcast(rstd);
    auto load_d = [&](int64_t i, int lanes) {
        const VecF32 v = load_n(x + i, lanes);
        return kCentered ? v - vmean : v;
    };
    auto scale_by_weight = [&](VecF32 v, int64_t i, int lanes) {
        if constexpr (kWeight) return v * load_n(w + i, lanes);
        else return v;
    };
    VecF32 sum_g = VecF32::zero(), sum_gd = VecF32::zero();
    auto accumulate = [&](int64_t i, int lanes) {
        VecF32 d = load_d(i, lanes);
        // Lanes past the row read 0, whose d (-mean) may be infinite.
        if (lanes < W) d = simd::select(first_lanes(lanes), d, VecF32::zero());
        const VecF32 go = load_n(dy + i, lanes);
        const VecF32 g = scale_by_weight(go, i, lanes);
        if constexpr (kCentered) sum_g = sum_g + g;
        sum_gd = simd::fmadd(g, d, sum_gd);
        if constexpr (kGradW) store_n(simd::fmadd(go, d * vrstd, load_n(dw_acc + i, lanes)), dw_acc + i, lanes);
        if constexpr (kGradB) store_n(go + load_n(db_acc + i, lanes), db_acc + i, lanes);
    };
    int64_t i = 0;
    for (; i + W <= n; i += W) accumulate(i, W);
    if (i < n) accumulate(i, static_cast<int>(n - i));

    const float inv_n = 1.0f / static_cast<float>(n);
    const VecF32 mean_g = VecF32::broadcast(kCentered ? simd::reduce_add(sum_g) * inv_n : 0.0f);
    const VecF32 neg_k = VecF32::broadcast(-rstd * (rstd * (simd::reduce_add(sum_gd) * inv_n)));
    write_row<kStream>(dx, n, [&](int64_t i, int lanes) {
        const VecF32 t = simd::fmadd(load_d(i, lanes), neg_k, scale_by_weight(load_n(dy + i, lanes), i, lanes));
        return (kCentered ? t - mean_g : t) * vrstd;
    });
}

// backward_row in double, for rows of at most kShortRow elements.
template <bool kCentered, bool kWeight, bool kGradW, bool kGradB, class T, class Wt>
void short_backward_row(const T* dy, const T* x, T* dx, int64_t n, float mean, float rstd, const Wt* w,
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

template <bool kCentered, class T, class Wt>
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
        std::vector<Wt> w_copy;
        const Wt* w = contiguous_param(p.weight, p.has_weight, w_copy);

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
                std::vector<T> dy_buf(staged ? n : 0), x_buf(staged ? n : 0), dx_buf(staged ? n : 0);
                const bool short_rows = n <= kShortRow;
                std::vector<float> block_acc(short_rows ? 0 : nparams * n);
                for (int64_t u = begin; u < end; ++u) {
                    double* block_partial = nparams > 0 ? partial.data() + u * nparams * n : nullptr;
                    float* dw_acc = grad_w ? block_acc.data() : nullptr;
                    float* db_acc = grad_b ? block_acc.data() + (grad_w ? n : 0) : nullptr;
                    double* dw_short = grad_w ? block_partial : nullptr;
                    double* db_short = grad_b ? block_partial + (grad_w ? n : 0) : nullptr;
                    auto flush = [&] {
                        for (size_t j = 0; j < block_acc.size(); ++j) {
                            block_partial[j] += block_acc[j];
                            block_acc[j] = 0.0f;
                        }
                    };
                    const int64_t r_end = std::min(rows.rows, (u + 1) * unit);
                    for (int64_t r = u * unit; r < r_end; ++r) {
                        if ((r - u * unit) % kFloatAccumulatedRows == 0) flush();
                        const T* dy = gather_row(rows.row(0, r), dy_step, n, dy_buf.data());
                        const T* x = gather_row(rows.row(1, r), x_step, n, x_buf.data());
                        T* dx = staged ? dx_buf.data() : reinterpret_cast<T*>(rows.row(2, r));
                        const float rstd = *reinterpret_cast<const float*>(rows.row(3, r));
                        const float mean = kCentered ? *reinterpret_cast<const float*>(rows.row(4, r)) : 0.0f;
                        if (short_rows)
                            short_backward_row<kCentered, kWeight, kGradW, kGradB>(dy, x, dx, n, mean, rstd, w,
                                                                                   dw_short, db_short);
                        else
                            backward_row<kCentered, kWeight, kGradW, kGradB, kStream>(dy, x, dx, n, mean, rstd,
                                                                                       w, dw_acc, db_acc);
                        if (staged) scatter_row(dx_buf.data(), rows.row(2, r), dx_step, n);
                    }
                    flush();
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
                reinterpret_cast<Wt*>(base)[j * stride] = simd::from_float<Wt>(static_cast<float>(s));
            }
        });
    };
    if (grad_w) reduce_into(p.grad_weight, 0);
    if (grad_b) reduce_into(p.grad_bias, grad_w ? 1 : 0);
}

// Parameters are float32 or x's dtype: at most two (T, Wt) pairs per x dtype.
template <template <bool, class, class> class Fn, class Params>
void dispatch(bool centered, DType x, DType w, const Params& p) {
    bool_switch(centered, [&](auto kCentered) {
        if (x == DType::bf16) {
            if (w == DType::bf16) Fn<kCentered, bf16, bf16>::run(p);
            else Fn<kCentered, bf16, float>::run(p);
        } else {
            if (w == DType::bf16) Fn<kCentered, float, bf16>::run(p);
            else Fn<kCentered, float, float>::run(p);
        }
    });
}

template <bool kCentered, class T, class Wt>
struct Forward {
    static void run(const NormForwardParams& p) { forward_typed<kCentered, T, Wt>(p); }
};

template <bool kCentered, class T, class Wt>
struct Backward {
    static void run(const NormBackwardParams& p) { backward_typed<kCentered, T, Wt>(p); }
};

void norm_forward_kernel(const NormForwardParams& p) {
    const DType w = p.has_weight ? p.weight.dtype : p.has_bias ? p.bias.dtype : DType::f32;
    dispatch<Forward>(p.kind == NormKind::layer, p.x.dtype, w, p);
}

void norm_backward_kernel(const NormBackwardParams& p) {
    const DType w = p.has_weight ? p.weight.dtype : p.want_grad_bias ? p.grad_bias.dtype : DType::f32;
    dispatch<Backward>(p.kind == NormKind::layer, p.x.dtype, w, p);
}

}  // namespace

const NormKernels norm_kernels = {norm_forward_kernel, norm_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
