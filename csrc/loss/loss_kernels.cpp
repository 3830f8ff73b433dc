// Fused softmax cross-entropy and MSE, forward and backward.
//
// Cross-entropy floor: forward reads the logits once (N C elements; label
// smoothing adds a second read of each row while it is in L2) and writes 2 N
// doubles; backward reads them once more and writes dlogits (N C).
// At N = 4096, C = 32k fp32 that is 0.5 GB + 1 GB, against PyTorch's
// log_softmax + nll_loss, which writes and re-reads a second (N, C) buffer of
// log-probabilities in each direction. The forward is row_stats (one read,
// online max and sum of exp; row_ops.h); the backward recomputes each
// probability from the logit and the saved log-sum-exp, so no (N, C)
// intermediate exists. One row per thread at a time; per-row losses are
// summed in float64 in row order, so results do not depend on the threads.
//
// MSE is elementwise (elementwise_map.h) for reduction none and the
// gradients; its reductions sum fixed blocks of the element order in float64
// and then the blocks in order, for the same reason.
#include <cmath>
#include <vector>

#include "fastnn/loss.h"
#include "../elementwise/elementwise_map.h"
#include "../softmax/row_ops.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

constexpr int W = VecF32::width;

inline int64_t target_of(const TensorView& target, int64_t r) {
    return static_cast<const int64_t*>(target.data)[r * target.strides[0]];
}

template <class T>
T& element(const TensorView& t, int64_t i) {
    return static_cast<T*>(t.data)[t.ndim ? i * t.strides[0] : 0];
}

inline double& stat(const TensorView& stats, int64_t row, int k) {
    return static_cast<double*>(stats.data)[row * stats.strides[0] + k * stats.strides[1]];
}

template <class T>
void cross_entropy_forward_typed(const CrossEntropyParams& p) {
    const int64_t rows = p.logits.shape[0], cols = p.logits.shape[1];
    const double eps = p.label_smoothing;
    std::vector<double> row_loss(rows);
    parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
        thread_local std::vector<T> scratch;
        RowView<T> xs(p.logits, cols, scratch);
        for (int64_t r = begin; r < end; ++r) {
            const int64_t t = target_of(p.target, r);
            if (t == p.ignore_index) {
                stat(p.stats, r, 0) = stat(p.stats, r, 1) = 0.0;
                row_loss[r] = 0.0;
                continue;
            }
            const T* x = xs.row(r);
            xs.gather();
            const RowStats st = row_stats(x, cols);
            const double log_sum = std::log(st.sum_exp);
            // lse - v as (max - v) + log_sum: exact-ish for logits of any magnitude.
            double loss = (static_cast<double>(st.max) - simd::to_float(x[t])) + log_sum;
            // Smoothing's mean of (lse - x) re-reads the row, from L2.
            if (eps > 0)
                loss = (1.0 - eps) * loss +
                       eps * (log_sum - row_sum_shifted(x, cols, st.max) / static_cast<double>(cols));
            stat(p.stats, r, 0) = st.max;
            stat(p.stats, r, 1) = log_sum;
            row_loss[r] = loss;
        }
    });
    if (p.reduction == Reduction::none) {
        for (int64_t r = 0; r < rows; ++r) element<T>(p.loss, r) = simd::from_float<T>(static_cast<float>(row_loss[r]));
        return;
    }
    double total = 0.0;
    int64_t counted = 0;
    for (int64_t r = 0; r < rows; ++r) {
        total += row_loss[r];
        counted += target_of(p.target, r) != p.ignore_index;
    }
    // Mean over zero counted rows is 0/0 = NaN, as PyTorch.
    if (p.reduction == Reduction::mean) total /= static_cast<double>(counted);
    *static_cast<T*>(p.loss.data) = simd::from_float<T>(static_cast<float>(total));
}

template <bool kStream, class T>
void cross_entropy_backward_rows(const CrossEntropyBackwardParams& p) {
    const int64_t rows = p.logits.shape[0], cols = p.logits.shape[1];
    double scale = 1.0;
    if (p.reduction == Reduction::mean) {
        int64_t counted = 0;
        for (int64_t r = 0; r < rows; ++r) counted += target_of(p.target, r) != p.ignore_index;
        scale = 1.0 / static_cast<double>(counted);
    }
    const float eps = p.label_smoothing;
    const bool per_row = p.reduction == Reduction::none;
    const float g_all = per_row ? 0.0f : static_cast<float>(simd::to_float(element<T>(p.grad_loss, 0)) * scale);
    parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
        thread_local std::vector<T> x_scratch, dx_scratch;
        RowView<T> xs(p.logits, cols, x_scratch), dxs(p.grad_logits, cols, dx_scratch);
        for (int64_t r = begin; r < end; ++r) {
            const int64_t t = target_of(p.target, r);
            const bool ignored = t == p.ignore_index;
            const float g = ignored ? 0.0f : per_row ? simd::to_float(element<T>(p.grad_loss, r)) : g_all;
            const T* x = xs.row(r);
            if (!ignored) xs.gather();
            T* dx = dxs.row(r);
            // log_sum as a float pair: the largest probabilities (x near max)
            // keep its float64 accuracy.
            const double log_sum = stat(p.stats, r, 1);
            const float ls_hi = static_cast<float>(log_sum);
            const VecF32 mx = VecF32::broadcast(static_cast<float>(stat(p.stats, r, 0)));
            const VecF32 hi = VecF32::broadcast(ls_hi), lo = VecF32::broadcast(static_cast<float>(log_sum - ls_hi));
            // g (p - e/C - (1 - e) [j == t]): the bracket is formed before the
            // scaling, so that it is exactly 0 where p = 1 and C = 1, as PyTorch.
            const VecF32 gv = VecF32::broadcast(g), smooth = VecF32::broadcast(eps / static_cast<float>(cols));
            const float hot = 1.0f - eps;
            const T* in[] = {x};
            if (ignored) {
                for (int64_t i = 0; i < cols; i += W) {
                    const int n = static_cast<int>(cols - i < W ? cols - i : W);
                    VecF32::zero().store_partial(dx + i, n);
                }
            } else {
                map_row<kStream, T, 1>(dx, in, cols, [&](const VecF32* v, int64_t i) {
                    VecF32 d = simd::exp(((v[0] - mx) - hi) - lo) - smooth;
                    if (static_cast<uint64_t>(t - i) < static_cast<uint64_t>(W)) {
                        float buf[W];
                        d.store(buf);
                        buf[t - i] -= hot;
                        d = VecF32::load(buf);
                    }
                    return d * gv;
                });
            }
            dxs.scatter();
        }
        if (kStream) simd::store_fence();
    });
}

template <class T>
void cross_entropy_backward_typed(const CrossEntropyBackwardParams& p) {
    const TensorView& dx = p.grad_logits;
    if (dx.strides[1] == 1 && numel(dx) * int64_t(sizeof(T)) >= kRowStreamingBytes)
        cross_entropy_backward_rows<true, T>(p);
    else
        cross_entropy_backward_rows<false, T>(p);
}

// sum((x - t)^2) over the element order of make_strided_layout, in fixed
// blocks (independent of the thread count): each square formed in float and
// summed in float64 lanes. (Float lane sums of 256 elements were up to 1.3 ulp
// off at 210 elements, where PyTorch's sum landed within 0.1.)
template <class T>
double squared_error_sum(const MseParams& p) {
    constexpr int64_t kBlock = 16384;
    const TensorView* ops[] = {&p.x, &p.target};
    const StridedLayout layout = make_strided_layout(ops, 2);
    const bool dense = layout.inner_dense();
    const int64_t blocks = (layout.numel + kBlock - 1) / kBlock;
    std::vector<double> partial(blocks);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            double sum = 0.0;
            const int64_t end = std::min(layout.numel, (b + 1) * kBlock);
            for_each_row(layout, b * kBlock, end, [&](char* const* ptrs, int64_t n) {
                const T* x = reinterpret_cast<const T*>(ptrs[0]);
                const T* t = reinterpret_cast<const T*>(ptrs[1]);
                if (!dense) {
                    const int64_t sx = layout.inner_stride(0) / int64_t(sizeof(T));
                    const int64_t st = layout.inner_stride(1) / int64_t(sizeof(T));
                    for (int64_t i = 0; i < n; ++i) {
                        const double d = double(simd::to_float(x[i * sx])) - simd::to_float(t[i * st]);
                        sum += d * d;
                    }
                    return;
                }
                simd::LaneSumF64 lanes;
                int64_t i = 0;
                for (; i + W <= n; i += W) {
                    const VecF32 d = simd::load_ahead(x + i) - simd::load_ahead(t + i);
                    lanes.add(d * d);
                }
                if (i < n) {
                    const int r = static_cast<int>(n - i);
                    const VecF32 d = VecF32::load_partial(x + i, r) - VecF32::load_partial(t + i, r);
                    lanes.add(d * d);
                }
                sum += lanes.total();
            });
            partial[b] = sum;
        }
    });
    double total = 0.0;
    for (double s : partial) total += s;
    return total;
}

template <class T>
void mse_forward_typed(const MseParams& p) {
    if (p.reduction == Reduction::none) {
        const TensorView* ops[] = {&p.loss, &p.x, &p.target};
        map_elementwise<T, 2>(ops, [](const VecF32* in) {
            const VecF32 d = in[0] - in[1];
            return d * d;
        });
        return;
    }
    double total = squared_error_sum<T>(p);
    if (p.reduction == Reduction::mean) total /= static_cast<double>(numel(p.x));  // 0/0 = NaN when empty
    *static_cast<T*>(p.loss.data) = simd::from_float<T>(static_cast<float>(total));
}

template <class T>
void mse_backward_typed(const MseBackwardParams& p) {
    if (p.reduction == Reduction::none) {
        const TensorView* ops[] = {&p.grad_x, &p.x, &p.target, &p.grad_loss};
        map_elementwise<T, 3>(ops, [](const VecF32* in) { return VecF32::broadcast(2.0f) * (in[0] - in[1]) * in[2]; });
        return;
    }
    // PyTorch's order: norm * (x - t) * g, norm = 2 (/ numel for mean).
    const double n = static_cast<double>(numel(p.x));
    const VecF32 norm = VecF32::broadcast(static_cast<float>(p.reduction == Reduction::mean ? 2.0 / n : 2.0));
    const VecF32 g = VecF32::broadcast(simd::to_float(*static_cast<const T*>(p.grad_loss.data)));
    const TensorView* ops[] = {&p.grad_x, &p.x, &p.target};
    map_elementwise<T, 2>(ops, [&](const VecF32* in) { return norm * (in[0] - in[1]) * g; });
}

void ce_forward_kernel(const CrossEntropyParams& p) {
    if (p.logits.dtype == DType::bf16) cross_entropy_forward_typed<bf16>(p);
    else cross_entropy_forward_typed<float>(p);
}

void ce_backward_kernel(const CrossEntropyBackwardParams& p) {
    if (p.logits.dtype == DType::bf16) cross_entropy_backward_typed<bf16>(p);
    else cross_entropy_backward_typed<float>(p);
}

void mse_forward_kernel(const MseParams& p) {
    if (p.x.dtype == DType::bf16) mse_forward_typed<bf16>(p);
    else mse_forward_typed<float>(p);
}

void mse_backward_kernel(const MseBackwardParams& p) {
    if (p.x.dtype == DType::bf16) mse_backward_typed<bf16>(p);
    else mse_backward_typed<float>(p);
}

}  // namespace

const LossKernels loss_kernels = {ce_forward_kernel, ce_backward_kernel, mse_forward_kernel, mse_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
