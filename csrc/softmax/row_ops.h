// Building blocks of the row-wise kernels (softmax, log-softmax, fused
// cross-entropy): where row r of a strided tensor starts, a contiguous copy of
// a row whose elements are not adjacent, the one-read row statistics max and
// sum(exp(x - max)), and compensated row sums.
//
// The statistics are computed online (Milakov & Gimelshein, "Online
// normalizer calculation for softmax"), per vector lane and per block of 4
// vectors: the block's lane-wise maximum updates the running maximum m, the
// running sum is rescaled once per block by exp(m_old - m_new), and each
// element costs one exp. The row is read once; the lanes are combined at the
// end. Compiled per ISA (include from *_kernels.cpp only; simd.h's namespace
// rule).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fastnn/simd_math.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {

using simd::VecF32;

// Element offset of the first element of row r (rows run along the last dim).
inline int64_t row_offset(const TensorView& t, int64_t r) {
    int64_t offset = 0;
    for (int d = t.ndim - 2; d >= 0 && r > 0; --d) {
        offset += (r % t.shape[d]) * t.strides[d];
        r /= t.shape[d];
    }
    return offset;
}

inline int64_t row_count(const TensorView& t) {
    int64_t rows = 1;
    for (int d = 0; d + 1 < t.ndim; ++d) rows *= t.shape[d];
    return rows;
}

// Rows per task such that a task holds at least ~16K elements: below that a
// worker's wake-up costs more than the row work.
inline int64_t row_grain(int64_t cols) { return cols >= 16384 ? 1 : 16384 / (cols > 0 ? cols : 1); }

// A row as a contiguous array: the tensor's own memory when its last stride
// is 1, else a per-thread copy (gather() before reading, scatter() after
// writing). Strided rows are rare (transposed views) and pay one copy.
template <class T>
class RowView {
public:
    RowView(const TensorView& t, int64_t cols, std::vector<T>& scratch)
        : t_(t), cols_(cols), stride_(t.ndim ? t.strides[t.ndim - 1] : 1), scratch_(scratch) {
        if (stride_ != 1 && static_cast<int64_t>(scratch_.size()) < cols) scratch_.resize(cols);
    }
    T* row(int64_t r) {
        base_ = static_cast<T*>(t_.data) + row_offset(t_, r);
        return stride_ == 1 ? base_ : scratch_.data();
    }
    void gather() {
        if (stride_ != 1)
            for (int64_t i = 0; i < cols_; ++i) scratch_[i] = base_[i * stride_];
    }
    void scatter() {
        if (stride_ != 1)
            for (int64_t i = 0; i < cols_; ++i) base_[i * stride_] = scratch_[i];
    }

private:
    const TensorView& t_;
    int64_t cols_, stride_;
    std::vector<T>& scratch_;
    T* base_ = nullptr;
};

// n < width elements, the missing lanes set to `fill`.
template <class T>
inline VecF32 load_filled(const T* p, int n, float fill) {
    T buf[VecF32::width];
    for (int i = 0; i < VecF32::width; ++i) buf[i] = simd::from_float<T>(fill);
    for (int i = 0; i < n; ++i) buf[i] = p[i];
    return VecF32::load(buf);
}

// out[i] = fn(v, i) over a contiguous row, v[k] = in[k][i..i+W). With
// kStream, whole vectors are written with non-temporal stores from the first
// vector-aligned element (outputs too large for the caches: no read for
// ownership); the caller fences with simd::store_fence() before returning.
template <bool kStream, class T, int NIn, class Fn, class TIn>
void map_row(T* out, const TIn* const* in, int64_t n, Fn fn) {
    constexpr int W = VecF32::width;
    VecF32 v[NIn];
    int64_t i = 0;
    auto partial = [&](int64_t at, int r) {
        for (int k = 0; k < NIn; ++k) v[k] = VecF32::load_partial(in[k] + at, r);
        fn(v, at).store_partial(out + at, r);
    };
    if constexpr (kStream) {
        constexpr uintptr_t kVecBytes = W * sizeof(T);
        const uintptr_t misaligned = reinterpret_cast<uintptr_t>(out) % kVecBytes;
        const int64_t head = misaligned ? static_cast<int64_t>((kVecBytes - misaligned) / sizeof(T)) : 0;
        if (head > 0 && head < n) {
            partial(0, static_cast<int>(head));
            i = head;
        }
        for (; i + W <= n; i += W) {
            for (int k = 0; k < NIn; ++k) v[k] = simd::load_ahead(in[k] + i);
            fn(v, i).stream(out + i);
        }
    }
    for (; i + W <= n; i += W) {
        for (int k = 0; k < NIn; ++k) v[k] = simd::load_ahead(in[k] + i);
        fn(v, i).store(out + i);
    }
    if (i < n) partial(i, static_cast<int>(n - i));
}

// Outputs at least this large are written with streaming stores (as in
// csrc/elementwise/elementwise_map.h).
inline constexpr int64_t kRowStreamingBytes = int64_t(16) << 20;

struct RowStats {
    float max;       // NaN-free only when the row is
    double sum_exp;  // sum(exp(x - max))
};

// The lanes' sums are compensated (TwoSum, Kahan-style): a float chain of
// C / (4 W) block sums would otherwise drift by several ulp at a 32k
// vocabulary, and that error scales every output of the row.
template <class T>
RowStats row_stats(const T* x, int64_t n) {
    constexpr int W = VecF32::width;
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const VecF32 neg_inf = VecF32::broadcast(-kInf), lowest = VecF32::broadcast(-3.4028235e38f);
    VecF32 m = neg_inf, s = VecF32::zero(), c = VecF32::zero();
    // Shift by the running maximum, or by 0 while a lane has seen only -inf
    // (so that -inf - -inf never makes a NaN).
    auto shift_of = [&](VecF32 mx) { return simd::select(simd::cmp_lt(mx, lowest), VecF32::zero(), mx); };
    auto accumulate = [&](const VecF32* v, int count) {
        VecF32 bm = v[0];
        for (int k = 1; k < count; ++k) bm = simd::max(bm, v[k]);
        const VecF32 mn = simd::max(m, bm);
        const VecF32 shift = shift_of(mn);
        // exp(0) is exactly 1 here, so a lane whose maximum did not move is
        // not rescaled at all.
        const VecF32 rescale = simd::exp(m - shift);
        VecF32 e[4];
        for (int k = 0; k < count; ++k) e[k] = simd::exp(v[k] - shift);
        const VecF32 block = count == 4 ? (e[0] + e[1]) + (e[2] + e[3]) : e[0];
        s = s * rescale;
        c = c * rescale;
        const VecF32 t = s + block, z = t - s;
        c = c + ((s - (t - z)) + (block - z));
        s = t;
        m = mn;
    };
    int64_t i = 0;
    VecF32 v[4];
    for (; i + 4 * W <= n; i += 4 * W) {
        for (int k = 0; k < 4; ++k) v[k] = simd::load_ahead(x + i + k * W);
        accumulate(v, 4);
    }
    for (; i + W <= n; i += W) {
        v[0] = simd::load_ahead(x + i);
        accumulate(v, 1);
    }
    if (i < n) {
        v[0] = load_filled(x + i, static_cast<int>(n - i), -kInf);
        accumulate(v, 1);
    }
    const float mx = simd::reduce_max(m);
    const VecF32 to_row = simd::exp(m - VecF32::broadcast(mx < -3.4028235e38f ? 0.0f : mx));
    float sl[W], cl[W];
    (s * to_row).store(sl);
    (c * to_row).store(cl);
    double se = 0.0;
    for (int k = 0; k < W; ++k) se += double(sl[k]) + double(cl[k]);
    return {mx, se};
}

// The lanes of a compensated sum (s, c) as one float64. An infinite lane sum
// leaves NaN in its compensation (inf - inf), which must not replace the inf.
inline double combine_compensated(VecF32 s, VecF32 c) {
    constexpr int W = VecF32::width;
    float sl[W], cl[W];
    s.store(sl);
    c.store(cl);
    double total = 0.0;
    for (int k = 0; k < W; ++k) total += std::isinf(sl[k]) ? double(sl[k]) : double(sl[k]) + double(cl[k]);
    return total;
}

// A lane-wise compensated sum (TwoSum per add), read out as one float64.
struct CompensatedLanes {
    VecF32 s = VecF32::zero(), c = VecF32::zero();
    void add(VecF32 v) {
        const VecF32 t = s + v, z = t - s;
        c = c + ((s - (t - z)) + (v - z));
        s = t;
    }
    double total() const { return combine_compensated(s, c); }
};

// max(x) over a row. A NaN in the row may or may not survive here (max keeps
// its second operand when either is NaN); it reaches every output through the
// sum of exp(x - max) all the same.
template <class T>
float row_max(const T* x, int64_t n) {
    constexpr int W = VecF32::width;
    constexpr float kInf = std::numeric_limits<float>::infinity();
    VecF32 m = VecF32::broadcast(-kInf);
    int64_t i = 0;
    for (; i + W <= n; i += W) m = simd::max(m, simd::load_ahead(x + i));
    if (i < n) m = simd::max(m, load_filled(x + i, static_cast<int>(n - i), -kInf));
    float lanes[W];
    m.store(lanes);
    float mx = lanes[0];
    for (int k = 1; k < W; ++k) mx = std::max(mx, lanes[k]);
    return mx;
}

// e[i] = exp(x[i] - shift) into a float row, returning sum(e), compensated
// like row_stats's sums: blocks of 4 vectors summed as a tree, each block
// added to the lanes' compensated sums.
template <class T>
double exp_shifted_into(const T* x, int64_t n, float shift, float* e) {
    constexpr int W = VecF32::width;
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const VecF32 sh = VecF32::broadcast(shift);
    CompensatedLanes sum;
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        VecF32 v[4];
        for (int k = 0; k < 4; ++k) {
            v[k] = simd::exp(VecF32::load(x + i + k * W) - sh);
            v[k].store(e + i + k * W);
        }
        sum.add((v[0] + v[1]) + (v[2] + v[3]));
    }
    for (; i + W <= n; i += W) {
        const VecF32 v = simd::exp(VecF32::load(x + i) - sh);
        v.store(e + i);
        sum.add(v);
    }
    if (i < n) {
        // Lanes past the row hold -inf: exp gives 0 for any finite shift.
        const VecF32 v = simd::exp(load_filled(x + i, static_cast<int>(n - i), -kInf) - sh);
        v.store_partial(e + i, static_cast<int>(n - i));
        sum.add(v);
    }
    return sum.total();
}

// sum(x - shift) over a row, compensated like row_stats's sums. Label
// smoothing needs sum(x) relative to the row maximum: summed raw, logits of
// 1e30 or 3.4e38 would lose everything to rounding or overflow.
template <class T>
double row_sum_shifted(const T* x, int64_t n, float shift) {
    constexpr int W = VecF32::width;
    const VecF32 sh = VecF32::broadcast(shift);
    CompensatedLanes sum;
    int64_t i = 0;
    for (; i + W <= n; i += W) sum.add(VecF32::load(x + i) - sh);
    if (i < n) sum.add(load_filled(x + i, static_cast<int>(n - i), shift) - sh);
    return sum.total();
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
