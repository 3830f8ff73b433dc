// Depthwise convolution, compiled once per ISA. Floor: 2 N C OH OW R S
// FLOPs against reading x and writing y once, a few FLOPs per byte: memory-
// bound. The grouped path ran these layers as one single-channel product per
// group, a vector of output channels with one live lane: 0.01-0.2x torch
// forward and 0.02-0.04x backward (N8 C32 56x56 to C384 14x14, 3x3).
//
// Here vectors run over the channels of channels-last float pixels (x itself
// when it is float32 channels-last, else one converted copy), and runs of up
// to kRunVectors vectors of channels sum a pixel's taps in registers. Taps
// outside the image are skipped (the valid filter rows per output row, the
// valid filter columns per output column), so padding costs nothing and no
// padded copy is made.
//   y[oh][ow][c]  = bias[c] + sum_{r,s} x[oh sh - ph + r dh][ow sw - pw + s dw][c] w[c][r][s]
//   dx[ih][iw][c] = sum over the taps whose output row (ih + ph - r dh) / sh
//                   and column (iw + pw - s dw) / sw are whole and inside of
//                   dy[oh][ow][c] w[c][r][s]
//   dw[c][r][s]   = sum_{n,oh,ow} dy[n][oh][ow][c] x[n][ih][iw][c]
// At stride 1, dx is the forward pass's walk over dY with the filter turned
// half a turn (correlate_pixels); other strides pull their taps from
// per-column index tables. dw sums an output row's pixels per tap in float
// registers, the rows in float64 per block of rows fixed by the shape, and
// the blocks in order: the same bits for any thread count.
#include "conv_depthwise.h"

#include <type_traits>
#include <vector>

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

using simd::VecF32;
constexpr int kLanes = VecF32::width;
// Vectors of channels summed together over one walk of a pixel's taps: 64
// channels on AVX-512 (four lines of each tap's pixel), 32 on AVX2, whose
// sixteen registers then hold the four sums and the operands in flight (the
// weight gradient and the strided input gradient; the forward pass's blocks
// take BlockShape's runs).
constexpr int kRunVectors = 4;
// The forward pass and the stride-1 input gradient sum a block of output
// pixels together where all of their filter columns are inside the image:
// each tap's weight vectors are loaded once for all of them (one pixel at a
// time, every FMA waited on two loads). A block's sums, pixels x run
// vectors, take at most kMaxBlockSums registers: 16 of AVX-512's 32, 12 of
// AVX2's 16 (BlockShape).
#if FASTNN_SIMD_AVX512
constexpr int kMaxBlockSums = 16;
#else
constexpr int kMaxBlockSums = 12;
#endif
// Blocks of output rows whose weight-gradient sums are kept apart (float64,
// R S Cp each) and added in order at the end: enough blocks to balance the
// threads, few enough that the sums (zeroed, then reduced on one thread) stay
// a small part of the pass (64 blocks were 10% of a C384 14x14 backward).
constexpr int64_t kMaxGradBlocks = 16, kMinGradBlockRows = 4;

// The filter as taps[(r S + s) Cp + c], float, zero beyond C; turned half a
// turn (tap (r, s) holding w[R-1-r][S-1-s]) for the input gradient.
template <class T>
std::vector<float> pack_taps(const TensorView& w, int64_t C, int64_t R, int64_t S, int64_t Cp, bool turned) {
    std::vector<float> taps(static_cast<size_t>(R * S * Cp), 0.0f);
    const T* src = static_cast<const T*>(w.data);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < R; ++r)
            for (int64_t s = 0; s < S; ++s) {
                const int64_t tap = turned ? (R - 1 - r) * S + (S - 1 - s) : r * S + s;
                taps[tap * Cp + c] = simd::to_float(src[c * w.strides[0] + r * w.strides[2] + s * w.strides[3]]);
            }
    return taps;
}

// The filter indices [lo, hi) (of `taps`) whose input index out * stride -
// pad + k * dil lies in [0, in).
struct TapRange {
    int64_t lo, hi;
};

TapRange valid_taps(int64_t out, int64_t stride, int64_t pad, int64_t dil, int64_t taps, int64_t in) {
    const int64_t first = out * stride - pad;
    const int64_t lo = std::min(taps, first >= 0 ? int64_t(0) : (dil - 1 - first) / dil);
    const int64_t hi = first > in - 1 ? int64_t(0) : std::min(taps, (in - 1 - first) / dil + 1);
    return {lo, std::max(lo, hi)};
}

// A run of channels: nv vectors from channel c0, the last one `last` lanes
// wide.
struct ChannelRun {
    int64_t c0;
    int nv, last;
};

// The runs of C channels. They share the vectors evenly (144 channels in
// 16-lane vectors: 3 runs of 3, not 4 + 4 + 1, whose one-vector run paid a
// whole walk over the taps for 16 channels).
std::vector<ChannelRun> channel_runs(int64_t C, int max_vectors = kRunVectors) {
    static_assert(kRunVectors == 4);
    const int64_t vectors = (C + kLanes - 1) / kLanes;
    const int64_t runs = (vectors + max_vectors - 1) / max_vectors;
    const int64_t run_channels = (vectors + runs - 1) / runs * kLanes;
    std::vector<ChannelRun> out;
    for (int64_t c0 = 0; c0 < C; c0 += run_channels) {
        const int64_t left = std::min(run_channels, C - c0);
        const int nv = static_cast<int>((left + kLanes - 1) / kLanes);
        out.push_back({c0, nv, static_cast<int>(left - (nv - 1) * kLanes)});
    }
    return out;
}

// fn(std::integral_constant<int, NV>{}, c0, last) for the run.
template <class Fn>
inline void dispatch_run(const ChannelRun& run, Fn&& fn) {
    switch (run.nv) {
        case 1: fn(std::integral_constant<int, 1>{}, run.c0, run.last); break;
        case 2: fn(std::integral_constant<int, 2>{}, run.c0, run.last); break;
        case 3: fn(std::integral_constant<int, 3>{}, run.c0, run.last); break;
        default: fn(std::integral_constant<int, 4>{}, run.c0, run.last); break;
    }
}

template <class Fn>
void for_each_run(int64_t C, Fn&& fn) {
    for (const ChannelRun& run : channel_runs(C)) dispatch_run(run, fn);
}

template <int NV>
inline int lanes_of(int v, int last) { return v == NV - 1 ? last : kLanes; }

// Pixels per block and vectors per run of the forward pass and the stride-1
// input gradient. AVX-512: 4 x 4. AVX2: 4 pixels x runs of at most 3
// vectors (12 FMA chains, 1.25 loads per FMA) for at most 8 vectors of
// channels, else 2 x 4 (8 chains, 1.5 loads per FMA). Measured on a Zen 3
// VM, the variants alternated call by call: 4 x 3 against 2 x 4 took C36
// 56x56 forward and dx 1.25-1.4x faster, but C144 56x56 0.84-0.94x and C96
// 112x112 0.94-0.99x (not understood: the blocks' pixels fit L1 either way).
struct BlockShape {
    int pixels, run_vectors;
};

#if FASTNN_SIMD_AVX512
constexpr bool kTwoPixelBlocks = false;
inline BlockShape block_shape(int64_t) { return {4, 4}; }
#else
constexpr bool kTwoPixelBlocks = true;
inline BlockShape block_shape(int64_t C) { return C <= 8 * kLanes ? BlockShape{4, 3} : BlockShape{2, 4}; }
#endif

// acc[v] += pixel[v] * tap[v] over a run of NV vectors of channels (the
// pixel's last vector `last` lanes wide; the taps are padded to whole ones).
template <int NV>
inline void add_tap(VecF32 (&acc)[NV], const float* pixel, const float* tap, int last) {
    for (int v = 0; v < NV; ++v)
        acc[v] = simd::fmadd(simd::load_lanes(pixel + v * kLanes, lanes_of<NV>(v, last)), VecF32::load(tap + v * kLanes),
                             acc[v]);
}

// acc[q] += the products of P pixels (pixel_step floats apart) with `rows`
// x `cols` taps, walked rows first then columns as they come: the input of
// tap (r, s) at in + r row_step + s col_step, its weights at taps + r
// tap_row_step + s Cp. Each tap's weight vectors are loaded once for all P.
template <int P, int NV>
inline void add_taps(VecF32 (&acc)[P][NV], const float* in, int64_t pixel_step, int64_t row_step, int64_t col_step,
                     int64_t rows, int64_t cols, const float* taps, int64_t tap_row_step, int64_t Cp, int last) {
    for (int64_t r = 0; r < rows; ++r, in += row_step, taps += tap_row_step) {
        const float* px = in;
        const float* t = taps;
        for (int64_t s = 0; s < cols; ++s, px += col_step, t += Cp)
            for (int v = 0; v < NV; ++v) {
                const VecF32 wv = VecF32::load(t + v * kLanes);
                for (int q = 0; q < P; ++q)
                    acc[q][v] = simd::fmadd(simd::load_lanes(px + q * pixel_step + v * kLanes, lanes_of<NV>(v, last)),
                                            wv, acc[q][v]);
            }
    }
}

template <int NV>
inline void store_run(const VecF32 (&acc)[NV], float* out, int last) {
    for (int v = 0; v < NV; ++v) simd::store_lanes(acc[v], out + v * kLanes, lanes_of<NV>(v, last));
}

// A row of `count` pixels of C channels, Cp floats apart in `row`, into the
// tensor row `dst` (channel stride cs, pixel stride ws) as T.
template <class T>
void write_pixel_row(const float* row, int64_t Cp, int64_t C, int64_t count, T* dst, int64_t cs, int64_t ws) {
    if (cs == 1 || C == 1) {
        for (int64_t i = 0; i < count; ++i)
            for (int64_t c = 0; c < C; ++c) dst[i * ws + c] = simd::from_float<T>(row[i * Cp + c]);
        return;
    }
    pixels_to_planar(row, Cp, C, count, nullptr, dst, cs, ws);
}

// A float32 output with unit channel stride is written where it lies.
template <class T>
bool writes_in_place(const TensorView& t) {
    return std::is_same_v<T, float> && (t.strides[1] == 1 || t.shape[1] == 1);
}

// The taps of one row of outputs: output o's tap (r, s) reads the input
// pixel in + r row_step + (o pix + off + s cstep) ws (channels-last floats)
// and the weights taps + r S Cp + s Cp.
struct TapWalk {
    const float* in;             // input row of the first valid tap row
    const float* taps;           // that tap row's weights
    int64_t rows, row_step;      // valid tap rows; floats from one to the next
    int64_t ws, pix, off, cstep;
    int64_t S, Cp;
    const TapRange* cols;        // valid tap columns per output
    int64_t inner_lo, inner_hi;  // the outputs whose every tap column is valid
};

// Outputs [0, count) of a walk, each bias (or zero) + its taps, to out + o
// out_ws. Pixels outside, runs inside: a block of pixels takes all its
// channels before the next, so the input pixels it shares with the next
// block are still in L1. (Runs outside, pixels inside, each run walked a row
// of 3 input rows: with C = 144 that was 3 x 56 pixels x 128 bytes per run
// against a 32 KiB L1, and the channels-last forward ran at 0.5-0.7x torch.)
void correlate_row(const TapWalk& w, int64_t count, const std::vector<ChannelRun>& runs, int block_pixels,
                   const float* bias, float* out, int64_t out_ws) {
    // Locals for the loops: members read through the reference were reloaded
    // per tap.
    const float* in = w.in;
    const float* taps = w.taps;
    const int64_t ws = w.ws, pix = w.pix, off = w.off, cstep = w.cstep, rows = w.rows, row_step = w.row_step;
    const int64_t S = w.S, Cp = w.Cp, tap_rows = S * Cp, pixel_step = pix * ws, col_step = cstep * ws;
    for (int64_t o = 0; o < count; ++o) {
        const bool block = o >= w.inner_lo && o + block_pixels <= w.inner_hi;
        const TapRange cs = block ? TapRange{0, S} : w.cols[o];
        const float* first_in = in + (o * pix + off + cs.lo * cstep) * ws;
        const float* first_tap = taps + cs.lo * Cp;
        auto sum = [&](auto pixels, auto nv, int64_t c0, int last) {
            constexpr int P = decltype(pixels)::value, NV = decltype(nv)::value;
            VecF32 acc[P][NV];
            for (int v = 0; v < NV; ++v) {
                const VecF32 b = bias ? simd::load_lanes(bias + c0 + v * kLanes, lanes_of<NV>(v, last)) : VecF32::zero();
                for (int q = 0; q < P; ++q) acc[q][v] = b;
            }
            add_taps(acc, first_in + c0, pixel_step, row_step, col_step, rows, cs.hi - cs.lo, first_tap + c0, tap_rows,
                     Cp, last);
            for (int q = 0; q < P; ++q) store_run(acc[q], out + (o + q) * out_ws + c0, last);
        };
        for (const ChannelRun& run : runs)
            dispatch_run(run, [&](auto nv, int64_t c0, int last) {
                constexpr int NV = decltype(nv)::value;
                if (!block) {
                    sum(std::integral_constant<int, 1>{}, nv, c0, last);
                } else if (block_pixels == 4) {
                    if constexpr (4 * NV <= kMaxBlockSums) sum(std::integral_constant<int, 4>{}, nv, c0, last);
                } else {
                    if constexpr (kTwoPixelBlocks) sum(std::integral_constant<int, 2>{}, nv, c0, last);
                }
            });
        if (block) o += block_pixels - 1;
    }
}

// Every row (n, row) of `out` (N C rows cols, T) as correlate_row of the walk
// make_walk(n, row), plus bias (C floats) where given.
template <class T, class MakeWalk>
void correlate_rows(const TensorView& out, int64_t Cp, const float* bias, MakeWalk&& make_walk) {
    const int64_t N = out.shape[0], C = out.shape[1], rows = out.shape[2], cols = out.shape[3];
    const bool direct = writes_in_place<T>(out);
    const BlockShape shape = block_shape(C);
    const std::vector<ChannelRun> runs = channel_runs(C, shape.run_vectors);
    parallel_for(N * rows, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> buf(direct ? 0 : static_cast<size_t>(cols * Cp));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / rows, row = u % rows;
            T* out_row = static_cast<T*>(out.data) + n * out.strides[0] + row * out.strides[2];
            if (direct) {
                correlate_row(make_walk(n, row), cols, runs, shape.pixels, bias, reinterpret_cast<float*>(out_row),
                              out.strides[3]);
            } else {
                correlate_row(make_walk(n, row), cols, runs, shape.pixels, bias, buf.data(), Cp);
                write_pixel_row(buf.data(), Cp, C, cols, out_row, out.strides[1], out.strides[3]);
            }
        }
    });
}

// The input gradient at any stride: per input pixel the taps whose output
// row and column are whole and inside, from index tables.
template <class T>
void input_gradient_strided(const ConvBackwardParams& p, const Sizes& z, const PixelMajor<T>& dy, const float* taps,
                            int64_t Cp) {
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    // Per input column iw, the filter columns s that reach it and their
    // output columns: entries [col_begin[iw], col_begin[iw + 1]).
    std::vector<int64_t> col_begin(static_cast<size_t>(z.W + 1), 0), col_s, col_ow;
    for (int64_t iw = 0; iw < z.W; ++iw) {
        for (int64_t s = 0; s < z.S; ++s) {
            const int64_t num = iw + pw - s * dw;
            if (num < 0 || num % sw != 0 || num / sw >= z.OW) continue;
            col_s.push_back(s);
            col_ow.push_back(num / sw);
        }
        col_begin[iw + 1] = static_cast<int64_t>(col_s.size());
    }
    const TensorView& gx = p.grad_x;
    const bool direct = writes_in_place<T>(gx);
    const int64_t dy_hs = dy.hs, dy_ws = dy.ws, gx_ws = gx.strides[3], tap_rows = z.S * Cp;
    parallel_for(z.N * z.H, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> buf(direct ? 0 : static_cast<size_t>(z.W * Cp));
        std::vector<const float*> row_dy, row_taps;
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / z.H, ih = u % z.H;
            row_dy.clear();
            row_taps.clear();
            for (int64_t r = 0; r < z.R; ++r) {
                const int64_t num = ih + ph - r * dh;
                if (num < 0 || num % sh != 0 || num / sh >= z.OH) continue;
                row_dy.push_back(dy.data + n * dy.ns + num / sh * dy_hs);
                row_taps.push_back(taps + r * tap_rows);
            }
            const size_t nrows = row_dy.size();
            T* gx_row = static_cast<T*>(gx.data) + n * gx.strides[0] + ih * gx.strides[2];
            for_each_run(z.C, [&](auto nv, int64_t c0, int last) {
                constexpr int NV = decltype(nv)::value;
                for (int64_t iw = 0; iw < z.W; ++iw) {
                    VecF32 acc[NV];
                    for (int v = 0; v < NV; ++v) acc[v] = VecF32::zero();
                    const int64_t e0 = col_begin[iw], e1 = col_begin[iw + 1];
                    for (size_t i = 0; i < nrows; ++i)
                        for (int64_t e = e0; e < e1; ++e)
                            add_tap(acc, row_dy[i] + col_ow[e] * dy_ws + c0, row_taps[i] + col_s[e] * Cp + c0, last);
                    float* out = direct ? reinterpret_cast<float*>(gx_row + iw * gx_ws) : buf.data() + iw * Cp;
                    store_run(acc, out + c0, last);
                }
            });
            if (!direct) write_pixel_row(buf.data(), Cp, z.C, z.W, gx_row, gx.strides[1], gx.strides[3]);
        }
    });
}

// sums[v] (+)= sum over ow in [lo, hi) of dy[ow] x[first + (ow - lo) step],
// NV vectors of channels from dy and x (whose pixels are dy_ws and step
// floats apart).
template <int NV>
inline void add_tap_products(const float* dy, int64_t dy_ws, const float* x, int64_t step, int64_t count, int last,
                             VecF32 (&sums)[NV]) {
    for (int64_t i = 0; i < count; ++i, dy += dy_ws, x += step)
        for (int v = 0; v < NV; ++v) {
            const int lanes = lanes_of<NV>(v, last);
            sums[v] = simd::fmadd(simd::load_lanes(dy + v * kLanes, lanes), simd::load_lanes(x + v * kLanes, lanes),
                                  sums[v]);
        }
}

// Registers for the sums of a three-column filter row taken together
// (3 NV of them, with the operands in flight).
#if FASTNN_SIMD_AVX512
constexpr int kMaxRowSums = 12;
#else
constexpr int kMaxRowSums = 6;
#endif

template <class T>
void weight_gradient(const ConvBackwardParams& p, const Sizes& z, const PixelMajor<T>& dy, int64_t Cp) {
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    const PixelMajor<T> x(p.x);
    const int64_t rows = z.N * z.OH, taps = z.R * z.S, S = z.S;
    const int64_t blocks = std::clamp<int64_t>(rows / kMinGradBlockRows, 1, kMaxGradBlocks);
    const int64_t dy_ws = dy.ws, x_ws = x.ws, x_step = sw * x.ws;
    // Per filter column, its output columns; and the output columns all of
    // whose filter columns are inside, [inner_lo, inner_hi). A 3-column
    // filter row sums those pixels for its three taps together: each dY
    // vector loaded once for three products.
    std::vector<Run> runs(static_cast<size_t>(S));
    for (int64_t s = 0; s < S; ++s) runs[s] = valid_outputs(z.OW, z.W, sw, pw, s * dw);
    int64_t inner_lo = z.OW, inner_hi = 0;
    for (int64_t ow = 0; ow < z.OW; ++ow) {
        const TapRange cs = valid_taps(ow, sw, pw, dw, S, z.W);
        if (cs.lo == 0 && cs.hi == S) inner_lo = std::min(inner_lo, ow), inner_hi = ow + 1;
    }
    const bool rows_of_three = S == 3 && inner_lo < inner_hi;
    std::vector<double> sums(static_cast<size_t>(blocks * taps * Cp), 0.0);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            double* block = sums.data() + b * taps * Cp;
            for (int64_t row = rows * b / blocks; row < rows * (b + 1) / blocks; ++row) {
                const int64_t n = row / z.OH, oh = row % z.OH;
                const TapRange rs = valid_taps(oh, sh, ph, dh, z.R, z.H);
                const float* dy_row = dy.data + n * dy.ns + oh * dy.hs;
                for (int64_t r = rs.lo; r < rs.hi; ++r) {
                    const float* x_row = x.data + n * x.ns + (oh * sh - ph + r * dh) * x.hs;
                    double* row_sums = block + r * S * Cp;
                    for_each_run(z.C, [&](auto nv, int64_t c0, int last) {
                        constexpr int NV = decltype(nv)::value;
                        // Columns [lo, hi) of filter column s into acc.
                        auto add_columns = [&](int64_t s, int64_t lo, int64_t hi, VecF32 (&acc)[NV]) {
                            if (lo >= hi) return;
                            const Run& run = runs[s];
                            add_tap_products<NV>(dy_row + lo * dy_ws + c0, dy_ws,
                                                 x_row + (run.first_in + (lo - run.lo) * sw) * x_ws + c0, x_step,
                                                 hi - lo, last, acc);
                        };
                        // Lanes past C hold zeros (masked loads), and the sums
                        // are Cp wide: whole vectors.
                        auto flush = [&](int64_t s, const VecF32 (&acc)[NV]) {
                            for (int v = 0; v < NV; ++v) {
                                double* to = row_sums + s * Cp + c0 + v * kLanes;
                                simd::LaneSumF64 total;
                                total.add(to);
                                total.add(acc[v]);
                                total.store(to);
                            }
                        };
                        if constexpr (3 * NV <= kMaxRowSums) {
                            if (rows_of_three) {
                                VecF32 acc[3][NV];
                                for (int s = 0; s < 3; ++s)
                                    for (int v = 0; v < NV; ++v) acc[s][v] = VecF32::zero();
                                const float* d = dy_row + inner_lo * dy_ws + c0;
                                const float* xp = x_row + (inner_lo * sw - pw) * x_ws + c0;
                                const int64_t col_step = dw * x_ws;
                                for (int64_t ow = inner_lo; ow < inner_hi; ++ow, d += dy_ws, xp += x_step)
                                    for (int v = 0; v < NV; ++v) {
                                        const int lanes = lanes_of<NV>(v, last);
                                        const VecF32 g = simd::load_lanes(d + v * kLanes, lanes);
                                        for (int s = 0; s < 3; ++s)
                                            acc[s][v] = simd::fmadd(
                                                g, simd::load_lanes(xp + s * col_step + v * kLanes, lanes), acc[s][v]);
                                    }
                                for (int s = 0; s < 3; ++s) {
                                    add_columns(s, runs[s].lo, std::min(runs[s].hi, inner_lo), acc[s]);
                                    add_columns(s, std::max(runs[s].lo, inner_hi), runs[s].hi, acc[s]);
                                    flush(s, acc[s]);
                                }
                                return;
                            }
                        }
                        for (int64_t s = 0; s < S; ++s) {
                            VecF32 acc[NV];
                            for (int v = 0; v < NV; ++v) acc[v] = VecF32::zero();
                            add_columns(s, runs[s].lo, runs[s].hi, acc);
                            flush(s, acc);
                        }
                    });
                }
            }
        }
    });
    // The blocks in order into the first (sequential reads).
    double* total = sums.data();
    for (int64_t b = 1; b < blocks; ++b) {
        const double* block = sums.data() + b * taps * Cp;
        for (int64_t i = 0; i < taps * Cp; ++i) total[i] += block[i];
    }
    const TensorView& gw = p.grad_weight;
    T* out = static_cast<T*>(gw.data);
    for (int64_t c = 0; c < z.C; ++c)
        for (int64_t r = 0; r < z.R; ++r)
            for (int64_t s = 0; s < z.S; ++s)
                out[c * gw.strides[0] + r * gw.strides[2] + s * gw.strides[3]] =
                    simd::from_float<T>(static_cast<float>(total[(r * z.S + s) * Cp + c]));
}

// out = bias + the correlation of `in` (channels-last floats, H x W pixels)
// with the taps at (stride, pad, dilation): out[oh][ow] = bias + sum_{r,s}
// in[oh sh - ph + r dh][ow sw - pw + s dw] taps[r][s], the taps outside the
// image skipped, the others summed in ascending (r, s).
template <class T, class In>
void correlate_pixels(const In& in, int64_t H, int64_t W, const float* taps, int64_t R, int64_t S, int64_t Cp,
                      const int64_t (&stride)[2], const int64_t (&pad)[2], const int64_t (&dilation)[2],
                      const float* bias, const TensorView& out) {
    const auto [sh, sw] = stride;
    const auto [ph, pw] = pad;
    const auto [dh, dw] = dilation;
    const int64_t OW = out.shape[3];
    std::vector<TapRange> cols(static_cast<size_t>(OW));
    // [inner_lo, inner_hi): the output columns all of whose filter columns
    // are inside the image (consecutive; empty when none is).
    int64_t inner_lo = OW, inner_hi = 0;
    for (int64_t ow = 0; ow < OW; ++ow) {
        cols[ow] = valid_taps(ow, sw, pw, dw, S, W);
        if (cols[ow].lo == 0 && cols[ow].hi == S) inner_lo = std::min(inner_lo, ow), inner_hi = ow + 1;
    }
    correlate_rows<T>(out, Cp, bias, [&](int64_t n, int64_t oh) {
        const TapRange rs = valid_taps(oh, sh, ph, dh, R, H);
        return TapWalk{in.data + n * in.ns + (oh * sh - ph + rs.lo * dh) * in.hs, taps + rs.lo * S * Cp,
                       rs.hi - rs.lo, dh * in.hs, in.ws, sw, -pw, dw, S, Cp, cols.data(), inner_lo, inner_hi};
    });
}

}  // namespace

template <class T>
void depthwise_forward(const ConvParams& p, const float* bias) {
    const Sizes z(p.x, p.weight, p.out, p.geo.groups);
    if (planar_applies(p.x, p.out, p.geo.stride[1])) return forward_planar<T>(p, z, bias);
    const int64_t Cp = round_up(z.C, kLanes);
    const std::vector<float> taps = pack_taps<T>(p.weight, z.C, z.R, z.S, Cp, false);
    correlate_pixels<T>(PixelMajor<T>(p.x), z.H, z.W, taps.data(), z.R, z.S, Cp, p.geo.stride, p.geo.pad,
                        p.geo.dilation, bias, p.out);
}

template <class T>
void depthwise_backward(const ConvBackwardParams& p) {
    const Sizes z(p.x, p.weight, p.grad_out, p.geo.groups);
    const bool stride1 = p.geo.stride[0] == 1 && p.geo.stride[1] == 1;
    const bool planar_dx = p.grad_x.data && stride1 && planar_applies(p.grad_out, p.grad_x, 1);
    if (planar_dx) input_gradient_planar<T>(p, z);
    const bool need_dx = p.grad_x.data && !planar_dx, need_dw = p.grad_weight.data != nullptr;
    if (!need_dx && !need_dw) return;
    const int64_t Cp = round_up(z.C, kLanes);
    const PixelMajor<T> dy(p.grad_out, WorkspaceSlot::conv_grad);
    if (need_dx) {
        if (stride1) {
            // The correlation of dY with the filter turned half a turn: the
            // forward pass's walk, shifted by dh - ph rows and (S-1) dw
            // - pw columns.
            const std::vector<float> turned = pack_taps<T>(p.weight, z.C, z.R, z.S, Cp, true);
            const int64_t(&dil)[2] = p.geo.dilation;
            const int64_t shift[2] = {(z.R - 1) * dil[0] - p.geo.pad[0], (z.S - 1) * dil[1] - p.geo.pad[1]};
            correlate_pixels<T>(dy, z.OH, z.OW, turned.data(), z.R, z.S, Cp, p.geo.stride, shift, dil, nullptr,
                                p.grad_x);
        } else {
            const std::vector<float> taps = pack_taps<T>(p.weight, z.C, z.R, z.S, Cp, false);
            input_gradient_strided<T>(p, z, dy, taps.data(), Cp);
        }
    }
    if (need_dw) weight_gradient<T>(p, z, dy, Cp);
}

template void depthwise_forward<float>(const ConvParams&, const float*);
template void depthwise_forward<bf16>(const ConvParams&, const float*);
template void depthwise_backward<float>(const ConvBackwardParams&);
template void depthwise_backward<bf16>(const ConvBackwardParams&);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
