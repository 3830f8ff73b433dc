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
constexpr int64_t kRunChannels = kRunVectors * kLanes;
// Blocks of output rows whose weight-gradient sums are kept apart (float64,
// R S Cp each) and added in order at the end.
constexpr int64_t kMaxGradBlocks = 64, kMinGradBlockRows = 4;

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
// NV vectors from channel c0, the last one `last` lanes wide.
template <class Fn>
void for_each_run(int64_t C, Fn&& fn) {
    static_assert(kRunVectors == 4);
    for (int64_t c0 = 0; c0 < C; c0 += kRunChannels) {
        const int64_t left = std::min(kRunChannels, C - c0);
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
    const TensorView& gx = p.grad_x;
    const bool direct = writes_in_place<T>(gx);
    parallel_for(z.N * z.H, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> buf(direct ? 0 : static_cast<size_t>(z.W * Cp));
        std::vector<int64_t> row_r, row_oh;
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / z.H, ih = u % z.H;
            row_r.clear();
            row_oh.clear();
            for (int64_t r = 0; r < z.R; ++r) {
                const int64_t num = ih + ph - r * dh;
                if (num < 0 || num % sh != 0 || num / sh >= z.OH) continue;
                row_r.push_back(r);
                row_oh.push_back(num / sh);
            }
            const float* img = dy.data + n * dy.ns;
            T* gx_row = static_cast<T*>(gx.data) + n * gx.strides[0] + ih * gx.strides[2];
            for (int64_t iw = 0; iw < z.W; ++iw) {
                float* out = direct ? reinterpret_cast<float*>(gx_row + iw * gx.strides[3]) : buf.data() + iw * Cp;
                for_each_run(z.C, [&](auto nv, int64_t c0, int last) {
                    constexpr int NV = decltype(nv)::value;
                    VecF32 acc[NV];
                    for (int v = 0; v < NV; ++v) acc[v] = VecF32::zero();
                    for (size_t i = 0; i < row_r.size(); ++i) {
                        const float* dy_row = img + row_oh[i] * dy.hs + c0;
                        const float* tap_row = taps + row_r[i] * z.S * Cp + c0;
                        for (int64_t e = col_begin[iw]; e < col_begin[iw + 1]; ++e) {
                            const float* d = dy_row + col_ow[e] * dy.ws;
                            const float* t = tap_row + col_s[e] * Cp;
                            for (int v = 0; v < NV; ++v)
                                acc[v] = simd::fmadd(simd::load_lanes(d + v * kLanes, lanes_of<NV>(v, last)),
                                                     VecF32::load(t + v * kLanes), acc[v]);
                        }
                    }
                    for (int v = 0; v < NV; ++v) simd::store_lanes(acc[v], out + c0 + v * kLanes, lanes_of<NV>(v, last));
                });
            }
            if (!direct) write_pixel_row(buf.data(), Cp, z.C, z.W, gx_row, gx.strides[1], gx.strides[3]);
        }
    });
}

template <class T>
void weight_gradient(const ConvBackwardParams& p, const Sizes& z, const PixelMajor<T>& dy, int64_t Cp) {
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    const PixelMajor<T> x(p.x);
    const int64_t rows = z.N * z.OH, taps = z.R * z.S;
    const int64_t blocks = std::clamp<int64_t>(rows / kMinGradBlockRows, 1, kMaxGradBlocks);
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
                    for (int64_t s = 0; s < z.S; ++s) {
                        const Run run = valid_outputs(z.OW, z.W, sw, pw, s * dw);
                        if (run.lo == run.hi) continue;
                        double* tap_sums = block + (r * z.S + s) * Cp;
                        for_each_run(z.C, [&](auto nv, int64_t c0, int last) {
                            constexpr int NV = decltype(nv)::value;
                            VecF32 acc[NV];
                            for (int v = 0; v < NV; ++v) acc[v] = VecF32::zero();
                            const float* d = dy_row + run.lo * dy.ws + c0;
                            const float* xp = x_row + run.first_in * x.ws + c0;
                            for (int64_t ow = run.lo; ow < run.hi; ++ow, d += dy.ws, xp += sw * x.ws)
                                for (int v = 0; v < NV; ++v) {
                                    const int lanes = lanes_of<NV>(v, last);
                                    acc[v] = simd::fmadd(simd::load_lanes(d + v * kLanes, lanes),
                                                         simd::load_lanes(xp + v * kLanes, lanes), acc[v]);
                                }
                            float part[NV * kLanes];
                            for (int v = 0; v < NV; ++v) acc[v].store(part + v * kLanes);
                            for (int i = 0; i < (NV - 1) * kLanes + last; ++i) tap_sums[c0 + i] += part[i];
                        });
                    }
                }
            }
        }
    });
    const TensorView& gw = p.grad_weight;
    T* out = static_cast<T*>(gw.data);
    for (int64_t c = 0; c < z.C; ++c)
        for (int64_t r = 0; r < z.R; ++r)
            for (int64_t s = 0; s < z.S; ++s) {
                double total = 0.0;
                for (int64_t b = 0; b < blocks; ++b) total += sums[(b * taps + r * z.S + s) * Cp + c];
                out[c * gw.strides[0] + r * gw.strides[2] + s * gw.strides[3]] =
                    simd::from_float<T>(static_cast<float>(total));
            }
}

}  // namespace

template <class T>
void depthwise_forward(const ConvParams& p, const float* bias) {
    const Sizes z(p.x, p.weight, p.out, p.geo.groups);
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    const int64_t Cp = round_up(z.C, kLanes);
    const std::vector<float> taps = pack_taps<T>(p.weight, z.C, z.R, z.S, Cp);
    std::vector<TapRange> cols(static_cast<size_t>(z.OW));
    for (int64_t ow = 0; ow < z.OW; ++ow) cols[ow] = valid_taps(ow, sw, pw, dw, z.S, z.W);
    const PixelMajor<T> x(p.x);
    const TensorView& y = p.out;
    const bool direct = writes_in_place<T>(y);
    parallel_for(z.N * z.OH, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> buf(direct ? 0 : static_cast<size_t>(z.OW * Cp));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / z.OH, oh = u % z.OH;
            const TapRange rs = valid_taps(oh, sh, ph, dh, z.R, z.H);
            const float* img = x.data + n * x.ns;
            T* y_row = static_cast<T*>(y.data) + n * y.strides[0] + oh * y.strides[2];
            for (int64_t ow = 0; ow < z.OW; ++ow) {
                const TapRange cs = cols[ow];
                float* out = direct ? reinterpret_cast<float*>(y_row + ow * y.strides[3]) : buf.data() + ow * Cp;
                for_each_run(z.C, [&](auto nv, int64_t c0, int last) {
                    constexpr int NV = decltype(nv)::value;
                    VecF32 acc[NV];
                    for (int v = 0; v < NV; ++v)
                        acc[v] = bias ? simd::load_lanes(bias + c0 + v * kLanes, lanes_of<NV>(v, last)) : VecF32::zero();
                    for (int64_t r = rs.lo; r < rs.hi; ++r) {
                        const float* x_row = img + (oh * sh - ph + r * dh) * x.hs + c0;
                        const float* tap_row = taps.data() + r * z.S * Cp + c0;
                        for (int64_t s = cs.lo; s < cs.hi; ++s) {
                            const float* px = x_row + (ow * sw - pw + s * dw) * x.ws;
                            const float* t = tap_row + s * Cp;
                            for (int v = 0; v < NV; ++v)
                                acc[v] = simd::fmadd(simd::load_lanes(px + v * kLanes, lanes_of<NV>(v, last)),
                                                     VecF32::load(t + v * kLanes), acc[v]);
                        }
                    }
                    for (int v = 0; v < NV; ++v) simd::store_lanes(acc[v], out + c0 + v * kLanes, lanes_of<NV>(v, last));
                });
            }
            if (!direct) write_pixel_row(buf.data(), Cp, z.C, z.OW, y_row, y.strides[1], y.strides[3]);
        }
    });
}

template <class T>
void depthwise_backward(const ConvBackwardParams& p) {
    const Sizes z(p.x, p.weight, p.grad_out, p.geo.groups);
    const int64_t Cp = round_up(z.C, kLanes);
    const PixelMajor<T> dy(p.grad_out, WorkspaceSlot::conv_grad);
    if (p.grad_x.data) {
        const std::vector<float> taps = pack_taps<T>(p.weight, z.C, z.R, z.S, Cp);
        input_gradient<T>(p, z, dy, taps.data(), Cp);
    }
    if (p.grad_weight.data) weight_gradient<T>(p, z, dy, Cp);
}

template void depthwise_forward<float>(const ConvParams&, const float*);
template void depthwise_forward<bf16>(const ConvParams&, const float*);
template void depthwise_backward<float>(const ConvBackwardParams&);
template void depthwise_backward<bf16>(const ConvBackwardParams&);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
