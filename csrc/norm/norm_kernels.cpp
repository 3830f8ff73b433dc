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
// is exact there, and y is computed from it, never from the rounded mean.
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
constexpr int kChains = 4;
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

// Moments of x[i] - shift.
template <class T>
Moments shifted_moments(const T* x, int64_t n, float shift) {
    const VecF32 s = VecF32::broadcast(shift);
    Moments total;
    int64_t i = 0;
    if (n >= kGroup) {
        VecF32 mean[kChains], m2[kChains];
        for (int c = 0; c < kChains; ++c) mean[c] = m2[c] = VecF32::zero();
        int64_t count = 0;
        for (; i + kGroup <= n; i += kGroup) {
            const VecF32 inv = VecF32::broadcast(1.0f / static_cast<float>(++count));
            for (int c = 0; c < kChains; ++c) {
                const VecF32 d = VecF32::load(x + i + c * W) - s;
                const VecF32 delta = d - mean[c];
                mean[c] = simd::fmadd(delta, inv, mean[c]);
                m2[c] = simd::fmadd(delta, d - mean[c], m2[c]);
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
    if (i == n) return total;
    // Fewer than kGroup elements left (in L1): mean, then squared deviations.
    VecF32 sum = VecF32::zero();
    for (int64_t j = i; j < n; j += W) {
        const int lanes = static_cast<int>(std::min<int64_t>(W, n - j));
        const VecF32 d = load_n(x + j, lanes) - s;
        sum = sum + (lanes == W ? d : simd::select(first_lanes(lanes), d, VecF32::zero()));
    }
    Moments rest;
    rest.n = static_cast<double>(n - i);
    rest.mean = simd::reduce_add(sum) / static_cast<float>(n - i);
    const VecF32 rm = VecF32::broadcast(rest.mean);
    VecF32 sq = VecF32::zero();
    for (int64_t j = i; j < n; j += W) {
        const int lanes = static_cast<int>(std::min<int64_t>(W, n - j));
        VecF32 e = load_n(x + j, lanes) - s - rm;
        if (lanes < W) e = simd::select(first_lanes(lanes), e, VecF32::zero());
        sq = simd::fmadd(e, e, sq);
    }
    rest.m2 = simd::reduce_add(sq);
    return merge(total, rest);
}

template <class T>
float sum_of_squares(const T* x, int64_t n) {
    VecF32 acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = VecF32::zero();
    int64_t i = 0;
    for (; i + kGroup <= n; i += kGroup)
        for (int c = 0; c < kChains; ++c) {
            const VecF32 v = VecF32::load(x + i + c * W);
            acc[c] = simd::fmadd(v, v, acc[c]);
        }
    for (; i < n; i += W) {  // partial loads fill the missing lanes with 0
        const VecF32 v = load_n(x + i, static_cast<int>(std::min<int64_t>(W, n - i)));
        acc[0] = simd::fmadd(v, v, acc[0]);
    }
    for (int c = 1; c < kChains; ++c) acc[0] = acc[0] + acc[c];
    return simd::reduce_add(acc[0]);
}

struct RowStats {
    float shift;   // subtracted from x before scaling (x[0] for layer, 0 for rms)
    float center;  // mean of x - shift
    float rstd;
};

template <bool kCentered, class T>
RowStats row_stats(const T* x, int64_t n, float eps) {
    if constexpr (kCentered) {
        const float shift = n > 0 ? simd::to_float(x[0]) : 0.0f;
        const Moments m = shifted_moments(x, n, shift);
        const float var = std::max(m.m2 / static_cast<float>(n), 0.0f);
        return {shift, n > 0 ? m.mean : 0.0f, 1.0f / std::sqrt(var + eps)};
    } else {
        return {0.0f, 0.0f, 1.0f / std::sqrt(sum_of_squares(x, n) / static_cast<float>(n) + eps)};
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
                if constexpr (kCentered) *reinterpret_cast<float*>(rows.row(3, r)) = st.shift + st.center;
            }
            if constexpr (kStream) simd::store_fence();
        });
    });
    });
    });
}

// Sums of g = grad_out * weight and g * xhat over a row (then grad_x), adding
// grad_out * xhat and grad_out into the block's parameter partial sums.
template <bool kCentered, bool kWeight, bool kGradW, bool kGradB, bool kStream, class T, class Wt>
void backward_row(const T* dy, const T* x, T* dx, int64_t n, float mean, float rstd, const Wt* w,
                  float* dw_acc, float* db_acc) {
    const VecF32 vmean = VecF32::broadcast(kCentered ? mean : 0.0f), vrstd = VecF32::broadcast(rstd);
    auto load_xhat = [&](int64_t i, int lanes) {
        const VecF32 v = load_n(x + i, lanes);
        return (kCentered ? v - vmean : v) * vrstd;
    };
    auto load_g = [&](int64_t i, int lanes) {
        const VecF32 g = load_n(dy + i, lanes);
        return kWeight ? g * load_n(w + i, lanes) : g;
    };
    VecF32 sum_g = VecF32::zero(), sum_gx = VecF32::zero();
    auto accumulate = [&](int64_t i, int lanes) {
        VecF32 xhat = load_xhat(i, lanes);
        // Lanes past the row read 0, whose xhat (-mean * rstd) may be infinite.
        if (lanes < W) xhat = simd::select(first_lanes(lanes), xhat, VecF32::zero());
        const VecF32 d = load_n(dy + i, lanes);
        const VecF32 g = kWeight ? d * load_n(w + i, lanes) : d;
        if constexpr (kCentered) sum_g = sum_g + g;
        sum_gx = simd::fmadd(g, xhat, sum_gx);
        if constexpr (kGradW) store_n(simd::fmadd(d, xhat, load_n(dw_acc + i, lanes)), dw_acc + i, lanes);
        if constexpr (kGradB) store_n(d + load_n(db_acc + i, lanes), db_acc + i, lanes);
    };
    int64_t i = 0;
    for (; i + W <= n; i += W) accumulate(i, W);
    if (i < n) accumulate(i, static_cast<int>(n - i));
    // grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat)), rstd applied
    // last so that a row of one element (xhat = 0) gives exactly 0.
    const float inv_n = 1.0f / static_cast<float>(n);
    const VecF32 mean_g = VecF32::broadcast(kCentered ? simd::reduce_add(sum_g) * inv_n : 0.0f);
    const VecF32 neg_mean_gx = VecF32::broadcast(-simd::reduce_add(sum_gx) * inv_n);
    write_row<kStream>(dx, n, [&](int64_t i, int lanes) {
        const VecF32 t = simd::fmadd(load_xhat(i, lanes), neg_mean_gx, load_g(i, lanes));
        return (kCentered ? t - mean_g : t) * vrstd;
    });
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
    // Partial sums per block: [block][grad_weight, grad_bias][n].
    std::vector<float> partial(static_cast<size_t>(nparams > 0 ? nblocks * nparams * n : 0));
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
                for (int64_t u = begin; u < end; ++u) {
                    float* dw_acc = nparams > 0 ? partial.data() + u * nparams * n : nullptr;
                    float* db_acc = grad_b ? dw_acc + (grad_w ? n : 0) : nullptr;
                    if (nparams > 0) std::fill(dw_acc, dw_acc + nparams * n, 0.0f);
                    const int64_t r_end = std::min(rows.rows, (u + 1) * unit);
                    for (int64_t r = u * unit; r < r_end; ++r) {
                        const T* dy = gather_row(rows.row(0, r), dy_step, n, dy_buf.data());
                        const T* x = gather_row(rows.row(1, r), x_step, n, x_buf.data());
                        T* dx = staged ? dx_buf.data() : reinterpret_cast<T*>(rows.row(2, r));
                        const float rstd = *reinterpret_cast<const float*>(rows.row(3, r));
                        const float mean = kCentered ? *reinterpret_cast<const float*>(rows.row(4, r)) : 0.0f;
                        backward_row<kCentered, kWeight, kGradW, kGradB, kStream>(dy, x, dx, n, mean, rstd, w,
                                                                                   dw_acc, db_acc);
                        if (staged) scatter_row(dx_buf.data(), rows.row(2, r), dx_step, n);
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
                float s = 0.0f;
                for (int64_t b = 0; b < nblocks; ++b) s += partial[(b * nparams + slot) * n + j];
                reinterpret_cast<Wt*>(base)[j * stride] = simd::from_float<Wt>(s);
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
