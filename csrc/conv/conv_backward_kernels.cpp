// Convolution backward, compiled once per ISA. Floor: 2 N K OH OW (C/groups)
// R S FLOPs for each of dX and dW; db is a reduction of dY.
//
// dY is converted once into float pixels [n][oh][ow][g][Kgp] (zero padded
// per group), the operand both products read.
// dX, gathered per input row (image, group, ih) so no two tasks write one
// element: the filter rows r with (ih + pad - r dil) divisible by the stride
// name the output row oh that reads ih, and for each tap (r, s)
//   dxrow[iw][c] += sum_k dY[oh][ow][k] * Wt[r][s][k][c],  iw = ow*stride + s*dil - pad
// is one product whose C rows step by `stride` pixels.
// dW, split over (image, output row) ranges, one range per thread, each
// summing into its own float copy of dW (G R S Cg Kgp floats), added in a
// fixed order at the end (deterministic for a given thread count):
//   dW[r][s][c][k] += sum_ow x[ih][iw][c] * dY[oh][ow][k]
// The copies keep each thread's reads of x and dY to one pass.
#include "conv_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

template <class T>
void backward_typed(const ConvBackwardParams& p) {
    const Sizes z(p.x, p.weight, p.grad_out, p.geo.groups);
    const auto [sh, sw] = p.geo.stride;
    const auto [ph, pw] = p.geo.pad;
    const auto [dh, dw] = p.geo.dilation;
    const int64_t pix = z.G * z.Kgp;  // floats per packed dY pixel

    const FloatBuffer dy_buf(z.N * z.OH * z.OW * pix);
    float* dy = dy_buf.get();
    const T* gy = static_cast<const T*>(p.grad_out.data);
    const TensorView& gv = p.grad_out;
    parallel_for(z.N * z.OH, 1, [&](int64_t r0, int64_t r1) {
        for (int64_t row = r0; row < r1; ++row) {
            const int64_t n = row / z.OH, oh = row % z.OH;
            float* d = dy + row * z.OW * pix;
            std::fill_n(d, z.OW * pix, 0.0f);
            const T* s = gy + n * gv.strides[0] + oh * gv.strides[2];
            for (int64_t k = 0; k < z.K; ++k)
                for (int64_t ow = 0; ow < z.OW; ++ow)
                    d[ow * pix + k / z.Kg * z.Kgp + k % z.Kg] = simd::to_float(s[k * gv.strides[1] + ow * gv.strides[3]]);
        }
    });

    if (p.grad_bias.data) {
        T* db = static_cast<T*>(p.grad_bias.data);
        parallel_for(z.K, 1, [&](int64_t k0, int64_t k1) {
            for (int64_t k = k0; k < k1; ++k) {
                double sum = 0.0;
                const float* d = dy + k / z.Kg * z.Kgp + k % z.Kg;
                for (int64_t i = 0; i < z.N * z.OH * z.OW; ++i) sum += d[i * pix];
                db[k * p.grad_bias.strides[0]] = simd::from_float<T>(static_cast<float>(sum));
            }
        });
    }

    const T* w = static_cast<const T*>(p.weight.data);
    const TensorView& wv = p.weight;
    if (p.grad_x.data) {
        const FloatBuffer packed(z.G * z.R * z.S * z.Kg * z.Cgp, true);
        float* Wt = packed.get();
        for (int64_t k = 0; k < z.K; ++k)
            for (int64_t c = 0; c < z.Cg; ++c)
                for (int64_t r = 0; r < z.R; ++r)
                    for (int64_t s = 0; s < z.S; ++s)
                        Wt[(((k / z.Kg * z.R + r) * z.S + s) * z.Kg + k % z.Kg) * z.Cgp + c] = simd::to_float(
                            w[k * wv.strides[0] + c * wv.strides[1] + r * wv.strides[2] + s * wv.strides[3]]);
        T* gx = static_cast<T*>(p.grad_x.data);
        const TensorView& xv = p.grad_x;
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
                                   pix, 1, Wt + ((g * z.R + r) * z.S + s) * z.Kg * z.Cgp, z.Cgp,
                                   row + run.first_in * z.Cgp, sw * z.Cgp, true);
                    }
                }
                T* dst = gx + n * xv.strides[0] + g * z.Cg * xv.strides[1] + ih * xv.strides[2];
                for (int64_t iw = 0; iw < z.W; ++iw)
                    for (int64_t c = 0; c < z.Cg; ++c)
                        dst[c * xv.strides[1] + iw * xv.strides[3]] = simd::from_float<T>(row[iw * z.Cgp + c]);
            }
        });
    }

    if (p.grad_weight.data) {
        const PixelMajor<T> x(p.x);
        const int64_t rows = z.N * z.OH;
        const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows));
        const int64_t dw_size = z.G * z.R * z.S * z.Cg * z.Kgp;
        const FloatBuffer partial_buf(splits * dw_size);
        float* partial = partial_buf.get();
        parallel_for(splits, 1, [&](int64_t s0, int64_t s1) {
            for (int64_t split = s0; split < s1; ++split) {
                float* acc = partial + split * dw_size;
                std::fill_n(acc, dw_size, 0.0f);
                for (int64_t row = rows * split / splits; row < rows * (split + 1) / splits; ++row) {
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
                }
            }
        });
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
}

}  // namespace

void conv_backward_kernel(const ConvBackwardParams& p) {
    if (p.grad_out.dtype == DType::bf16) backward_typed<bf16>(p);
    else backward_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
