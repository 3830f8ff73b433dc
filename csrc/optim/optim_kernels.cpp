// Fused optimizer steps and gradient-norm clipping, compiled once per ISA.
//
// Floor: an optimizer step is pure streaming. AdamW on float32 reads param,
// grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq: 28 bytes
// per element for about 12 flops (one sqrt, one divide), so it runs at memory
// bandwidth and the design goals are one pass per element, full-width loads
// and stores, and all threads busy. Stores are ordinary cached stores: every
// line written (param, state) was read a moment before, so a non-temporal
// store would save no read-for-ownership, and the DRAM write-back happens
// either way (see bench/notes/optim.md).
//
// Work split: the table of tensors is one flat range of elements (prefix sums
// of the row sizes); parallel_for cuts that range evenly, and each thread walks
// the rows its piece overlaps. A 100M-element tensor and 10,000 tiny ones
// spread over the threads alike, and there is one fork/join per call.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fastnn/optim.h"
#include "fastnn/parallel.h"
#include "optim_simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {

using simd::VecF32;

namespace {

// Below this many elements per thread (~0.5-1 MB of traffic) the wake-up of a
// worker costs more than it saves.
constexpr int64_t kOptimGrain = 32768;

// row_begin[r] = first flat index of row r; row_begin[rows] = total.
template <class Row>
std::vector<int64_t> prefix_sums(const Row* rows, int64_t count) {
    std::vector<int64_t> begin(static_cast<std::size_t>(count) + 1, 0);
    for (int64_t r = 0; r < count; ++r) begin[r + 1] = begin[r] + rows[r].numel;
    return begin;
}

// fn(row, lo, hi) for every row piece inside the flat range [begin, end),
// lo/hi relative to the row.
template <class Fn>
void for_each_row_piece(const std::vector<int64_t>& row_begin, int64_t begin, int64_t end, Fn&& fn) {
    int64_t r = std::upper_bound(row_begin.begin(), row_begin.end(), begin) - row_begin.begin() - 1;
    const int64_t rows = static_cast<int64_t>(row_begin.size()) - 1;
    for (; r < rows && row_begin[r] < end; ++r) {
        const int64_t lo = std::max(begin, row_begin[r]) - row_begin[r];
        const int64_t hi = std::min(end, row_begin[r + 1]) - row_begin[r];
        if (lo < hi) fn(r, lo, hi);
    }
}

template <class Fn>
void parallel_over_rows(const OptimTensor* rows, int64_t count, Fn&& fn) {
    const std::vector<int64_t> row_begin = prefix_sums(rows, count);
    parallel_for(row_begin.back(), kOptimGrain, [&](int64_t begin, int64_t end) {
        for_each_row_piece(row_begin, begin, end, fn);
    });
}

// The gradient as the update sees it: unscaled (and written back unscaled, as
// GradScaler.unscale_ leaves it), then negated when maximizing.
template <class Full, class T>
VecF32 load_grad(T* grad, int64_t i, int n, const OptimCoeffs& c, bool scaled) {
    VecF32 g = simd::load<Full>(grad + i, n);
    if (scaled) {
        g = g * VecF32::broadcast(c.inv_grad_scale);
        simd::store<Full>(g, grad + i, n);
    }
    return g * VecF32::broadcast(c.grad_sign);
}

// One row's pointers, copied out of the table so the element loop keeps them
// in registers (a store through a float* could otherwise alias the table).
template <class T>
struct Row {
    T* param;
    T* grad;
    float* state[kOptimMaxState];
    float* master;

    explicit Row(const OptimTensor& t)
        : param(static_cast<T*>(t.param)), grad(static_cast<T*>(t.grad)),
          state{t.state[0], t.state[1], t.state[2]}, master(t.master) {}
};

// A bfloat16 parameter with a master copy is updated on the copy; the
// parameter is then only written.
template <bool kMaster, class Full, class T>
VecF32 load_param(const Row<T>& row, int64_t i, int n) {
    if constexpr (kMaster) return simd::load<Full>(row.master + i, n);
    else return simd::load<Full>(row.param + i, n);
}

template <bool kMaster, class Full, class T>
void store_param(VecF32 p, const Row<T>& row, int64_t i, int n) {
    if constexpr (kMaster) simd::store<Full>(p, row.master + i, n);
    simd::store<Full>(p, row.param + i, n);
}

// torch.optim.Adam / AdamW, _single_tensor_adam's operations in its order:
//   p *= 1 - lr*wd (AdamW) | g = g + wd*p (Adam)
//   m = lerp(m, g, 1 - b1); v = v*b2; v = v + ((1 - b2)*g)*g; vmax = max(vmax, v)
//   p = p + (-step_size * m) / (sqrt(v) / sqrt(1 - b2^t) + eps)
template <class T, bool kMaster, bool kAmsgrad>
void adam_rows(const OptimStepParams& p, const OptimCoeffs c) {
    const bool scaled = p.grad_scale != nullptr;
    parallel_over_rows(p.tensors, p.num_tensors, [&](int64_t r, int64_t lo, int64_t hi) {
        const Row<T> row(p.tensors[r]);
        float* const exp_avg = row.state[0];
        float* const exp_avg_sq = row.state[1];
        float* const max_exp_avg_sq = row.state[2];
        const VecF32 neg_step_size = VecF32::broadcast(c.adam_rows[r].neg_step_size);
        const VecF32 bias_correction2_sqrt = VecF32::broadcast(c.adam_rows[r].bias_correction2_sqrt);
        simd::for_each_vector(lo, hi, [&](auto full, int64_t i, int n) {
            using Full = decltype(full);
            VecF32 g = load_grad<Full>(row.grad, i, n, c, scaled);
            VecF32 param = load_param<kMaster, Full>(row, i, n);
            if (c.decoupled) param = param * VecF32::broadcast(c.decay_factor);
            if (c.l2) g = simd::fmadd_once(param, VecF32::broadcast(c.weight_decay), g);
            const VecF32 m = simd::lerp(simd::load<Full>(exp_avg + i, n), g, c.lerp_weight);
            VecF32 v = simd::load<Full>(exp_avg_sq + i, n) * VecF32::broadcast(c.beta2);
            v = simd::fmadd_once(VecF32::broadcast(c.one_minus_beta2) * g, g, v);
            simd::store<Full>(m, exp_avg + i, n);
            simd::store<Full>(v, exp_avg_sq + i, n);
            if constexpr (kAmsgrad) {
                v = simd::maximum_nan(simd::load<Full>(max_exp_avg_sq + i, n), v);
                simd::store<Full>(v, max_exp_avg_sq + i, n);
            }
            const VecF32 denom = simd::sqrt(v) / bias_correction2_sqrt + VecF32::broadcast(c.eps);
            param = param + (neg_step_size * m) / denom;
            store_param<kMaster, Full>(param, row, i, n);
        });
    });
}

// torch.optim.SGD, _single_tensor_sgd:
//   g = g + wd*p; buf = g (first step) | buf = buf*mu + (1 - dampening)*g
//   g = g + mu*buf (nesterov) | g = buf;  p = p - lr*g
template <class T, bool kMaster>
void sgd_rows(const OptimStepParams& p, const OptimCoeffs c) {
    const bool scaled = p.grad_scale != nullptr;
    const bool use_momentum = p.momentum != 0.0, init = p.momentum_init, nesterov = p.nesterov;
    parallel_over_rows(p.tensors, p.num_tensors, [&](int64_t r, int64_t lo, int64_t hi) {
        const Row<T> row(p.tensors[r]);
        float* const buf = row.state[0];
        simd::for_each_vector(lo, hi, [&](auto full, int64_t i, int n) {
            using Full = decltype(full);
            VecF32 g = load_grad<Full>(row.grad, i, n, c, scaled);
            VecF32 param = load_param<kMaster, Full>(row, i, n);
            if (c.l2) g = simd::fmadd_once(param, VecF32::broadcast(c.weight_decay), g);
            if (use_momentum) {
                VecF32 b = g;
                if (!init)
                    b = simd::fmadd_once(g, VecF32::broadcast(c.one_minus_dampening),
                                    simd::load<Full>(buf + i, n) * VecF32::broadcast(c.momentum));
                simd::store<Full>(b, buf + i, n);
                g = nesterov ? simd::fmadd_once(b, VecF32::broadcast(c.momentum), g) : b;
            }
            param = simd::fmadd_once(g, VecF32::broadcast(c.neg_step_size), param);
            store_param<kMaster, Full>(param, row, i, n);
        });
    });
}

// torch.optim.RMSprop, _single_tensor_rmsprop:
//   g = g + wd*p; sq = sq*a; sq = sq + ((1 - a)*g)*g
//   avg = sqrt(sq - ga*ga) with ga = lerp(ga, g, 1 - a) (centered) | sqrt(sq); avg += eps
//   buf = buf*mu; buf = buf + g/avg; p = p - lr*buf (momentum) | p = p + (-lr*g)/avg
template <class T, bool kMaster>
void rmsprop_rows(const OptimStepParams& p, const OptimCoeffs c) {
    const bool scaled = p.grad_scale != nullptr;
    const bool use_momentum = p.momentum > 0.0, centered = p.centered;
    parallel_over_rows(p.tensors, p.num_tensors, [&](int64_t r, int64_t lo, int64_t hi) {
        const Row<T> row(p.tensors[r]);
        float* const square_avg = row.state[0];
        float* const buf = row.state[1];
        float* const grad_avg = row.state[2];
        simd::for_each_vector(lo, hi, [&](auto full, int64_t i, int n) {
            using Full = decltype(full);
            VecF32 g = load_grad<Full>(row.grad, i, n, c, scaled);
            VecF32 param = load_param<kMaster, Full>(row, i, n);
            if (c.l2) g = simd::fmadd_once(param, VecF32::broadcast(c.weight_decay), g);
            VecF32 sq = simd::load<Full>(square_avg + i, n) * VecF32::broadcast(c.beta2);
            sq = simd::fmadd_once(VecF32::broadcast(c.one_minus_beta2) * g, g, sq);
            simd::store<Full>(sq, square_avg + i, n);
            VecF32 avg;
            if (centered) {
                const VecF32 ga = simd::lerp(simd::load<Full>(grad_avg + i, n), g, c.lerp_weight);
                simd::store<Full>(ga, grad_avg + i, n);
                avg = simd::sqrt(simd::fmadd_once(VecF32::zero() - ga, ga, sq));
            } else {
                avg = simd::sqrt(sq);
            }
            avg = avg + VecF32::broadcast(c.eps);
            if (use_momentum) {
                VecF32 b = simd::load<Full>(buf + i, n) * VecF32::broadcast(c.momentum);
                b = b + g / avg;
                simd::store<Full>(b, buf + i, n);
                param = simd::fmadd_once(b, VecF32::broadcast(c.neg_step_size), param);
            } else {
                param = param + (VecF32::broadcast(c.neg_step_size) * g) / avg;
            }
            store_param<kMaster, Full>(param, row, i, n);
        });
    });
}

template <class T, bool kMaster>
void step_typed(const OptimStepParams& p, const OptimCoeffs& c) {
    switch (p.kind) {
        case OptimKind::adam:
            if (p.amsgrad) return adam_rows<T, kMaster, true>(p, c);
            return adam_rows<T, kMaster, false>(p, c);
        case OptimKind::sgd: return sgd_rows<T, kMaster>(p, c);
        case OptimKind::rmsprop: return rmsprop_rows<T, kMaster>(p, c);
    }
}

void optim_step_kernel(const OptimStepParams& p, const OptimCoeffs& c) {
    if (p.param_dtype == DType::f32) return step_typed<float, false>(p, c);
    if (p.master_weights) return step_typed<bf16, true>(p, c);
    step_typed<bf16, false>(p, c);
}

// ---------------------------------------------------------------------------
// Gradient norm. The flat range is cut into fixed blocks; each block's partial
// is computed in a fixed order and the partials are combined serially, so the
// result does not depend on how many threads ran the blocks. Inside a block,
// float32 lanes accumulate a few hundred squares, then are added to a double.

constexpr int64_t kNormBlock = 16384;

enum class NormKind { one, two, inf, p };

template <NormKind K, class T>
void accumulate_norm(const T* x, int64_t lo, int64_t hi, double p, double& total) {
    constexpr int W = VecF32::width;
    constexpr int64_t kInner = 32 * W;  // float32 lane sums stay short
    if constexpr (K == NormKind::p) {
        for (int64_t i = lo; i < hi; ++i) total += std::pow(std::fabs(static_cast<double>(simd::to_float(x[i]))), p);
        return;
    }
    for (int64_t start = lo; start < hi; start += kInner) {
        const int64_t stop = std::min(hi, start + kInner);
        VecF32 acc = VecF32::zero();
        simd::for_each_vector(start, stop, [&](auto full, int64_t i, int n) {
            const VecF32 v = simd::load<decltype(full)>(x + i, n);
            if constexpr (K == NormKind::two) acc = simd::fmadd(v, v, acc);
            else if constexpr (K == NormKind::one) acc = acc + simd::abs(v);
            else acc = simd::maximum_nan(acc, simd::abs(v));  // zero-filled tail lanes are harmless
        });
        if constexpr (K == NormKind::inf) {
            const float m = simd::reduce_max(acc);
            // reduce_max drops NaN lanes; keep NaN, as torch's max does.
            const bool nan = simd::reduce_add(acc) != simd::reduce_add(acc);
            total = nan || std::isnan(total) ? NAN : std::max(total, static_cast<double>(m));
        } else {
            total += simd::reduce_add(acc);
        }
    }
}

template <NormKind K>
double norm_reduce_typed(const GradNormParams& p) {
    const std::vector<int64_t> row_begin = prefix_sums(p.tensors, p.num_tensors);
    const int64_t total = row_begin.back();
    const int64_t blocks = (total + kNormBlock - 1) / kNormBlock;
    std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
    parallel_for(blocks, 2, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            double acc = 0.0;
            const int64_t begin = b * kNormBlock, end = std::min(total, begin + kNormBlock);
            for_each_row_piece(row_begin, begin, end, [&](int64_t r, int64_t lo, int64_t hi) {
                const GradNormTensor& t = p.tensors[r];
                if (t.dtype == DType::bf16)
                    accumulate_norm<K>(static_cast<const bf16*>(t.data), lo, hi, p.norm_type, acc);
                else
                    accumulate_norm<K>(static_cast<const float*>(t.data), lo, hi, p.norm_type, acc);
            });
            partial[b] = acc;
        }
    });
    double result = 0.0;
    for (double v : partial) {
        if constexpr (K == NormKind::inf) result = std::isnan(v) || std::isnan(result) ? NAN : std::max(result, v);
        else result += v;
    }
    return result;
}

double grad_norm_kernel(const GradNormParams& p) {
    if (p.norm_type == 2.0) return norm_reduce_typed<NormKind::two>(p);
    if (p.norm_type == 1.0) return norm_reduce_typed<NormKind::one>(p);
    if (std::isinf(p.norm_type)) return norm_reduce_typed<NormKind::inf>(p);
    return norm_reduce_typed<NormKind::p>(p);
}

template <class T>
void scale_row(T* x, int64_t lo, int64_t hi, float coef) {
    const VecF32 k = VecF32::broadcast(coef);
    simd::for_each_vector(lo, hi, [&](auto full, int64_t i, int n) {
        using Full = decltype(full);
        simd::store<Full>(simd::load<Full>(x + i, n) * k, x + i, n);
    });
}

void grad_scale_kernel(const GradScaleParams& p) {
    const std::vector<int64_t> row_begin = prefix_sums(p.tensors, p.num_tensors);
    parallel_for(row_begin.back(), kOptimGrain, [&](int64_t begin, int64_t end) {
        for_each_row_piece(row_begin, begin, end, [&](int64_t r, int64_t lo, int64_t hi) {
            const GradNormTensor& t = p.tensors[r];
            void* data = const_cast<void*>(t.data);
            if (t.dtype == DType::bf16) scale_row(static_cast<bf16*>(data), lo, hi, p.coef);
            else scale_row(static_cast<float*>(data), lo, hi, p.coef);
        });
    });
}

}  // namespace

const OptimKernels optim_kernels = {optim_step_kernel, grad_norm_kernel, grad_scale_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
