// Depthwise convolution of planar layers, compiled once per ISA: the
// forward pass and the stride-1 input gradient (conv_depthwise.h).
#include "conv_depthwise.h"

#include <vector>

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

using simd::VecF32;
constexpr int kLanes = VecF32::width;

// A padded plane: rows x cols outputs of an R x S filter, whole vectors.
inline int64_t padded_cols(int64_t cols, int64_t S, int64_t dw) {
    return round_up(cols, kLanes) + (S - 1) * dw + kLanes;
}
inline int64_t padded_rows(int64_t rows, int64_t R, int64_t sh, int64_t dh) { return (rows - 1) * sh + (R - 1) * dh + 1; }


// out (rows x cols of `plane`, row stride out_rs) = bias + the correlation of
// the plane (H x W at src, row stride src_rs) with the R x S filter `w`
// (row-major floats), column stride 1, row stride sh, taps dilated by (dh,
// dw), the plane shifted by (top, left) (the padding; negative crops).
// `pad` is a float buffer of at least padded_plane_floats.
template <class T>
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
            const float* x_row = top_row + ow;
            for (int64_t r = 0; r < R; ++r, x_row += dh * Wp)
                for (int64_t s = 0; s < S; ++s)
                    acc = simd::fmadd(VecF32::load(x_row + s * dw), VecF32::broadcast(w[r * S + s]), acc);
            simd::store_lanes(acc, y + ow, static_cast<int>(std::min<int64_t>(kLanes, cols - ow)));
        }
    }
}

}  // namespace

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
            correlate_plane(static_cast<const T*>(x.data) + n * x.strides[0] + c * x.strides[1], x.strides[2], z.H, z.W,
                            filters.data() + c * z.R * z.S, z.R, z.S, sh, dh, dw, p.geo.pad[0], p.geo.pad[1],
                            bias ? bias[c] : 0.0f, static_cast<T*>(y.data) + n * y.strides[0] + c * y.strides[1],
                            y.strides[2], z.OH, z.OW, pad.data());
        }
    });
}

// Planar input gradient, stride 1: the correlation of each dY plane with the
// filter turned half a turn, shifted by dh - ph rows and (S-1) dw - pw
// columns: dx[ih][iw] = sum_{r,s} dy[ih + ph - r dh][iw + pw - s dw] w[r][s],
// the turned filter's taps in ascending order as the channels-last path
// walks them (the taps outside add exact zeros there), so both layouts give
// the same bits (torch.compile may hand backward either).
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
            correlate_plane(static_cast<const T*>(gy.data) + n * gy.strides[0] + c * gy.strides[1], gy.strides[2],
                            z.OH, z.OW, turned.data() + c * z.R * z.S, z.R, z.S, 1, dh, dw, top, left, 0.0f,
                            static_cast<T*>(gx.data) + n * gx.strides[0] + c * gx.strides[1], gx.strides[2], z.H, z.W,
                            pad.data());
        }
    });
}

template void forward_planar<float>(const ConvParams&, const Sizes&, const float*);
template void forward_planar<bf16>(const ConvParams&, const Sizes&, const float*);
template void input_gradient_planar<float>(const ConvBackwardParams&, const Sizes&);
template void input_gradient_planar<bf16>(const ConvBackwardParams&, const Sizes&);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
