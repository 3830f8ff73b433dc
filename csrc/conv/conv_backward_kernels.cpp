// Convolution backward, compiled once per ISA. Floor: 2 N K OH OW (C/groups)
// R S FLOPs for each of dX and dW; db is a reduction of dY.
// Depthwise layers take dX and dW from conv_depthwise.cpp, layers where
// im2col_applies from the GEMMs over gathered patches (conv_im2col.cpp); the
// rest as below.
//
// dY is converted once into a float frame [n][row][col][g][Kgp] (zero padded
// per group and around the image), the operand both products read.
//
// Stride 1 (most layers). 3x3 filters with 16 or more channels per group
// take dX and dW from the Winograd kernels (conv_winograd.cpp). Otherwise dX
// is the correlation of the dY frame, padded by dil rows and (S-1) dil
// columns on each side, with the taps reversed:
//   dx_pad[ih][iw][c] = sum_{r,s,k} frame[ih + (R-1-r) dil][iw + (S-1-s) dil][k] Wt[r][s][k][c]
// and over frame-wide rows each tap is one long product (as the forward
// pass). dW reads the input as a zero-padded copy of the same row width:
//   dW[r][s][c][k] = sum_m xpad[m + r dil Wq + s dil][c] frame[m + (R-1) dil Wq + (S-1) dil][k]
// where the frame's zero border cancels the columns outside the image.
// Other strides. dX is gathered per input row (image, group, ih): the filter
// rows r with (ih + pad - r dil) divisible by the stride name the output row
// that reads ih, and each tap is one product whose C rows step by `stride`
// pixels. dW sums per output row, one tap at a time.
// dW is split over ranges of the reduction (pixels), one per thread, each
// summing into its own float copy of dW, added in a fixed order at the end:
// deterministic for a given thread count.
#include "conv_common.h"
#include "conv_depthwise.h"
#include "conv_im2col.h"
#include "conv_winograd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

constexpr int64_t kPixelBlock = 128;

// dY at frame position (oh + top, ow + left) of an Hf x Wf frame per image,
// zeros elsewhere, plus one frame row of zero slack at the end.
template <class T>
void pack_grad_out(const ConvBackwardParams& p, const Sizes& z, int64_t top, int64_t left, int64_t Hf, int64_t Wf,
                   float* frame) {
    const int64_t pix = z.G * z.Kgp;
    const T* gy = static_cast<const T*>(p.grad_out.data);
    const TensorView& gv = p.grad_out;
    std::fill_n(frame + z.N * Hf * Wf * pix, Wf * pix, 0.0f);
    parallel_for(z.N * Hf, 1, [&](int64_t r0, int64_t r1) {
        for (int64_t row = r0; row < r1; ++row) {
            const int64_t n = row / Hf, oh = row % Hf - top;
            float* d = frame + row * Wf * pix;
            std::fill_n(d, Wf * pix, 0.0f);
            if (oh < 0 || oh >= z.OH) continue;
            d += left * pix;
            const T* s = gy + n * gv.strides[0] + oh * gv.strides[2];
            if (z.G == 1) {
                planar_to_pixels(s, gv.strides[1], gv.strides[3], z.K, z.OW, d, pix);
                continue;
            }
            for (int64_t k0 = 0; k0 < z.K; k0 += kTransposeBlock)
                for (int64_t ow = 0; ow < z.OW; ++ow)
                    for (int64_t k = k0; k < std::min(z.K, k0 + kTransposeBlock); ++k)
                        d[ow * pix + k / z.Kg * z.Kgp + k % z.Kg] =
                            simd::to_float(s[k * gv.strides[1] + ow * gv.strides[3]]);
        }
    });
}

template <class T>
void grad_bias(const ConvBackwardParams& p, const Sizes& z) {
    const T* gy = static_cast<const T*>(p.grad_out.data);
    const TensorView& gv = p.grad_out;
    T* db = static_cast<T*>(p.grad_bias.data);
    parallel_for(z.K, 1, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
            double sum = 0.0;
            for (int64_t n = 0; n < z.N; ++n)
                for (int64_t oh = 0; oh < z.OH; ++oh) {
                    const T* row = gy + n * gv.strides[0] + k * gv.strides[1] + oh * gv.strides[2];
                    for (int64_t ow = 0; ow < z.OW; ++ow) sum += simd::to_float(row[ow * gv.strides[3]]);
                }
            db[k * p.grad_bias.strides[0]] = simd::from_float<T>(static_cast<float>(sum));
        }
    });
}

// Wt[g][r][s][k][c], c padded to Cgp with zeros (caller zeroes).
template <class T>
void pack_transposed_weights(const ConvBackwardParams& p, const Sizes& z, float* Wt) {
    const T* w = static_cast<const T*>(p.weight.data);
    const TensorView& wv = p.weight;
    parallel_for(z.G * z.R * z.S, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t g = t / (z.R * z.S), r = t / z.S % z.R, s = t % z.S;
            for (int64_t k = 0; k < z.Kg; ++k) {
                const T* src = w + (g * z.Kg + k) * wv.strides[0] + r * wv.strides[2] + s * wv.strides[3];
                float* dst = Wt + (t * z.Kg + k) * z.Cgp;
                for (int64_t c = 0; c < z.Cg; ++c) dst[c] = simd::to_float(src[c * wv.strides[1]]);
            }
        }
    });
}

// Input-gradient row ih (channels of group g) from a [W][Cgp] buffer whose
// pixel iw sits at row[(iw + shift) * Cgp].
template <class T>
void write_grad_x_row(const ConvBackwardParams& p, const Sizes& z, int64_t n, int64_t g, int64_t ih,
                      const float* row, int64_t shift, int64_t valid_w) {
    T* dst = static_cast<T*>(p.grad_x.data);
    const TensorView& xv = p.grad_x;
    dst += n * xv.strides[0] + g * z.Cg * xv.strides[1] + ih * xv.strides[2];
    auto value = [&](int64_t iw, int64_t c) {
        return simd::from_float<T>(iw < valid_w && row ? row[(iw + shift) * z.Cgp + c] : 0.0f);
    };
    if (xv.strides[1] == 1) {
        for (int64_t iw = 0; iw < z.W; ++iw)
            for (int64_t c = 0; c < z.Cg; ++c) dst[c + iw * xv.strides[3]] = value(iw, c);
    } else {
        const int64_t valid = row ? std::clamp<int64_t>(valid_w, 0, z.W) : 0;
        if (valid > 0)
            pixels_to_planar(row + shift * z.Cgp, z.Cgp, z.Cg, valid, nullptr, dst, xv.strides[1], xv.strides[3]);
        for (int64_t c = 0; c < z.Cg; ++c)
            for (int64_t iw = valid; iw < z.W; ++iw)
                dst[c * xv.strides[1] + iw * xv.strides[3]] = simd::from_float<T>(0.0f);
    }
}

// Adds the per-split copies of dW in split order and writes grad_weight.
template <class T>
void write_grad_weight(const ConvBackwardParams& p, const Sizes& z, const float* partial, int64_t splits) {
    const int64_t dw_size = z.G * z.R * z.S * z.Cg * z.Kgp;
    T* gw = static_cast<T*>(p.grad_weight.data);
    const TensorView& gwv = p.grad_weight;
    parallel_for(z.K, 1, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k)
            for (int64_t c = 0; c < z.Cg; ++c)
                for (int64_t r = 0; r < z.R; ++r)
                    for (int64_t s = 0; s < z.S; ++s) {
                        const int64_t at = (((k / z.Kg * z.R + r) * z.S + s) * z.Cg + c) * z.Kgp + k % z.Kg;
                        float sum = 0.0f;
                        for (int64_t split = 0; split < splits; ++split) sum += partial[split * dw_size + at];
                        gw[k * gwv.strides[0] + c * gwv.strides[1] + r * gwv.strides[2] + s * gwv.strides[3]] =
                            simd::from_float<T>(sum);
                    }
    });
}

// Runs body(acc, unit) for units [0, units) split into contiguous ranges, one
// per thread, each with its own zeroed dW copy; then writes grad_weight.
template <class T, class Body>
void reduce_grad_weight(const ConvBackwardParams& p, const Sizes& z, int64_t units, Body&& body) {
    const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(num_threads(), units));
    const int64_t dw_size = z.G * z.R * z.S * z.Cg * z.Kgp;
    float* partial = conv_workspace(WorkspaceSlot::conv_tiles, splits * dw_size);
    parallel_for(splits, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t split = s0; split < s1; ++split) {
            float* acc = partial + split * dw_size;
            std::fill_n(acc, dw_size, 0.0f);
            for (int64_t u = units * split / splits; u < units * (split + 1) / splits; ++u) body(acc, u);
        }
    });
    write_grad_weight<T>(p, z, partial, splits);
}

template <class T>
void backward_stride1(const ConvBackwardParams& p, const Sizes& z) {
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    const bool winograd = z.R == 3 && z.S == 3 && dh == 1 && dw == 1;
    const bool winograd_dx = p.grad_x.data && winograd && ph <= 2 && pw <= 2 && winograd_applies(z.Kg, z.Cg, z.H, z.W);
    const bool winograd_dw = p.grad_weight.data && winograd && winograd_applies(z.Cg, z.Kg, z.OH, z.OW);
    if (winograd_dx) {
        // dX is the forward convolution of dY with the filter reversed and
        // its channel dimensions swapped, padded by 2 - pad.
        const TensorView& wv = p.weight;
        const T* w = static_cast<const T*>(wv.data) + 2 * wv.strides[2] + 2 * wv.strides[3];
        winograd_forward({p.grad_out,
                          {w, z.Kg * wv.strides[0], wv.strides[1], wv.strides[0], -wv.strides[2], -wv.strides[3]},
                          nullptr, p.grad_x, z.G, 2 - ph, 2 - pw});
    }
    if (winograd_dw) winograd_grad_weight({p.x, p.grad_out, p.grad_weight, z.G, ph, pw});
    const bool direct_dx = p.grad_x.data && !winograd_dx, direct_dw = p.grad_weight.data && !winograd_dw;
    if (!direct_dx && !direct_dw) return;

    const int64_t pix = z.G * z.Kgp;
    const int64_t top = (z.R - 1) * dh, left = (z.S - 1) * dw;
    const int64_t Hq = z.OH + 2 * top, Wq = z.OW + 2 * left;
    float* frame = conv_workspace(WorkspaceSlot::conv_grad, z.N * Hq * Wq * pix + Wq * pix);
    pack_grad_out<T>(p, z, top, left, Hq, Wq, frame);

    if (direct_dx) {
        const FloatBuffer packed(z.G * z.R * z.S * z.Kg * z.Cgp, true);
        pack_transposed_weights<T>(p, z, packed.get());
        // Padded-input rows 0 .. Hp-1 exist; input row ih is padded row ih + ph.
        const int64_t Hp = z.OH + top, Wp = z.OW + left;
        const int64_t h_end = std::clamp<int64_t>(Hp - ph, 0, z.H);  // input rows any output reads
        const int64_t rows = std::clamp<int64_t>(kPixelBlock / Wq, 1, std::max<int64_t>(h_end, 1));
        const int64_t blocks = (z.H + rows - 1) / rows;
        parallel_for(z.N * z.G * blocks, 1, [&](int64_t u0, int64_t u1) {
            const FloatBuffer buf(rows * Wq * z.Cgp);
            for (int64_t u = u0; u < u1; ++u) {
                const int64_t n = u / (z.G * blocks), g = u / blocks % z.G, ih0 = u % blocks * rows;
                const int64_t nrows = std::max<int64_t>(0, std::min(rows, h_end - ih0));
                for (int64_t r = 0; r < z.R && nrows > 0; ++r)
                    for (int64_t s = 0; s < z.S; ++s) {
                        const int64_t first = (ih0 + ph + (z.R - 1 - r) * dh) * Wq + (z.S - 1 - s) * dw;
                        tile::gemm(nrows * Wq, z.Cgp, z.Kg, frame + (n * Hq * Wq + first) * pix + g * z.Kgp, pix, 1,
                                   packed.get() + ((g * z.R + r) * z.S + s) * z.Kg * z.Cgp, z.Cgp, buf.get(), z.Cgp,
                                   r + s > 0);
                    }
                for (int64_t i = 0; i < std::min(rows, z.H - ih0); ++i)
                    write_grad_x_row<T>(p, z, n, g, ih0 + i, i < nrows ? buf.get() + i * Wq * z.Cgp : nullptr, pw,
                                        std::clamp<int64_t>(Wp - pw, 0, z.W));
            }
        });
    }

    if (direct_dw) {
        // The padded input with rows as wide as the frame's: OW + (S-1) dil
        // output columns give Wq-wide rows.
        const PaddedPixels<T> x(p.x, z.OH, z.OW + left, z.R, z.S, p.geo);
        const int64_t pixels = z.OH * Wq, blocks = (pixels + kPixelBlock - 1) / kPixelBlock;
        reduce_grad_weight<T>(p, z, z.N * blocks, [&](float* acc, int64_t u) {
            const int64_t n = u / blocks, m0 = u % blocks * kPixelBlock;
            const int64_t count = std::min(kPixelBlock, pixels - m0);
            const float* dy = frame + (n * Hq * Wq + m0 + top * Wq + left) * pix;
            for (int64_t r = 0; r < z.R; ++r)
                for (int64_t s = 0; s < z.S; ++s)
                    for (int64_t g = 0; g < z.G; ++g)
                        tile::gemm(z.Cg, z.Kgp, count, x.data() + n * x.ns + (m0 + r * dh * Wq + s * dw) * z.C + g * z.Cg,
                                   1, z.C, dy + g * z.Kgp, pix, acc + (((g * z.R + r) * z.S + s) * z.Cg) * z.Kgp, z.Kgp,
                                   true);
        });
    }
}

template <class T>
void backward_strided(const ConvBackwardParams& p, const Sizes& z) {
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    const int64_t pix = z.G * z.Kgp;
    float* dy = conv_workspace(WorkspaceSlot::conv_grad, z.N * z.OH * z.OW * pix + z.OW * pix);
    pack_grad_out<T>(p, z, 0, 0, z.OH, z.OW, dy);

    if (p.grad_x.data) {
        const FloatBuffer packed(z.G * z.R * z.S * z.Kg * z.Cgp, true);
        pack_transposed_weights<T>(p, z, packed.get());
        parallel_for(z.N * z.G * z.H, 1, [&](int64_t u0, int64_t u1) {
            const FloatBuffer buf(z.W * z.Cgp);
            float* row = buf.get();
            for (int64_t u = u0; u < u1; ++u) {
                const int64_t n = u / (z.G * z.H), g = u / z.H % z.G, ih = u % z.H;
                std::fill_n(row, z.W * z.Cgp, 0.0f);
                for (int64_t r = 0; r < z.R; ++r) {
                    const int64_t t = ih + ph - r * dh;
                    if (t < 0 || t % sh != 0 || t / sh >= z.OH) continue;
                    const int64_t oh = t / sh;
                    for (int64_t s = 0; s < z.S; ++s) {
                        const Run run = valid_outputs(z.OW, z.W, sw, pw, s * dw);
                        if (run.hi == run.lo) continue;
                        tile::gemm(run.hi - run.lo, z.Cgp, z.Kg, dy + ((n * z.OH + oh) * z.OW + run.lo) * pix + g * z.Kgp,
                                   pix, 1, packed.get() + ((g * z.R + r) * z.S + s) * z.Kg * z.Cgp, z.Cgp,
                                   row + run.first_in * z.Cgp, sw * z.Cgp, true);
                    }
                }
                write_grad_x_row<T>(p, z, n, g, ih, row, 0, z.W);
            }
        });
    }

    if (p.grad_weight.data) {
        const PixelMajor<T> x(p.x);
        reduce_grad_weight<T>(p, z, z.N * z.OH, [&](float* acc, int64_t row) {
            const int64_t n = row / z.OH, oh = row % z.OH;
            for (int64_t r = 0; r < z.R; ++r) {
                const int64_t ih = oh * sh - ph + r * dh;
                if (ih < 0 || ih >= z.H) continue;
                for (int64_t s = 0; s < z.S; ++s) {
                    const Run run = valid_outputs(z.OW, z.W, sw, pw, s * dw);
                    if (run.hi == run.lo) continue;
                    for (int64_t g = 0; g < z.G; ++g)
                        tile::gemm(z.Cg, z.Kgp, run.hi - run.lo,
                                   x.data + n * x.ns + ih * x.hs + run.first_in * x.ws + g * z.Cg, 1, sw * x.ws,
                                   dy + (row * z.OW + run.lo) * pix + g * z.Kgp, pix,
                                   acc + ((g * z.R + r) * z.S + s) * z.Cg * z.Kgp, z.Kgp, true);
                }
            }
        });
    }
}

template <class T>
void backward_typed(const ConvBackwardParams& p) {
    const Sizes z(p.x, p.weight, p.grad_out, p.geo.groups);
    if (p.grad_bias.data) grad_bias<T>(p, z);
    if (depthwise_applies(z)) depthwise_backward<T>(p);
    else if (im2col_applies(z, p.geo, p.x.dtype)) im2col_backward<T>(p);
    else if (p.geo.stride[0] == 1 && p.geo.stride[1] == 1) backward_stride1<T>(p, z);
    else backward_strided<T>(p, z);
}

}  // namespace

void conv_backward_kernel(const ConvBackwardParams& p) {
    if (p.grad_out.dtype == DType::bf16) backward_typed<bf16>(p);
    else backward_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
