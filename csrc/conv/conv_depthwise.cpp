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
// dw sums an output row's pixels per tap in float registers, the rows in
// float64 per block of rows fixed by the shape, and the blocks in order: the
// same bits for any thread count.
#include "conv_depthwise.h"

#include <type_traits>
#include <vector>

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

using simd::VecF32;
constexpr int kLanes = VecF32::width;
// Vectors of channels summed together over one walk of a pixel's taps: 64
// channels on AVX-512 (four lines of each tap's pixel), 32 on AVX2, whose
// sixteen registers then hold the four sums and the operands in flight.
constexpr int kRunVectors = 4;
// Output pixels the forward sums together where all of their filter columns
// are inside the image: each tap's weight vectors are loaded once for all of
// them (one pixel at a time, every FMA waited on two loads). Their sums take
// kPixelBlock x kRunVectors registers: 16 of AVX-512's 32, 8 of AVX2's 16.
#if FASTNN_SIMD_AVX512
constexpr int kPixelBlock = 4;
#else
constexpr int kPixelBlock = 2;
#endif
// Blocks of output rows whose weight-gradient sums are kept apart (float64,
// R S Cp each) and added in order at the end: enough blocks to balance the
// threads, few enough that the sums (zeroed, then reduced on one thread) stay
// a small part of the pass (64 blocks were 10% of a C384 14x14 backward).
constexpr int64_t kMaxGradBlocks = 16, kMinGradBlockRows = 4;

// The filter as taps[(r S + s) Cp + c], float, zero beyond C.
template <class T>
std::vector<float> pack_taps(const TensorView& w, int64_t C, int64_t R, int64_t S, int64_t Cp) {
    std::vector<float> taps(static_cast<size_t>(R * S * Cp), 0.0f);
    const T* src = static_cast<const T*>(w.data);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < R; ++r)
            for (int64_t s = 0; s < S; ++s)
                taps[(r * S + s) * Cp + c] = simd::to_float(src[c * w.strides[0] + r * w.strides[2] + s * w.strides[3]]);
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

// fn(std::integral_constant<int, NV>{}, c0, last) for each run of channels:
// NV vectors from channel c0, the last one `last` lanes wide. The runs share
// the vectors evenly (144 channels: 3 runs of 3 vectors, not 4 + 4 + 1, whose
// one-vector run paid a whole walk over the taps for 16 channels).
template <class Fn>
void for_each_run(int64_t C, Fn&& fn) {
    static_assert(kRunVectors == 4);
    const int64_t vectors = (C + kLanes - 1) / kLanes;
    const int64_t runs = (vectors + kRunVectors - 1) / kRunVectors;
    const int64_t run_channels = (vectors + runs - 1) / runs * kLanes;
    for (int64_t c0 = 0; c0 < C; c0 += run_channels) {
        const int64_t left = std::min(run_channels, C - c0);
        const int nv = static_cast<int>((left + kLanes - 1) / kLanes);
        const int last = static_cast<int>(left - (nv - 1) * kLanes);
        switch (nv) {
            case 1: fn(std::integral_constant<int, 1>{}, c0, last); break;
            case 2: fn(std::integral_constant<int, 2>{}, c0, last); break;
            case 3: fn(std::integral_constant<int, 3>{}, c0, last); break;
            default: fn(std::integral_constant<int, 4>{}, c0, last); break;
        }
    }
}

template <int NV>
inline int lanes_of(int v, int last) { return v == NV - 1 ? last : kLanes; }

// acc[v] += pixel[v] * tap[v] over a run of NV vectors of channels (the
// pixel's last vector `last` lanes wide; the taps are padded to whole ones).
template <int NV>
inline void add_tap(VecF32 (&acc)[NV], const float* pixel, const float* tap, int last) {
    for (int v = 0; v < NV; ++v)
        acc[v] = simd::fmadd(simd::load_lanes(pixel + v * kLanes, lanes_of<NV>(v, last)), VecF32::load(tap + v * kLanes),
                             acc[v]);
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

template <class T>
void input_gradient(const ConvBackwardParams& p, const Sizes& z, const PixelMajor<T>& dy, const float* taps,
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
    // With a column stride of 1, the input columns reached by every filter
    // column are consecutive, [inner_lo, inner_hi), and a block of them takes
    // the same taps at consecutive output columns.
    int64_t inner_lo = z.W, inner_hi = 0;
    if (sw == 1)
        for (int64_t iw = 0; iw < z.W; ++iw)
            if (col_begin[iw + 1] - col_begin[iw] == z.S) inner_lo = std::min(inner_lo, iw), inner_hi = iw + 1;
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
                    if (iw >= inner_lo && iw + kPixelBlock <= inner_hi) {
                        // kPixelBlock pixels at once, as in the forward pass.
                        VecF32 acc[kPixelBlock][NV];
                        for (int q = 0; q < kPixelBlock; ++q)
                            for (int v = 0; v < NV; ++v) acc[q][v] = VecF32::zero();
                        const int64_t e0 = col_begin[iw];
                        for (size_t i = 0; i < nrows; ++i)
                            for (int64_t e = e0; e < e0 + z.S; ++e) {
                                const float* d = row_dy[i] + col_ow[e] * dy_ws + c0;
                                const float* t = row_taps[i] + col_s[e] * Cp + c0;
                                for (int v = 0; v < NV; ++v) {
                                    const VecF32 wv = VecF32::load(t + v * kLanes);
                                    for (int q = 0; q < kPixelBlock; ++q)
                                        acc[q][v] = simd::fmadd(
                                            simd::load_lanes(d + q * dy_ws + v * kLanes, lanes_of<NV>(v, last)), wv,
                                            acc[q][v]);
                                }
                            }
                        for (int q = 0; q < kPixelBlock; ++q) {
                            float* out = direct ? reinterpret_cast<float*>(gx_row + (iw + q) * gx_ws)
                                                : buf.data() + (iw + q) * Cp;
                            store_run(acc[q], out + c0, last);
                        }
                        iw += kPixelBlock - 1;
                        continue;
                    }
                    VecF32 acc[NV];
                    for (int v = 0; v < NV; ++v) acc[v] = VecF32::zero();
                    const int64_t e0 = col_begin[iw], e1 = col_begin[iw + 1];
                    for (size_t i = 0; i < nrows; ++i)
                        for (int64_t e = e0; e < e1; ++e) {
                            const float* d = row_dy[i] + col_ow[e] * dy_ws + c0;
                            const float* t = row_taps[i] + col_s[e] * Cp + c0;
                            add_tap(acc, d, t, last);
                        }
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

// Planar layers (NCHW, unit column stride in and out) with a column stride
// of 1 run plane by plane with the vectors along the rows: a converted copy
// to channels-last pixels and back cost two extra passes over the data (the
// N8 C144 56x56 forward ran at 0.64x torch that way). Each (image, channel)
// plane is copied into a zero-padded float plane (L1-sized for the usual
// layers), whose rows the taps then read at shifted, unaligned offsets: no
// border cases in the loop.
bool planar_applies(const TensorView& in, const TensorView& out, int64_t col_stride) {
    return col_stride == 1 && in.strides[3] == 1 && out.strides[3] == 1 && in.strides[1] != 1 && out.strides[1] != 1;
}

// out (rows x cols of `plane`, row stride out_rs) = bias + the correlation of
// the plane (H x W at src, row stride src_rs) with the R x S filter `w`
// (row-major floats), column stride 1, row stride sh, taps dilated by (dh,
// dw), the plane shifted by (top, left) (the padding; negative crops).
// `pad` is a float buffer of at least padded_plane_floats.
inline int64_t padded_cols(int64_t cols, int64_t S, int64_t dw) {
    return round_up(cols, kLanes) + (S - 1) * dw + kLanes;
}
inline int64_t padded_rows(int64_t rows, int64_t R, int64_t sh, int64_t dh) { return (rows - 1) * sh + (R - 1) * dh + 1; }

template <bool kLastTapFirst, class T>
void correlate_plane(const T* src, int64_t src_rs, int64_t H, int64_t W, const float* w, int64_t R, int64_t S,
                     int64_t sh, int64_t dh, int64_t dw, int64_t top, int64_t left, float bias, T* out,
                     int64_t out_rs, int64_t rows, int64_t cols, float* pad) {
    const int64_t Hp = padded_rows(rows, R, sh, dh), Wp = padded_cols(cols, S, dw);
    for (int64_t i = 0; i < Hp; ++i) {
        float* row = pad + i * Wp;
        const int64_t ih = i - top;
        if (ih < 0 || ih >= H) {
            std::fill_n(row, Wp, 0.0f);
            continue;
        }
        const int64_t j0 = std::clamp<int64_t>(left, 0, Wp), j1 = std::clamp<int64_t>(left + W, 0, Wp);
        std::fill_n(row, j0, 0.0f);
        const T* from = src + ih * src_rs;
        for (int64_t j = j0; j < j1; ++j) row[j] = simd::to_float(from[j - left]);
        std::fill(row + j1, row + Wp, 0.0f);
    }
    const VecF32 b = VecF32::broadcast(bias);
    for (int64_t oh = 0; oh < rows; ++oh) {
        const float* top_row = pad + oh * sh * Wp;
        T* y = out + oh * out_rs;
        for (int64_t ow = 0; ow < cols; ow += kLanes) {
            VecF32 acc = b;
            if constexpr (kLastTapFirst) {
                for (int64_t r = R - 1; r >= 0; --r)
                    for (int64_t s = S - 1; s >= 0; --s)
                        acc = simd::fmadd(VecF32::load(top_row + ow + r * dh * Wp + s * dw),
                                          VecF32::broadcast(w[r * S + s]), acc);
            } else {
                const float* x_row = top_row + ow;
                for (int64_t r = 0; r < R; ++r, x_row += dh * Wp)
                    for (int64_t s = 0; s < S; ++s)
                        acc = simd::fmadd(VecF32::load(x_row + s * dw), VecF32::broadcast(w[r * S + s]), acc);
            }
            simd::store_lanes(acc, y + ow, static_cast<int>(std::min<int64_t>(kLanes, cols - ow)));
        }
    }
}

template <class T>
void forward_planar(const ConvParams& p, const Sizes& z, const float* bias) {
    const TensorView &x = p.x, &y = p.out;
    const int64_t sh = p.geo.stride[0], dh = p.geo.dilation[0], dw = p.geo.dilation[1];
    std::vector<float> filters(static_cast<size_t>(z.C * z.R * z.S));
    const T* wd = static_cast<const T*>(p.weight.data);
    const TensorView& wv = p.weight;
    for (int64_t c = 0; c < z.C; ++c)
        for (int64_t r = 0; r < z.R; ++r)
            for (int64_t s = 0; s < z.S; ++s)
                filters[(c * z.R + r) * z.S + s] =
                    simd::to_float(wd[c * wv.strides[0] + r * wv.strides[2] + s * wv.strides[3]]);
    const int64_t pad_floats = padded_rows(z.OH, z.R, sh, dh) * padded_cols(z.OW, z.S, dw);
    parallel_for(z.N * z.C, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> pad(static_cast<size_t>(pad_floats));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / z.C, c = u % z.C;
            correlate_plane<false>(static_cast<const T*>(x.data) + n * x.strides[0] + c * x.strides[1], x.strides[2], z.H, z.W,
                            filters.data() + c * z.R * z.S, z.R, z.S, sh, dh, dw, p.geo.pad[0], p.geo.pad[1],
                            bias ? bias[c] : 0.0f, static_cast<T*>(y.data) + n * y.strides[0] + c * y.strides[1],
                            y.strides[2], z.OH, z.OW, pad.data());
        }
    });
}

// Planar input gradient, stride 1: the correlation of each dY plane with the
// filter turned half a turn, shifted by dh - ph rows and (S-1) dw - pw
// columns: dx[ih][iw] = sum_{r,s} dy[ih + ph - r dh][iw + pw - s dw] w[r][s],
// its taps walked from the turned filter's last, i.e. in the channels-last
// path's order (r, s ascending; the taps outside add exact zeros), so both
// layouts give the same bits (torch.compile may hand backward either).
template <class T>
void input_gradient_planar(const ConvBackwardParams& p, const Sizes& z) {
    const TensorView &gy = p.grad_out, &gx = p.grad_x, &wv = p.weight;
    const int64_t dh = p.geo.dilation[0], dw = p.geo.dilation[1];
    std::vector<float> turned(static_cast<size_t>(z.C * z.R * z.S));
    const T* wd = static_cast<const T*>(wv.data);
    for (int64_t c = 0; c < z.C; ++c)
        for (int64_t r = 0; r < z.R; ++r)
            for (int64_t s = 0; s < z.S; ++s)
                turned[(c * z.R + (z.R - 1 - r)) * z.S + (z.S - 1 - s)] =
                    simd::to_float(wd[c * wv.strides[0] + r * wv.strides[2] + s * wv.strides[3]]);
    const int64_t top = (z.R - 1) * dh - p.geo.pad[0], left = (z.S - 1) * dw - p.geo.pad[1];
    const int64_t pad_floats = padded_rows(z.H, z.R, 1, dh) * padded_cols(z.W, z.S, dw);
    parallel_for(z.N * z.C, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> pad(static_cast<size_t>(pad_floats));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / z.C, c = u % z.C;
            correlate_plane<true>(static_cast<const T*>(gy.data) + n * gy.strides[0] + c * gy.strides[1], gy.strides[2],
                            z.OH, z.OW, turned.data() + c * z.R * z.S, z.R, z.S, 1, dh, dw, top, left, 0.0f,
                            static_cast<T*>(gx.data) + n * gx.strides[0] + c * gx.strides[1], gx.strides[2], z.H, z.W,
                            pad.data());
        }
    });
}

}  // namespace

template <class T>
void depthwise_forward(const ConvParams& p, const float* bias) {
    const Sizes z(p.x, p.weight, p.out, p.geo.groups);
    if (planar_applies(p.x, p.out, p.geo.stride[1])) return forward_planar<T>(p, z, bias);
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    const int64_t Cp = round_up(z.C, kLanes);
    const std::vector<float> taps = pack_taps<T>(p.weight, z.C, z.R, z.S, Cp);
    std::vector<TapRange> cols(static_cast<size_t>(z.OW));
    // [inner_lo, inner_hi): the output columns all of whose filter columns
    // are inside the image (consecutive; empty when none is).
    int64_t inner_lo = z.OW, inner_hi = 0;
    for (int64_t ow = 0; ow < z.OW; ++ow) {
        cols[ow] = valid_taps(ow, sw, pw, dw, z.S, z.W);
        if (cols[ow].lo == 0 && cols[ow].hi == z.S) inner_lo = std::min(inner_lo, ow), inner_hi = ow + 1;
    }
    const PixelMajor<T> x(p.x);
    const TensorView& y = p.out;
    const bool direct = writes_in_place<T>(y);
    // Locals for the loops (members read through a reference were reloaded
    // per tap), and per-tap steps instead of index products.
    const int64_t xhs = x.hs, xws = x.ws, col_step = dw * x.ws, row_step = dh * x.hs, S = z.S;
    const float* tap_data = taps.data();
    parallel_for(z.N * z.OH, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> buf(direct ? 0 : static_cast<size_t>(z.OW * Cp));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / z.OH, oh = u % z.OH;
            const TapRange rs = valid_taps(oh, sh, ph, dh, z.R, z.H);
            const float* first_row = x.data + n * x.ns + (oh * sh - ph + rs.lo * dh) * xhs;
            T* y_row = static_cast<T*>(y.data) + n * y.strides[0] + oh * y.strides[2];
            const int64_t y_ws = y.strides[3];
            // Runs outside, pixels inside: the run's shape is dispatched once
            // per row, not per pixel.
            for_each_run(z.C, [&](auto nv, int64_t c0, int last) {
                constexpr int NV = decltype(nv)::value;
                VecF32 b[NV];
                for (int v = 0; v < NV; ++v)
                    b[v] = bias ? simd::load_lanes(bias + c0 + v * kLanes, lanes_of<NV>(v, last)) : VecF32::zero();
                for (int64_t ow = 0; ow < z.OW; ++ow) {
                    if (ow >= inner_lo && ow + kPixelBlock <= inner_hi) {
                        // kPixelBlock pixels at once, same sums in the same order.
                        VecF32 acc[kPixelBlock][NV];
                        for (int q = 0; q < kPixelBlock; ++q)
                            for (int v = 0; v < NV; ++v) acc[q][v] = b[v];
                        const float* x_row = first_row + (ow * sw - pw) * xws + c0;
                        const float* tap_row = tap_data + rs.lo * S * Cp + c0;
                        for (int64_t r = rs.lo; r < rs.hi; ++r, x_row += row_step, tap_row += S * Cp) {
                            const float* px = x_row;
                            const float* t = tap_row;
                            for (int64_t s = 0; s < S; ++s, px += col_step, t += Cp)
                                for (int v = 0; v < NV; ++v) {
                                    const VecF32 wv = VecF32::load(t + v * kLanes);
                                    for (int q = 0; q < kPixelBlock; ++q)
                                        acc[q][v] = simd::fmadd(
                                            simd::load_lanes(px + q * sw * xws + v * kLanes, lanes_of<NV>(v, last)), wv,
                                            acc[q][v]);
                                }
                        }
                        for (int q = 0; q < kPixelBlock; ++q) {
                            float* out = direct ? reinterpret_cast<float*>(y_row + (ow + q) * y_ws)
                                                : buf.data() + (ow + q) * Cp;
                            store_run(acc[q], out + c0, last);
                        }
                        ow += kPixelBlock - 1;
                        continue;
                    }
                    const TapRange cs = cols[ow];
                    VecF32 acc[NV];
                    for (int v = 0; v < NV; ++v) acc[v] = b[v];
                    const float* x_row = first_row + (ow * sw - pw + cs.lo * dw) * xws + c0;
                    const float* tap_row = tap_data + (rs.lo * S + cs.lo) * Cp + c0;
                    for (int64_t r = rs.lo; r < rs.hi; ++r, x_row += row_step, tap_row += S * Cp) {
                        const float* px = x_row;
                        const float* t = tap_row;
                        for (int64_t s = cs.lo; s < cs.hi; ++s, px += col_step, t += Cp)
                            add_tap(acc, px, t, last);
                    }
                    float* out = direct ? reinterpret_cast<float*>(y_row + ow * y_ws) : buf.data() + ow * Cp;
                    store_run(acc, out + c0, last);
                }
            });
            if (!direct) write_pixel_row(buf.data(), Cp, z.C, z.OW, y_row, y.strides[1], y.strides[3]);
        }
    });
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
        const std::vector<float> taps = pack_taps<T>(p.weight, z.C, z.R, z.S, Cp);
        input_gradient<T>(p, z, dy, taps.data(), Cp);
    }
    if (need_dw) weight_gradient<T>(p, z, dy, Cp);
}

template void depthwise_forward<float>(const ConvParams&, const float*);
template void depthwise_forward<bf16>(const ConvParams&, const float*);
template void depthwise_backward<float>(const ConvBackwardParams&);
template void depthwise_backward<bf16>(const ConvBackwardParams&);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
