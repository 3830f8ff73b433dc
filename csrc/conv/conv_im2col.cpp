// Convolution as GEMMs over gathered patches (im2col), compiled per ISA:
//   out (pixels x K) = col (pixels x R S C) @ W'^T + bias.
// Row p of col holds, for every filter tap (r, s), the C channels of the
// input pixel that output pixel p reads there (zeros where the tap falls in
// the padding); W' (K x R S C) is the filter with its taps in the same
// (r, s, c) order. In a channels-last input a tap's channels are
// contiguous, so a row is R S copies of C elements and col costs one write
// and one read of its size; the product then runs on the package's packed,
// cache-blocked GEMM (AMX for bf16 where the CPU has it) at its full speed
// however small the image. The direct path instead runs one short product
// per output row and tap, and the Winograd path pays a 16 C K weight
// transform per call, which dominates on wide layers with few pixels.
//
// The backward pass is two more GEMMs on the same operands:
//   dW' (K x R S C) = dY^T (K x pixels) @ col, summed over image chunks;
//   dcol (pixels x R S C) = dY (pixels x K) @ W';
// and dX is gathered: each input pixel adds, in tap order, the dcol entries
// of the (output pixel, tap) pairs that read it, so every element of dX is
// written once, with no scatter, zeroing or races.
//
// Images go in chunks whose col fits kColBytes (one image at least; see
// im2col_applies).
#include "conv_im2col.h"

#include <cstring>
#include <vector>

#include "fastnn/gemm.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

using simd::VecF32;

constexpr int64_t kColBytes = int64_t{32} << 20;
constexpr int64_t kMinTaps = 64;     // C R S, the GEMM's reduction
constexpr int64_t kMinOutputs = 32;  // K

template <class T>
constexpr DType dtype_of() {
    return std::is_same_v<T, bf16> ? DType::bf16 : DType::f32;
}

TensorView vector_view(const float* data, int64_t n) {
    TensorView v;
    v.data = const_cast<float*>(data);
    v.ndim = 1;
    v.shape[0] = n;
    v.strides[0] = 1;
    return v;
}

// A (rows x cols) matrix, batch 1: element (i, j) at data[i * rs + j * cs].
template <class T>
TensorView matrix(const T* data, int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    TensorView m;
    m.data = const_cast<T*>(data);
    m.dtype = dtype_of<T>();
    m.ndim = 3;
    m.shape[0] = 1, m.shape[1] = rows, m.shape[2] = cols;
    m.strides[0] = 0, m.strides[1] = rs, m.strides[2] = cs;
    return m;
}

// Pixels of C channels: element (n, h, w, c) at
// data[n * ns + h * hs + w * ws + c * cs]; pixel q (counted over all images)
// at data[q * ps] when they are evenly spaced, else ps = 0.
template <class T>
struct Pixels {
    const T* data;
    int64_t ns, hs, ws, cs, ps;
};

// The stride between consecutive pixels when every pixel (n, h, w) of t
// (N, C, H, W) sits at ((n H + h) W + w) times it, else 0.
int64_t pixel_row_stride(const TensorView& t) {
    const int64_t N = t.shape[0], H = t.shape[2], W = t.shape[3];
    const int64_t ps = W > 1 ? t.strides[3] : H > 1 ? t.strides[2] : t.strides[0];
    const bool rows = (W == 1 || t.strides[3] == ps) && (H == 1 || t.strides[2] == W * ps) &&
                      (N == 1 || t.strides[0] == H * W * ps);
    return rows && ps > 0 ? ps : 0;
}

// t (N, C, H, W) with contiguous channels: t itself when its channels are
// contiguous (and, with `rows`, its pixels evenly spaced: a pixels x C
// matrix), else a channels-last copy in the calling thread's workspace.
template <class T>
Pixels<T> channels_last(const TensorView& t, bool rows, WorkspaceSlot slot) {
    const int64_t N = t.shape[0], C = t.shape[1], H = t.shape[2], W = t.shape[3];
    const T* src = static_cast<const T*>(t.data);
    if ((t.strides[1] == 1 || C == 1) && (!rows || pixel_row_stride(t) > 0))
        return {src, t.strides[0], t.strides[2], t.strides[3], t.strides[1], pixel_row_stride(t)};
    T* dst = conv_workspace<T>(slot, N * H * W * C);
    parallel_for(N * H, 1, [&](int64_t r0, int64_t r1) {
        for (int64_t row = r0; row < r1; ++row) {
            const T* s = src + row / H * t.strides[0] + row % H * t.strides[2];
            T* d = dst + row * W * C;
            if constexpr (std::is_same_v<T, float>) {
                planar_to_pixels(s, t.strides[1], t.strides[3], C, W, d, C);
                continue;
            }
            for (int64_t c0 = 0; c0 < C; c0 += kTransposeBlock)
                for (int64_t w = 0; w < W; ++w)
                    for (int64_t c = c0; c < std::min(C, c0 + kTransposeBlock); ++c)
                        d[w * C + c] = s[c * t.strides[1] + w * t.strides[3]];
        }
    });
    return {dst, H * W * C, W * C, C, 1, C};
}

// The element strides of a filter-shaped array along (k, c, r, s).
struct TapStrides {
    int64_t k, c, r, s;
};

// dst = src over all (k, c, r, s), converted to D. The two layouts the
// gathered-patch GEMMs move between, (K, C, R S) with contiguous taps and
// (K, R S, C) with contiguous channels, are per output channel a transpose:
// float ones go 16 channels at a time through registers (transpose_block).
template <class S, class D>
void move_taps(const Sizes& z, const S* src, TapStrides from, D* dst, TapStrides to) {
    const int64_t RS = z.R * z.S;
    auto channel_major = [&](const TapStrides& t) { return RS <= 16 && t.s == 1 && t.r == z.S && t.c == RS; };
    auto tap_major = [&](const TapStrides& t) { return t.c == 1 && t.s == z.C && t.r == z.S * z.C; };
    const bool floats = std::is_same_v<S, float> && std::is_same_v<D, float>;
    const bool gather = floats && channel_major(from) && tap_major(to);   // (C, RS) -> (RS, C)
    const bool scatter = floats && tap_major(from) && channel_major(to);  // (RS, C) -> (C, RS)
    parallel_for(z.K, 4, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
            const S* in = src + k * from.k;
            D* out = dst + k * to.k;
            if constexpr (std::is_same_v<S, float> && std::is_same_v<D, float>) {
                if (gather || scatter) {
                    for (int64_t c0 = 0; c0 < z.C; c0 += 16) {
                        const int n = static_cast<int>(std::min<int64_t>(16, z.C - c0)), rs = static_cast<int>(RS);
                        if (gather) simd::transpose_block(in + c0 * RS, RS, n, rs, out + c0, z.C);
                        else simd::transpose_block(in + c0, z.C, rs, n, out + c0 * RS, RS);
                    }
                    continue;
                }
            }
            for (int64_t c = 0; c < z.C; ++c)
                for (int64_t r = 0; r < z.R; ++r)
                    for (int64_t t = 0; t < z.S; ++t)
                        out[c * to.c + r * to.r + t * to.s] =
                            simd::from_float<D>(simd::to_float(in[c * from.c + r * from.r + t * from.s]));
        }
    });
}

TapStrides tap_strides(const TensorView& w) { return {w.strides[0], w.strides[1], w.strides[2], w.strides[3]}; }

// W'[k][(r S + s) C + c] = w[k][c][r][s], in the conv_weights workspace.
template <class T>
const T* reorder_weights(const TensorView& w, const Sizes& z) {
    const int64_t taps = z.R * z.S * z.C;
    T* dst = conv_workspace<T>(WorkspaceSlot::conv_weights, z.K * taps);
    move_taps(z, static_cast<const T*>(w.data), tap_strides(w), dst, TapStrides{taps, 1, z.S * z.C, z.C});
    return dst;
}

// Rows [0, rows) of col for output pixels [p0, p0 + rows), counted over all
// images.
template <class T>
void gather_patches(const Pixels<T>& x, const Sizes& z, const ConvGeometry& geo, int64_t p0, int64_t rows, T* col) {
    const int64_t taps = z.R * z.S * z.C, P = z.OH * z.OW;
    parallel_for(rows, 8, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const int64_t pix = p0 + i, n = pix / P, oh = pix % P / z.OW, ow = pix % z.OW;
            T* dst = col + i * taps;
            for (int64_t r = 0; r < z.R; ++r) {
                const int64_t ih = oh * geo.stride[0] - geo.pad[0] + r * geo.dilation[0];
                for (int64_t s = 0; s < z.S; ++s, dst += z.C) {
                    const int64_t iw = ow * geo.stride[1] - geo.pad[1] + s * geo.dilation[1];
                    if (ih < 0 || ih >= z.H || iw < 0 || iw >= z.W) {
                        std::memset(static_cast<void*>(dst), 0, sizeof(T) * z.C);
                    } else {
                        const T* src = x.data + n * x.ns + ih * x.hs + iw * x.ws;
                        if (x.cs == 1 || z.C == 1) std::memcpy(static_cast<void*>(dst), src, sizeof(T) * z.C);
                        else for (int64_t c = 0; c < z.C; ++c) dst[c] = src[c * x.cs];
                    }
                }
            }
        }
    });
}

// Images per chunk: as many as keep `elem`-byte col rows within kColBytes.
int64_t chunk_images(const Sizes& z, int64_t elem) {
    const int64_t image = z.OH * z.OW * z.R * z.S * z.C * elem;
    return std::clamp<int64_t>(kColBytes / std::max<int64_t>(image, 1), 1, std::max<int64_t>(z.N, 1));
}

// out pixels [p0, p0 + rows) from staged (rows x K floats), for an output
// whose pixels are not evenly spaced rows (planar NCHW, for one): each
// output row's run of pixels transposed (pixels_to_planar).
template <class T>
void write_staged(const float* staged, int64_t p0, int64_t rows, const TensorView& out, const Sizes& z) {
    const int64_t P = z.OH * z.OW;
    const int64_t first = p0 / z.OW, last = (p0 + rows - 1) / z.OW;  // output rows (over all images)
    T* y = static_cast<T*>(out.data);
    parallel_for(last - first + 1, 1, [&](int64_t r0, int64_t r1) {
        for (int64_t r = first + r0; r < first + r1; ++r) {
            const int64_t begin = std::max(p0, r * z.OW), end = std::min(p0 + rows, (r + 1) * z.OW);
            const int64_t n = r * z.OW / P, oh = r % z.OH, ow = begin - r * z.OW;
            pixels_to_planar(staged + (begin - p0) * z.K, z.K, z.K, end - begin, nullptr,
                             y + n * out.strides[0] + oh * out.strides[2] + ow * out.strides[3], out.strides[1],
                             out.strides[3]);
        }
    });
}

// dX for images [n0, n0 + images) from their dcol (rows of R S C floats):
// one input row per task, each pixel summing its taps' entries in (r, s)
// order into a row buffer, which then goes to grad_x in its layout.
template <class T>
void gather_grad_x(const float* dcol, int64_t n0, int64_t images, const TensorView& gx, const Sizes& z,
                   const ConvGeometry& geo) {
    constexpr int Wd = VecF32::width;
    const int64_t taps = z.R * z.S * z.C, P = z.OH * z.OW;
    T* dx = static_cast<T*>(gx.data);
    parallel_for(images * z.H, 1, [&](int64_t r0, int64_t r1) {
        const FloatBuffer row(z.W * z.C);
        float* buf = row.get();
        std::vector<int64_t> tap_rows(2 * z.R), tap_cols(2 * z.S);
        for (int64_t u = r0; u < r1; ++u) {
            const int64_t n = u / z.H, ih = u % z.H;
            // Filter rows r reading ih, with their output rows.
            int64_t nr = 0;
            for (int64_t r = 0; r < z.R; ++r) {
                const int64_t at = ih + geo.pad[0] - r * geo.dilation[0];
                if (at >= 0 && at % geo.stride[0] == 0 && at / geo.stride[0] < z.OH)
                    tap_rows[2 * nr] = r, tap_rows[2 * nr + 1] = at / geo.stride[0], ++nr;
            }
            for (int64_t iw = 0; iw < z.W; ++iw) {
                int64_t ns = 0;
                for (int64_t s = 0; s < z.S; ++s) {
                    const int64_t at = iw + geo.pad[1] - s * geo.dilation[1];
                    if (at >= 0 && at % geo.stride[1] == 0 && at / geo.stride[1] < z.OW)
                        tap_cols[2 * ns] = s, tap_cols[2 * ns + 1] = at / geo.stride[1], ++ns;
                }
                float* out = buf + iw * z.C;
                for (int64_t c0 = 0; c0 < z.C; c0 += Wd) {
                    const int lanes = static_cast<int>(std::min<int64_t>(Wd, z.C - c0));
                    VecF32 sum = VecF32::zero();
                    for (int64_t a = 0; a < nr; ++a)
                        for (int64_t b = 0; b < ns; ++b) {
                            const int64_t pix = n * P + tap_rows[2 * a + 1] * z.OW + tap_cols[2 * b + 1];
                            const float* src =
                                dcol + (pix - n0 * P) * taps + (tap_rows[2 * a] * z.S + tap_cols[2 * b]) * z.C + c0;
                            sum = sum + VecF32::load_partial(src, lanes);
                        }
                    sum.store_partial(out + c0, lanes);
                }
            }
            T* dst = dx + (n0 + n) * gx.strides[0] + ih * gx.strides[2];
            if (gx.strides[1] == 1) {
                for (int64_t iw = 0; iw < z.W; ++iw)
                    for (int64_t c = 0; c < z.C; ++c)
                        dst[iw * gx.strides[3] + c] = simd::from_float<T>(buf[iw * z.C + c]);
            } else {
                pixels_to_planar(buf, z.C, z.C, z.W, nullptr, dst, gx.strides[1], gx.strides[3]);
            }
        }
    });
}

}  // namespace

bool im2col_applies(const Sizes& z, const ConvGeometry& geo, DType dtype) {
    if (z.G != 1 || (dtype != DType::f32 && dtype != DType::bf16)) return false;
    const int64_t taps = z.R * z.S * z.C;
    if (taps < kMinTaps || z.K < kMinOutputs || z.N * z.OH * z.OW == 0 || z.H * z.W == 0) return false;
    if (z.OH * z.OW * taps * int64_t{4} > kColBytes) return false;
    // Strided: the direct path's products are one output row long, which
    // from 16x16 outputs up runs near its speed (N8 C128 K128 56x56 stride
    // 2: 8.9 ms direct, 15 ms here), not below (at 7x7 outputs and C512:
    // 21.3 against 13.9 ms).
    if (geo.stride[0] != 1 || geo.stride[1] != 1) return z.OH * z.OW <= 256;
    if (geo.dilation[0] != 1 || geo.dilation[1] != 1) return false;
    if (z.R != 3 || z.S != 3) return false;
    // 3x3 stride 1 (Winograd's otherwise): the GEMMs win where the layer has
    // few 2x2 output tiles for its channels.
    const int64_t tiles = z.N * ((z.OH + 1) / 2) * ((z.OW + 1) / 2);
    return tiles * 2 < z.C && tiles * 2 < z.K;
}

template <class T>
void im2col_forward(const ConvParams& p, const float* bias) {
    const Sizes z(p.x, p.weight, p.out, 1);
    const int64_t taps = z.R * z.S * z.C, P = z.OH * z.OW;
    const Pixels<T> x = channels_last<T>(p.x, false, WorkspaceSlot::conv_input);
    const T* w = reorder_weights<T>(p.weight, z);
    const int64_t images = chunk_images(z, sizeof(T));
    T* col = conv_workspace<T>(WorkspaceSlot::conv_tiles, images * P * taps);
    const int64_t ps = p.out.strides[1] == 1 ? pixel_row_stride(p.out) : 0;
    float* staged = ps ? nullptr : conv_workspace(WorkspaceSlot::conv_block, images * P * z.K);
    GemmParams gp;
    gp.b = matrix(w, taps, z.K, 1, taps);
    if (bias) gp.bias = vector_view(bias, z.K);
    for (int64_t n0 = 0; n0 < z.N; n0 += images) {
        const int64_t rows = std::min(images, z.N - n0) * P;
        gather_patches(x, z, p.geo, n0 * P, rows, col);
        gp.a = matrix<T>(col, rows, taps, taps, 1);
        gp.c = ps ? matrix(static_cast<T*>(p.out.data) + n0 * P * ps, rows, z.K, ps, p.out.strides[1])
                  : matrix(staged, rows, z.K, z.K, 1);
        gemm(gp);
        if (!ps) write_staged<T>(staged, n0 * P, rows, p.out, z);
    }
}

template <class T>
void im2col_backward(const ConvBackwardParams& p) {
    const Sizes z(p.x, p.weight, p.grad_out, 1);
    const int64_t taps = z.R * z.S * z.C, P = z.OH * z.OW;
    const Pixels<T> dy = channels_last<T>(p.grad_out, true, WorkspaceSlot::conv_grad);
    const int64_t ps = dy.ps;
    const int64_t images = chunk_images(z, sizeof(float));
    if (p.grad_weight.data) {
        const Pixels<T> x = channels_last<T>(p.x, false, WorkspaceSlot::conv_input);
        T* col = conv_workspace<T>(WorkspaceSlot::conv_tiles, images * P * taps);
        float* acc = conv_workspace(WorkspaceSlot::conv_block, z.K * taps);
        GemmParams gp;
        gp.c = matrix(acc, z.K, taps, taps, 1);
        for (int64_t n0 = 0; n0 < z.N; n0 += images) {
            const int64_t rows = std::min(images, z.N - n0) * P;
            gather_patches(x, z, p.geo, n0 * P, rows, col);
            gp.a = matrix(dy.data + n0 * P * ps, z.K, rows, dy.cs, ps);
            gp.b = matrix<T>(col, rows, taps, taps, 1);
            gp.beta = n0 > 0 ? 1.0f : 0.0f;
            gemm(gp);
        }
        move_taps(z, static_cast<const float*>(acc), TapStrides{taps, 1, z.S * z.C, z.C},
                  static_cast<T*>(p.grad_weight.data), tap_strides(p.grad_weight));
    }
    if (p.grad_x.data) {
        const T* w = reorder_weights<T>(p.weight, z);
        float* dcol = conv_workspace(WorkspaceSlot::conv_tiles, images * P * taps);
        GemmParams gp;
        gp.b = matrix(w, z.K, taps, taps, 1);
        for (int64_t n0 = 0; n0 < z.N; n0 += images) {
            const int64_t count = std::min(images, z.N - n0);
            gp.a = matrix(dy.data + n0 * P * ps, count * P, z.K, ps, dy.cs);
            gp.c = matrix(dcol, count * P, taps, taps, 1);
            gemm(gp);
            gather_grad_x<T>(dcol, n0, count, p.grad_x, z, p.geo);
        }
    }
}

template void im2col_forward<float>(const ConvParams&, const float*);
template void im2col_forward<bf16>(const ConvParams&, const float*);
template void im2col_backward<float>(const ConvBackwardParams&);
template void im2col_backward<bf16>(const ConvBackwardParams&);

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
