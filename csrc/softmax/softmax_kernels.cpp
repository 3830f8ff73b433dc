// Softmax and log-softmax, forward and backward, one row at a time.
//
// Floor: memory. Forward reads x and writes y (8 bytes per fp32 element),
// backward reads y and dy and writes dx (12 bytes). Each is two passes over a
// row: statistics (online max and sum of exp, or the dot product of the
// backward), then the output. The second pass re-reads the row from L2 (a
// 32k-vocabulary fp32 row is 128 KiB, a fraction of the 1 MiB L2), so DRAM
// sees the minimum traffic. Arithmetic: log-softmax takes 1.25 exps per
// element (online max and sum). Softmax takes one: the maximum first, then
// exp(x - max) into a float row buffer (L1/L2) while summing it, then the
// output scaled from the buffer; computing the exps again in the output pass
// (2.25 per element) made it exp-bound on AVX-512 cores whose two vector ports
// also run every other operation (this Xeon: 2x the time). Rows are split
// across threads; each row is one thread's, so results do not depend on the
// thread count.
#include <cmath>
#include <type_traits>

#include "fastnn/parallel.h"
#include "fastnn/softmax.h"
#include "row_ops.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

constexpr int W = VecF32::width;

template <bool kStream, class T>
void forward_rows(const SoftmaxParams& p) {
    const int64_t cols = p.x.shape[p.x.ndim - 1], rows = row_count(p.x);
    parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
        thread_local std::vector<T> x_scratch, y_scratch;
        thread_local std::vector<float> exps;
        RowView<T> xs(p.x, cols, x_scratch), ys(p.y, cols, y_scratch);
        if (!p.log && static_cast<int64_t>(exps.size()) < cols) exps.resize(cols);
        for (int64_t r = begin; r < end; ++r) {
            const T* x = xs.row(r);
            xs.gather();
            T* y = ys.row(r);
            // A row of only -inf has max -inf: x - max is NaN, as in PyTorch.
            if (p.log) {
                const RowStats st = row_stats(x, cols);
                const VecF32 m = VecF32::broadcast(st.max);
                const VecF32 log_sum = VecF32::broadcast(static_cast<float>(std::log(st.sum_exp)));
                const T* in[] = {x};
                map_row<kStream, T, 1>(y, in, cols, [&](const VecF32* v, int64_t) { return (v[0] - m) - log_sum; });
            } else {
                const double sum = exp_shifted_into(x, cols, row_max(x, cols), exps.data());
                const VecF32 inv_sum = VecF32::broadcast(static_cast<float>(1.0 / sum));
                const float* in[] = {exps.data()};
                map_row<kStream, T, 1>(y, in, cols, [&](const VecF32* v, int64_t) { return v[0] * inv_sum; });
            }
            ys.scatter();
        }
        if (kStream) simd::store_fence();
    });
}

// sum(a * b) or, with b null, sum(a), compensated (Ogita, Rump & Oishi,
// "Accurate sum and dot product", Dot2): each lane carries the rounding error
// of its sum (TwoSum) and of each product (FMA), so the result is as if
// computed in twice the precision. The backward subtracts it from dy, where a
// plain float sum's error would be amplified by the cancellation; the extra
// operations are free in a memory-bound pass.
template <class T>
double row_dot(const T* a, const T* b, int64_t n) {
    VecF32 s = VecF32::zero(), c = VecF32::zero();
    auto add = [&](VecF32 va, VecF32 vb) {
        VecF32 p = va, err = VecF32::zero();
        if (b) {
            p = va * vb;
            err = simd::product_error(va, vb, p);
        }
        const VecF32 t = s + p, z = t - s;
        c = c + ((s - (t - z)) + (p - z)) + err;
        s = t;
    };
    int64_t i = 0;
    for (; i + W <= n; i += W) add(simd::load_ahead(a + i), b ? simd::load_ahead(b + i) : VecF32::zero());
    if (i < n) {
        const int r = static_cast<int>(n - i);
        add(VecF32::load_partial(a + i, r), b ? VecF32::load_partial(b + i, r) : VecF32::zero());
    }
    return combine_compensated(s, c);
}

// e^y as an unevaluated sum hi + lo with a relative error near 2^-28, for
// the float32 log-softmax backward dx = dy - e^y s, s = sum(dy). Where dy and
// e^y s nearly cancel, dx's error is the error of e^y s; a float exp (up to
// ~0.6 ulp) and a rounded product there came out at 2-3x PyTorch's (whose exp
// is nearly correctly rounded) on one draw in a thousand of short rows. So
// the reduced argument r = y - n ln2 is kept in two floats (n kLn2Hi is
// exact; the second FMA's rounding error is recovered by a third, r1 - rh
// being exact), 1 + r is split exactly
// (Fast2Sum), and only the polynomial's r^2 T(r) (below 0.06) and the low
// terms are rounded.
struct ExpSplit {
    VecF32 hi, lo;
};

inline ExpSplit exp_split(VecF32 y) {
    const VecF32 ln2_hi = VecF32::broadcast(simd::kLn2Hi), ln2_lo = VecF32::broadcast(simd::kLn2Lo);
    const VecF32 one = VecF32::broadcast(1.0f);
    const simd::MaskF32 rounds_to_zero = simd::cmp_lt(y, VecF32::broadcast(-104.0f));
    const VecF32 x = simd::min(VecF32::broadcast(89.0f), simd::max(VecF32::broadcast(-104.0f), y));
    const VecF32 n = simd::round_nearest(x * VecF32::broadcast(simd::kLog2e));
    const VecF32 r1 = simd::fnmadd(n, ln2_hi, x);
    const VecF32 rh = simd::fnmadd(n, ln2_lo, r1);
    const VecF32 rl = simd::fnmadd(n, ln2_lo, r1 - rh);
    const VecF32 h = rh + one;
    const VecF32 h_err = (one - h) + rh;
    const VecF32 tail = simd::fmadd(rh * rh, simd::horner(rh, simd::kExpPoly), h_err);
    // e^(rh + rl) = e^rh (1 + rl + ...); rl e^rh ~ rl h to the precision kept.
    const VecF32 lo = simd::fmadd(rl, h, tail);
    return {simd::scale_pow2_or_zero(h, n, rounds_to_zero), simd::scale_pow2_or_zero(lo, n, rounds_to_zero)};
}

// dy - e^y s with s = s_hi + s_lo: the product's rounding error (an FMA) and
// the low parts joined before the one subtraction that cancels.
inline VecF32 log_softmax_grad(VecF32 dy, VecF32 y, VecF32 s_hi, VecF32 s_lo) {
    const ExpSplit e = exp_split(y);
    const VecF32 prod = e.hi * s_hi;
    const VecF32 low = simd::fmadd(e.lo, s_hi, simd::fmadd(e.hi, s_lo, simd::product_error(e.hi, s_hi, prod)));
    return (dy - prod) - low;
}

template <bool kStream, class T>
void backward_rows(const SoftmaxBackwardParams& p) {
    const int64_t cols = p.y.shape[p.y.ndim - 1], rows = row_count(p.y);
    parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
        thread_local std::vector<T> g_scratch, y_scratch, dx_scratch;
        RowView<T> gs(p.grad_out, cols, g_scratch), ys(p.y, cols, y_scratch), dxs(p.grad_in, cols, dx_scratch);
        for (int64_t r = begin; r < end; ++r) {
            const T* g = gs.row(r);
            gs.gather();
            const T* y = ys.row(r);
            ys.gather();
            T* dx = dxs.row(r);
            const T* in[] = {g, y};
            if (p.log && std::is_same_v<T, float>) {
                const double sum = row_dot<T>(g, nullptr, cols);
                const float hi = static_cast<float>(sum);
                // An infinite or NaN sum has no low part (inf - inf).
                const float lo = std::isfinite(hi) ? static_cast<float>(sum - double(hi)) : 0.0f;
                const VecF32 s_hi = VecF32::broadcast(hi), s_lo = VecF32::broadcast(lo);
                map_row<kStream, T, 2>(dx, in, cols, [&](const VecF32* v, int64_t) {
                    return log_softmax_grad(v[0], v[1], s_hi, s_lo);
                });
            } else if (p.log) {
                // bfloat16's rounding (2^-9) dwarfs a float exp's error.
                const VecF32 sum = VecF32::broadcast(static_cast<float>(row_dot<T>(g, nullptr, cols)));
                map_row<kStream, T, 2>(dx, in, cols,
                                       [&](const VecF32* v, int64_t) { return v[0] - simd::exp(v[1]) * sum; });
            } else {
                const VecF32 dot = VecF32::broadcast(static_cast<float>(row_dot<T>(g, y, cols)));
                map_row<kStream, T, 2>(dx, in, cols, [&](const VecF32* v, int64_t) { return v[1] * (v[0] - dot); });
            }
            dxs.scatter();
        }
        if (kStream) simd::store_fence();
    });
}

// Streaming stores need a dense output whose rows are written in place.
bool stream_output(const TensorView& out) {
    return out.strides[out.ndim - 1] == 1 && numel(out) * int64_t(dtype_size(out.dtype)) >= kRowStreamingBytes;
}

template <class T>
void forward_typed(const SoftmaxParams& p) {
    if (stream_output(p.y)) forward_rows<true, T>(p);
    else forward_rows<false, T>(p);
}

template <class T>
void backward_typed(const SoftmaxBackwardParams& p) {
    if (stream_output(p.grad_in)) backward_rows<true, T>(p);
    else backward_rows<false, T>(p);
}

void forward_kernel(const SoftmaxParams& p) {
    if (p.x.dtype == DType::bf16) forward_typed<bf16>(p);
    else forward_typed<float>(p);
}

void backward_kernel(const SoftmaxBackwardParams& p) {
    if (p.y.dtype == DType::bf16) backward_typed<bf16>(p);
    else backward_typed<float>(p);
}

}  // namespace

const SoftmaxKernels softmax_kernels = {forward_kernel, backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
