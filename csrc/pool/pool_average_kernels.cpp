// Average pooling (avg_pool2d, adaptive_avg_pool2d), forward and backward,
// compiled once per ISA. Memory-bound: the floor is reading the input once
// and writing the output once (backward: grad_out once, grad_in once).
// Every sum is in float64 and rounded once, which keeps long windows (a
// global average over 7x7 or 56x56) within PyTorch's own error; floats
// convert to float64 exactly, a vector at a time, so this costs conversions,
// not bandwidth. Sums are multiplied by the divisor's float64 reciprocal (a
// division per output was the largest cost of small windows): within 2^-52
// of the quotient before the rounding to float, exact for power-of-two
// divisors.
//
// Channels-last (unit channel strides): vectors run over channels, and a
// unit of work is a row of output pixels (forward) or of input pixels
// (backward) with all its channels, so the window taps read contiguous runs
// of C values. Anything else (NCHW, strided
// views): one (image, channel) plane per unit, vectors run along rows.
//
// The backward pulls: each input gradient is the sum of the shares
// (gradient / divisor) of the outputs whose window holds it, formed where it
// is written, so grad_in is written once, with no zeroing pass and no
// scattered adds (0.4-0.6x torch when it accumulated into a buffer).
#include <algorithm>
#include <vector>

#include "fastnn/parallel.h"
#include "fastnn/simd.h"
#include "pool_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::pool {
namespace {

using simd::LaneSumF64;
using simd::load_lanes;
using simd::store_lanes;
using simd::VecF32;
constexpr int kLanes = VecF32::width;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The windows of one call: the span of every output row and column, the
// reciprocal divisors, and for every input row and column the outputs whose
// window holds it, [lo, hi): each window's start and end only grow with the
// output index, so those outputs are consecutive.
struct AverageWindows {
    std::vector<Span> rows, cols;
    std::vector<int64_t> row_lo, row_hi, col_lo, col_hi;
    std::vector<double> inv_count;  // [k] = 1 / k for divisors k below kTable
    double inv_override = 0.0;
    // Window areas up to this have their reciprocal in the table; larger
    // ones (adaptive pooling of a large plane to a few outputs) are divided
    // once per output, which those few outputs do not notice.
    static constexpr int64_t kTable = 4096;

    AverageWindows(const PoolWindow& w, const Geometry& g) : rows(g.OH), cols(g.OW) {
        int64_t most_rows = 0, most_cols = 0;
        for (int64_t o = 0; o < g.OH; ++o) most_rows = std::max(most_rows, (rows[o] = window_span(w, 0, o, g.H, g.OH)).count);
        for (int64_t o = 0; o < g.OW; ++o) most_cols = std::max(most_cols, (cols[o] = window_span(w, 1, o, g.W, g.OW)).count);
        if (w.kind == PoolKind::avg && w.divisor_override > 0) {
            inv_override = 1.0 / static_cast<double>(w.divisor_override);
        } else {
            // k = 0 (a window with no element) gives inf, and 0 * inf = NaN,
            // as 0 / 0 would.
            inv_count.resize(static_cast<size_t>(std::min(most_rows * most_cols + 1, kTable)));
            for (size_t k = 0; k < inv_count.size(); ++k) inv_count[k] = 1.0 / static_cast<double>(k);
        }
        covering(rows, g.H, row_lo, row_hi);
        covering(cols, g.W, col_lo, col_hi);
    }

    double inv(int64_t oh, int64_t ow) const {
        if (inv_override > 0.0) return inv_override;
        const int64_t k = rows[oh].count * cols[ow].count;
        return k < kTable ? inv_count[static_cast<size_t>(k)] : 1.0 / static_cast<double>(k);
    }

    // The largest number of outputs along rows that hold one input row.
    int64_t most_row_cover() const {
        int64_t most = 1;
        for (size_t i = 0; i < row_lo.size(); ++i) most = std::max(most, row_hi[i] - row_lo[i]);
        return most;
    }

private:
    static void covering(const std::vector<Span>& spans, int64_t in, std::vector<int64_t>& lo,
                         std::vector<int64_t>& hi) {
        lo.assign(static_cast<size_t>(in), 0);
        hi.assign(static_cast<size_t>(in), 0);  // lo = hi = 0: no output holds it
        for (int64_t o = static_cast<int64_t>(spans.size()) - 1; o >= 0; --o)
            for (int64_t i = spans[o].begin; i < spans[o].end; ++i) lo[i] = o;
        for (int64_t o = 0; o < static_cast<int64_t>(spans.size()); ++o)
            for (int64_t i = spans[o].begin; i < spans[o].end; ++i) hi[i] = o + 1;
    }
};

// One output whose window is the whole input plane (global average pooling).
bool covers_plane(const Geometry& g, const AverageWindows& win) {
    return g.OH == 1 && g.OW == 1 && win.rows[0].begin == 0 && win.rows[0].end == g.H && win.cols[0].begin == 0 &&
           win.cols[0].end == g.W;
}

// Every (image, channel) plane of t is one contiguous run of H * W elements.
bool dense_planes(const TensorView& t) {
    return (t.strides[3] == 1 || t.shape[3] == 1) && (t.strides[2] == t.shape[3] || t.shape[2] == 1);
}

// body(n, c) for every (n, c) plane, 16 planes or more per task. A task
// steps (n, c) instead of dividing per plane: two integer divisions were
// most of a global average's ~110 cycles per plane.
template <class Body>
void for_each_plane(const Geometry& g, Body&& body) {
    parallel_for(g.N * g.C, 16, [&](int64_t u0, int64_t u1) {
        int64_t n = u0 / g.C, c = u0 % g.C;
        for (int64_t u = u0; u < u1; ++u) {
            body(n, c);
            if (++c == g.C) c = 0, ++n;
        }
    });
}

// ---- forward ---------------------------------------------------------------

// n contiguous elements summed in float64, a vector at a time.
template <class T>
double sum_short_run(const T* src, int64_t n) {
    LaneSumF64 lanes;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) lanes.add(VecF32::load(src + i));
    // The tail element by element: as a masked load it cost a quarter of a
    // 7x7 plane's time.
    double tail = 0.0;
    for (; i < n; ++i) tail += simd::to_float(src[i]);
    return lanes.total() + tail;
}

// Long runs four vectors per step into four accumulators, the stream
// requested ahead: one accumulator's dependent adds held a 112x112 global
// average to 0.8x torch. Short runs (a 7x7 plane) keep one: four horizontal
// totals cost more than the chains save there.
template <class T>
double sum_run(const T* src, int64_t n) {
    constexpr int64_t kLongRun = 16 * kLanes;
    if (n < kLongRun) return sum_short_run(src, n);
    LaneSumF64 a, b, c, d;
    int64_t i = 0;
    for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
        a.add(simd::load_ahead(src + i));
        b.add(simd::load_ahead(src + i + kLanes));
        c.add(simd::load_ahead(src + i + 2 * kLanes));
        d.add(simd::load_ahead(src + i + 3 * kLanes));
    }
    return ((a.total() + b.total()) + (c.total() + d.total())) + sum_short_run(src + i, n - i);
}

// The average of one channels-last window over channels [0, C). Runs of
// kSumVectors vectors of channels walk the window's taps once, each tap a
// contiguous run (four lines on AVX-512: a whole block of kChannelBlock)
// added into 2 kSumVectors float64 accumulators, independent chains. One
// vector of channels at a time over all taps instead (the tail still does
// that) reads a quarter of every pixel's lines per pass, and on a long
// window the taps were one dependent chain: a channels-last global average
// of N8 C64 112x112 took 1.42 ms against torch's 0.77. (An array of
// accumulators with a runtime index lived on the stack, zeroed by a rep stos
// per window: the run's loops are unrolled so that they are registers; four
// vectors' eight accumulators also fit AVX2's sixteen registers.)
constexpr int kSumVectors = 4;

template <class T>
void average_channels(const T* x, int64_t xhs, int64_t xws, const Span& hs, const Span& ws, int64_t C, double inv,
                      T* y) {
    constexpr int64_t kRun = kSumVectors * kLanes;
    int64_t c = 0;
    for (; c + kRun <= C; c += kRun) {
        LaneSumF64 sum[kSumVectors];
        for (int64_t h = hs.begin; h < hs.end; ++h)
            for (int64_t w = ws.begin; w < ws.end; ++w) {
                const T* tap = x + h * xhs + w * xws + c;
#pragma GCC unroll 4
                for (int v = 0; v < kSumVectors; ++v) sum[v].add(simd::load_ahead(tap + v * kLanes));
            }
#pragma GCC unroll 4
        for (int v = 0; v < kSumVectors; ++v) sum[v].scaled(inv).store(y + c + v * kLanes);
    }
    for (; c < C; c += kLanes) {
        const int lanes = static_cast<int>(std::min<int64_t>(kLanes, C - c));
        LaneSumF64 sum;
        for (int64_t h = hs.begin; h < hs.end; ++h)
            for (int64_t w = ws.begin; w < ws.end; ++w) sum.add(load_lanes(x + h * xhs + w * xws + c, lanes));
        store_lanes(sum.scaled(inv), y + c, lanes);
    }
}

// Units of work: (image, output row), each window's taps read as whole
// pixels; only when those are too few for the threads (a global average of
// a few images) is each split in blocks of kChannelBlock channels. Split
// always, N8 C256 28x28 2x2 ran at 0.74x torch (each unit reading a quarter
// of every pixel, 1 KiB-strided).
inline constexpr int64_t kUnitsPerThread = 8;

template <class T>
void forward_channels_last(const PoolParams& p, const Geometry& g, const AverageWindows& win) {
    const TensorView &x = p.x, &y = p.out;
    const T* xd = static_cast<const T*>(x.data);
    T* yd = static_cast<T*>(y.data);
    const int64_t rows = g.N * g.OH;
    const int64_t block = rows >= kUnitsPerThread * num_threads() ? g.C : g.cblock;
    const int64_t blocks = (g.C + block - 1) / block;
    parallel_for(rows * blocks, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t cb = u % blocks, row = u / blocks;
            const int64_t n = row / g.OH, oh = row % g.OH;
            const int64_t c0 = cb * block, cn = std::min(block, g.C - c0);
            const T* xb = xd + n * x.strides[0] + c0;
            for (int64_t ow = 0; ow < g.OW; ++ow) {
                T* yp = yd + n * y.strides[0] + oh * y.strides[2] + ow * y.strides[3] + c0;
                average_channels(xb, x.strides[2], x.strides[3], win.rows[oh], win.cols[ow], cn, win.inv(oh, ow), yp);
            }
        }
    });
}

// colsum[w] = the sum of rows hs of column w (float64), w < W.
template <class T>
void column_sums(const T* plane, int64_t xhs, int64_t xws, const Span& hs, int64_t W, double* colsum) {
    if (xws == 1) {
        for (int64_t w0 = 0; w0 < W; w0 += kLanes) {
            const int lanes = static_cast<int>(std::min<int64_t>(kLanes, W - w0));
            LaneSumF64 sum;
            for (int64_t h = hs.begin; h < hs.end; ++h) sum.add(load_lanes(plane + h * xhs + w0, lanes));
            sum.store(colsum + w0);
        }
        return;
    }
    for (int64_t w = 0; w < W; ++w) {
        double sum = 0.0;
        for (int64_t h = hs.begin; h < hs.end; ++h) sum += simd::to_float(plane[h * xhs + w * xws]);
        colsum[w] = sum;
    }
}

// One output per plane whose window is the whole dense plane (global
// average pooling): each plane one contiguous run.
template <class T>
void forward_global(const PoolParams& p, const Geometry& g, double inv) {
    const TensorView &x = p.x, &y = p.out;
    const T* xd = static_cast<const T*>(x.data);
    T* yd = static_cast<T*>(y.data);
    const int64_t hw = g.H * g.W;
    for_each_plane(g, [&](int64_t n, int64_t c) {
        yd[n * y.strides[0] + c * y.strides[1]] =
            simd::from_float<T>(static_cast<float>(sum_run(xd + n * x.strides[0] + c * x.strides[1], hw) * inv));
    });
}

template <class T>
void forward_planes(const PoolParams& p, const Geometry& g, const AverageWindows& win) {
    const TensorView &x = p.x, &y = p.out;
    const T* xd = static_cast<const T*>(x.data);
    T* yd = static_cast<T*>(y.data);
    // Windows over whole rows of a dense plane are one contiguous run each.
    const bool whole_rows = dense_planes(x) && g.OW == 1 && win.cols[0].begin == 0 && win.cols[0].end == g.W;
    parallel_for(g.N * g.C, 1, [&](int64_t u0, int64_t u1) {
        std::vector<double> colsum(static_cast<size_t>(round_up(g.W, kLanes)));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / g.C, c = u % g.C;
            const T* xb = xd + n * x.strides[0] + c * x.strides[1];
            T* yb = yd + n * y.strides[0] + c * y.strides[1];
            for (int64_t oh = 0; oh < g.OH; ++oh) {
                const Span& hs = win.rows[oh];
                T* yrow = yb + oh * y.strides[2];
                if (whole_rows) {
                    const double sum = hs.end > hs.begin ? sum_run(xb + hs.begin * g.W, (hs.end - hs.begin) * g.W) : 0.0;
                    yrow[0] = simd::from_float<T>(static_cast<float>(sum * win.inv(oh, 0)));
                    continue;
                }
                column_sums(xb, x.strides[2], x.strides[3], hs, g.W, colsum.data());
                for (int64_t ow = 0; ow < g.OW; ++ow) {
                    const Span& ws = win.cols[ow];
                    double sum = 0.0;
                    for (int64_t w = ws.begin; w < ws.end; ++w) sum += colsum[w];
                    yrow[ow * y.strides[3]] = simd::from_float<T>(static_cast<float>(sum * win.inv(oh, ow)));
                }
            }
        }
    });
}

// ---- backward --------------------------------------------------------------

// The gradient of one channels-last input pixel, C channels: the shares of
// outputs [oh0, oh1) x [ow0, ow1), runs of kSumVectors vectors of channels
// per walk over those outputs, as average_channels.
template <class T>
void pull_channels(const T* gy, int64_t gyhs, int64_t gyws, const AverageWindows& win, int64_t oh0, int64_t oh1,
                   int64_t ow0, int64_t ow1, int64_t C, T* gx) {
    constexpr int64_t kRun = kSumVectors * kLanes;
    int64_t c = 0;
    for (; c + kRun <= C; c += kRun) {
        LaneSumF64 sum[kSumVectors];
        for (int64_t oh = oh0; oh < oh1; ++oh)
            for (int64_t ow = ow0; ow < ow1; ++ow) {
                const T* share = gy + oh * gyhs + ow * gyws + c;
                const double inv = win.inv(oh, ow);
#pragma GCC unroll 4
                for (int v = 0; v < kSumVectors; ++v) sum[v].add_scaled(VecF32::load(share + v * kLanes), inv);
            }
#pragma GCC unroll 4
        for (int v = 0; v < kSumVectors; ++v) sum[v].scaled(1.0).store(gx + c + v * kLanes);
    }
    for (; c < C; c += kLanes) {
        const int lanes = static_cast<int>(std::min<int64_t>(kLanes, C - c));
        LaneSumF64 sum;
        for (int64_t oh = oh0; oh < oh1; ++oh)
            for (int64_t ow = ow0; ow < ow1; ++ow)
                sum.add_scaled(load_lanes(gy + oh * gyhs + ow * gyws + c, lanes), win.inv(oh, ow));
        store_lanes(sum.scaled(1.0), gx + c, lanes);
    }
}

template <class T>
void backward_channels_last(const PoolBackwardParams& p, const Geometry& g, const AverageWindows& win) {
    const TensorView &gy = p.grad_out, &gx = p.grad_in;
    const T* gyd = static_cast<const T*>(gy.data);
    T* gxd = static_cast<T*>(gx.data);
    if (covers_plane(g, win)) {
        // Global average: every pixel of image n gets the same row of
        // shares, formed once and copied (pulling it anew per pixel ran at
        // 1.3x torch against the scatter's 1.7x).
        const double inv = win.inv(0, 0);
        parallel_for(g.N * g.H, 1, [&](int64_t u0, int64_t u1) {
            std::vector<T> shares(static_cast<size_t>(g.C));
            int64_t row_image = -1;
            for (int64_t u = u0; u < u1; ++u) {
                const int64_t n = u / g.H, h = u % g.H;
                if (n != row_image) {
                    for (int64_t c = 0; c < g.C; ++c)
                        shares[c] = simd::from_float<T>(
                            static_cast<float>(simd::to_float(gyd[n * gy.strides[0] + c * gy.strides[1]]) * inv));
                    row_image = n;
                }
                for (int64_t w = 0; w < g.W; ++w)
                    std::copy_n(shares.data(), g.C, gxd + n * gx.strides[0] + h * gx.strides[2] + w * gx.strides[3]);
            }
        });
        return;
    }
    parallel_for(g.N * g.H, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / g.H, h = u % g.H;
            const T* gyb = gyd + n * gy.strides[0];
            for (int64_t w = 0; w < g.W; ++w) {
                T* gp = gxd + n * gx.strides[0] + h * gx.strides[2] + w * gx.strides[3];
                pull_channels(gyb, gy.strides[2], gy.strides[3], win, win.row_lo[h], win.row_hi[h], win.col_lo[w],
                              win.col_hi[w], g.C, gp);
            }
        }
    });
}

// One output row's shares spread along its windows' columns: row[w] = the
// sum over outputs ow whose window holds column w of gy[ow] / divisor.
template <class T>
void spread_row(const T* gy_row, int64_t gyws, const AverageWindows& win, int64_t oh, int64_t W, double* row) {
    std::fill_n(row, W, 0.0);
    for (int64_t ow = 0; ow < static_cast<int64_t>(win.cols.size()); ++ow) {
        const Span& ws = win.cols[ow];
        const double share = simd::to_float(gy_row[ow * gyws]) * win.inv(oh, ow);
        for (int64_t w = ws.begin; w < ws.end; ++w) row[w] += share;
    }
}

// One output per plane whose window is the whole plane: every input of the
// plane gets its one share.
template <class T>
void backward_global(const PoolBackwardParams& p, const Geometry& g, double inv) {
    const TensorView &gy = p.grad_out, &gx = p.grad_in;
    const T* gyd = static_cast<const T*>(gy.data);
    T* gxd = static_cast<T*>(gx.data);
    const bool dense = dense_planes(gx);
    for_each_plane(g, [&](int64_t n, int64_t c) {
        const T share = simd::from_float<T>(
            static_cast<float>(simd::to_float(gyd[n * gy.strides[0] + c * gy.strides[1]]) * inv));
        T* plane = gxd + n * gx.strides[0] + c * gx.strides[1];
        if (dense) {
            std::fill_n(plane, g.H * g.W, share);
        } else {
            for (int64_t h = 0; h < g.H; ++h)
                for (int64_t w = 0; w < g.W; ++w) plane[h * gx.strides[2] + w * gx.strides[3]] = share;
        }
    });
}

template <class T>
void backward_planes(const PoolBackwardParams& p, const Geometry& g, const AverageWindows& win) {
    const TensorView &gy = p.grad_out, &gx = p.grad_in;
    const T* gyd = static_cast<const T*>(gy.data);
    T* gxd = static_cast<T*>(gx.data);
    // Input row h needs the spread rows of outputs [row_lo[h], row_hi[h]),
    // which only move forward with h: a ring of the most that one input row
    // needs holds them.
    const int64_t ring = win.most_row_cover(), Wp = round_up(g.W, kLanes);
    parallel_for(g.N * g.C, 1, [&](int64_t u0, int64_t u1) {
        std::vector<double> spread(static_cast<size_t>(ring * Wp), 0.0);
        float lanes_out[kLanes];
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / g.C, c = u % g.C;
            const T* gyb = gyd + n * gy.strides[0] + c * gy.strides[1];
            T* gxb = gxd + n * gx.strides[0] + c * gx.strides[1];
            int64_t next = 0;  // the next output row to spread
            for (int64_t h = 0; h < g.H; ++h) {
                const int64_t lo = win.row_lo[h], hi = win.row_hi[h];
                for (; next < hi; ++next)
                    spread_row(gyb + next * gy.strides[2], gy.strides[3], win, next, g.W, spread.data() + next % ring * Wp);
                T* out = gxb + h * gx.strides[2];
                for (int64_t w0 = 0; w0 < g.W; w0 += kLanes) {
                    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, g.W - w0));
                    LaneSumF64 sum;
                    for (int64_t oh = lo; oh < hi; ++oh) sum.add(spread.data() + oh % ring * Wp + w0);
                    const VecF32 v = sum.scaled(1.0);
                    if (gx.strides[3] == 1) {
                        store_lanes(v, out + w0, lanes);
                    } else {
                        v.store(lanes_out);
                        for (int i = 0; i < lanes; ++i) out[(w0 + i) * gx.strides[3]] = simd::from_float<T>(lanes_out[i]);
                    }
                }
            }
        }
    });
}

template <class T>
void forward_typed(const PoolParams& p) {
    const Geometry g(p.x, p.out, channels_inner(p.x, p.out));
    if (g.N * g.C * g.OH * g.OW == 0) return;
    const AverageWindows win(p.window, g);
    if (g.cblock > 1) forward_channels_last<T>(p, g, win);
    else if (dense_planes(p.x) && covers_plane(g, win)) forward_global<T>(p, g, win.inv(0, 0));
    else forward_planes<T>(p, g, win);
}

template <class T>
void backward_typed(const PoolBackwardParams& p) {
    const Geometry g(p.grad_in, p.grad_out, channels_inner(p.grad_in, p.grad_out));
    if (g.N * g.C * g.H * g.W == 0) return;
    const AverageWindows win(p.window, g);
    if (g.cblock > 1) backward_channels_last<T>(p, g, win);
    else if (covers_plane(g, win)) backward_global<T>(p, g, win.inv(0, 0));
    else backward_planes<T>(p, g, win);
}

}  // namespace

void average_forward(const PoolParams& p) {
    if (p.x.dtype == DType::bf16) forward_typed<bf16>(p);
    else forward_typed<float>(p);
}

void average_backward(const PoolBackwardParams& p) {
    if (p.grad_out.dtype == DType::bf16) backward_typed<bf16>(p);
    else backward_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::pool
