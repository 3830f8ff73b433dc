// Convolution forward, compiled once per ISA: direct convolution as implicit
// GEMM, no im2col buffer. Floor: 2 N K OH OW (C / groups) R S FLOPs.
//
// The input is read channels-last (x itself when it is float32 channels-last,
// else one converted copy, O(input)); the weights are packed once per call
// as Wp[g][r][s][c][k], k padded to the vector width. One task = one output
// row (image, group, oh) accumulated in a float buffer [OW][Kgp]: for every
// filter tap (r, s) that row is a product
//   row[ow][k] += sum_c x[ih][ow * stride + s * dil - pad][c] * Wp[r][s][c][k]
// over the output columns whose input column is inside the image (so padding
// costs nothing), with the pixels as broadcast rows and the output channels
// as vectors. The 9 (3x3) weight panels of a group stay in L2 across rows.
// Stride 1 (most layers) instead reads a zero-padded copy of the input in
// which a block of output rows is one linear run of pixels (forward_stride1).
// A 1x1, stride-1, unpadded convolution over dense pixels is a plain GEMM
// (pixels x C times C x K), run in blocks of kPixelBlock pixels. 3x3 stride-1
// layers with 16 or more channels per group take the Winograd path
// (conv_winograd.cpp) instead, and wide layers with few output pixels run
// as GEMMs over gathered patches (conv_im2col.cpp, im2col_applies).
// Depthwise layers (one channel per group) have their own kernels
// (conv_depthwise.cpp).
#include "conv_common.h"
#include "conv_depthwise.h"
#include "conv_im2col.h"
#include "conv_winograd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

constexpr int64_t kPixelBlock = 128;

template <class T>
void write_outputs(const ConvParams& p, const Sizes& z, const float* buf, int64_t n, int64_t g, int64_t p0,
                   int64_t count, const float* bias) {
    T* y = static_cast<T*>(p.out.data);
    const TensorView& v = p.out;
    T* base = y + n * v.strides[0] + g * z.Kg * v.strides[1];
    if (v.strides[1] == 1 || z.Kg == 1) {
        for (int64_t i = 0; i < count; ++i) {
            const int64_t oh = (p0 + i) / z.OW, ow = (p0 + i) % z.OW;
            T* dst = base + oh * v.strides[2] + ow * v.strides[3];
            const float* src = buf + i * z.Kgp;
            for (int64_t k = 0; k < z.Kg; ++k)
                dst[k * v.strides[1]] = simd::from_float<T>(src[k] + (bias ? bias[g * z.Kg + k] : 0.0f));
        }
        return;
    }
    // Planar output (NCHW): each output row's run of pixels transposed.
    for (int64_t i = 0; i < count;) {
        const int64_t oh = (p0 + i) / z.OW, ow = (p0 + i) % z.OW, run = std::min(count - i, z.OW - ow);
        pixels_to_planar(buf + i * z.Kgp, z.Kgp, z.Kg, run, bias ? bias + g * z.Kg : nullptr,
                         base + oh * v.strides[2] + ow * v.strides[3], v.strides[1], v.strides[3]);
        i += run;
    }
}

// Stride 1: over the padded input an output row block is one run of
// rows * Wp pixels, so each tap is a single long product (M = rows * Wp
// instead of OW), which keeps small images (14x14, 7x7) efficient.
template <class T>
void forward_stride1(const ConvParams& p, const Sizes& z, const float* Wp, const float* bias) {
    const PaddedPixels<T> x(p.x, z.OH, z.OW, z.R, z.S, p.geo);
    const int64_t rows = std::clamp<int64_t>(kPixelBlock / x.Wp, 1, z.OH);
    const int64_t blocks = (z.OH + rows - 1) / rows;
    parallel_for(z.N * z.G * blocks, 1, [&](int64_t u0, int64_t u1) {
        const FloatBuffer buf(rows * x.Wp * z.Kgp);
        float* out = buf.get();
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / (z.G * blocks), g = u / blocks % z.G, oh0 = u % blocks * rows;
            const int64_t nrows = std::min(rows, z.OH - oh0);
            for (int64_t r = 0; r < z.R; ++r)
                for (int64_t s = 0; s < z.S; ++s) {
                    const float* a = x.data() + n * x.ns + ((oh0 + r * p.geo.dilation[0]) * x.Wp + s * p.geo.dilation[1]) * x.C;
                    tile::gemm(nrows * x.Wp, z.Kgp, z.Cg, a + g * z.Cg, x.C, 1, Wp + ((g * z.R + r) * z.S + s) * z.Cg * z.Kgp,
                               z.Kgp, out, z.Kgp, r + s > 0, 1.0f, tile::kLongChunk);
                }
            for (int64_t i = 0; i < nrows; ++i)
                write_outputs<T>(p, z, out + i * x.Wp * z.Kgp, n, g, (oh0 + i) * z.OW, z.OW, bias);
        }
    });
}

template <class T>
void forward_typed(const ConvParams& p) {
    const Sizes z(p.x, p.weight, p.out, p.geo.groups);
    if (z.N * z.K * z.OH * z.OW == 0) return;
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;

    FloatBuffer bias_buf(p.bias.data ? z.K : 0);
    const float* bias = nullptr;
    if (p.bias.data) {
        for (int64_t k = 0; k < z.K; ++k)
            bias_buf.get()[k] = simd::to_float(static_cast<const T*>(p.bias.data)[k * p.bias.strides[0]]);
        bias = bias_buf.get();
    }
    if (depthwise_applies(z)) {
        depthwise_forward<T>(p, bias);
        return;
    }
    if (im2col_applies(z, p.geo, p.x.dtype)) {
        im2col_forward<T>(p, bias);
        return;
    }
    if (z.R == 3 && z.S == 3 && sh == 1 && sw == 1 && dh == 1 && dw == 1 && winograd_applies(z.Cg, z.Kg, z.OH, z.OW)) {
        const TensorView& wv = p.weight;
        winograd_forward({p.x,
                          {wv.data, z.Kg * wv.strides[0], wv.strides[0], wv.strides[1], wv.strides[2], wv.strides[3]},
                          bias, p.out, z.G, ph, pw});
        return;
    }

    const FloatBuffer packed(z.G * z.R * z.S * z.Cg * z.Kgp, true);
    float* Wp = packed.get();
    const T* w = static_cast<const T*>(p.weight.data);
    const TensorView& wv = p.weight;
    // Written in order (k innermost); the strided reads of the weights need
    // no read-for-ownership and prefetch well.
    parallel_for(z.G * z.R * z.S, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t g = t / (z.R * z.S), r = t / z.S % z.R, s = t % z.S;
            for (int64_t c = 0; c < z.Cg; ++c) {
                const T* src = w + g * z.Kg * wv.strides[0] + c * wv.strides[1] + r * wv.strides[2] + s * wv.strides[3];
                float* dst = Wp + (t * z.Cg + c) * z.Kgp;
                for (int64_t k = 0; k < z.Kg; ++k) dst[k] = simd::to_float(src[k * wv.strides[0]]);
            }
        }
    });
    // A 1x1 unpadded stride-1 convolution of float32 channels-last pixels
    // (dense across rows) reads x in place as a (pixels x C) matrix.
    const bool pointwise = z.R == 1 && z.S == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 &&
                           PixelMajor<T>::direct(p.x) && p.x.strides[2] == z.W * p.x.strides[3];
    if (pointwise) {
        const PixelMajor<T> x(p.x);
        const int64_t blocks = (z.H * z.W + kPixelBlock - 1) / kPixelBlock;
        parallel_for(z.N * z.G * blocks, 1, [&](int64_t u0, int64_t u1) {
            const FloatBuffer buf(kPixelBlock * z.Kgp);
            for (int64_t u = u0; u < u1; ++u) {
                const int64_t n = u / (z.G * blocks), g = u / blocks % z.G, p0 = u % blocks * kPixelBlock;
                const int64_t count = std::min(kPixelBlock, z.H * z.W - p0);
                tile::gemm(count, z.Kgp, z.Cg, x.data + n * x.ns + p0 * x.ws + g * z.Cg, x.ws, 1,
                           Wp + g * z.Cg * z.Kgp, z.Kgp, buf.get(), z.Kgp, false, 1.0f, tile::kLongChunk);
                write_outputs<T>(p, z, buf.get(), n, g, p0, count, bias);
            }
        });
        return;
    }
    if (sh == 1 && sw == 1) {
        forward_stride1<T>(p, z, Wp, bias);
        return;
    }
    const PixelMajor<T> x(p.x);
    parallel_for(z.N * z.G * z.OH, 1, [&](int64_t u0, int64_t u1) {
        const FloatBuffer buf(z.OW * z.Kgp);
        float* row = buf.get();
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / (z.G * z.OH), g = u / z.OH % z.G, oh = u % z.OH;
            std::fill_n(row, z.OW * z.Kgp, 0.0f);
            for (int64_t r = 0; r < z.R; ++r) {
                const int64_t ih = oh * sh - ph + r * dh;
                if (ih < 0 || ih >= z.H) continue;
                for (int64_t s = 0; s < z.S; ++s) {
                    const Run run = valid_outputs(z.OW, z.W, sw, pw, s * dw);
                    if (run.hi == run.lo) continue;
                    tile::gemm(run.hi - run.lo, z.Kgp, z.Cg, x.data + n * x.ns + ih * x.hs + run.first_in * x.ws + g * z.Cg,
                               sw * x.ws, 1, Wp + ((g * z.R + r) * z.S + s) * z.Cg * z.Kgp, z.Kgp,
                               row + run.lo * z.Kgp, z.Kgp, true, 1.0f, tile::kLongChunk);
                }
            }
            write_outputs<T>(p, z, row, n, g, oh * z.OW, z.OW, bias);
        }
    });
}

}  // namespace

void conv_forward_kernel(const ConvParams& p) {
    if (p.x.dtype == DType::bf16) forward_typed<bf16>(p);
    else forward_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv

namespace fastnn::FASTNN_ISA_NAMESPACE {

const ConvKernels conv_kernels = {conv::conv_forward_kernel, conv::conv_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
