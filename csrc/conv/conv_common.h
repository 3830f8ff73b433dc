// Pieces shared by the convolution kernels (compiled per ISA with them):
// sizes, the range of output positions a filter tap reaches, and the float
// packings every product reads. Every product is tile::gemm (the attention
// family's register-blocked micro-kernel; the shared GEMM of csrc/gemm can
// replace it): the vector dimension is always a channel dimension, padded to
// the vector width in the packed B operands and in the accumulators.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "../attention/tile_gemm.h"
#include "../gemm/gemm_pack.h"
#include "fastnn/conv.h"
#include "fastnn/parallel.h"
#include "fastnn/simd_transpose.h"
#include "fastnn/workspace.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {

using tile::round_up;

// The forward products (one filter tap's channels, or a Winograd point's)
// sum tile::kLongChunk channels per register chunk: a tap's sum in one chain,
// the taps joined in memory. Against tile::kChunk (16): N8 C64 K64 56x56 3x3
// forward 2 threads 12% faster (channels-last 7.48 -> 6.52 ms, NCHW 8.21 ->
// 7.36), 1x1 C256 K64 5%; max error against float64 still 0.1-0.41 of
// torch's (oneDNN's). The backward keeps kChunk: its NCHW dx went to 1.2-1.4x
// torch's error at 64.

void conv_forward_kernel(const ConvParams& p);
void conv_backward_kernel(const ConvBackwardParams& p);

struct Sizes {
    int64_t N, C, H, W, K, R, S, OH, OW, G, Cg, Kg, Cgp, Kgp;

    Sizes(const TensorView& x, const TensorView& w, const TensorView& y, int64_t groups)
        : N(x.shape[0]), C(x.shape[1]), H(x.shape[2]), W(x.shape[3]), K(w.shape[0]), R(w.shape[2]), S(w.shape[3]),
          OH(y.shape[2]), OW(y.shape[3]), G(groups), Cg(C / groups), Kg(K / groups),
          Cgp(round_up(C / groups, tile::kWidth)), Kgp(round_up(K / groups, tile::kWidth)) {}
};

// Output positions [lo, hi) whose input index o * stride - pad + offset lies
// in [0, in); first_in is the input index of lo.
struct Run {
    int64_t lo, hi, first_in;
};

inline Run valid_outputs(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t offset) {
    const int64_t need = pad - offset;  // o * stride >= need
    const int64_t lo = need > 0 ? (need + stride - 1) / stride : 0;
    const int64_t top = in - 1 + pad - offset;  // o * stride <= top
    const int64_t hi = top < 0 ? 0 : std::min(out, top / stride + 1);
    return {lo, std::max(lo, hi), lo * stride - pad + offset};
}

inline constexpr int64_t kTransposeBlock = 16;

// One row of W pixels of a planar (e.g. NCHW) or channels-last tensor into
// channels-last floats: channel c of pixel w at src[c * cs + w * ws] goes to
// dst[w * ld + c], c < C. Planar float rows with unit pixel stride go through
// 16 x 16 register transposes; otherwise blocks of kTransposeBlock channels
// are read in step (one cache line of each of their rows at a time). The
// scalar form alone took 40% as long as the products of an NCHW N8 C128
// 56x56 stride-2 layer.
template <class T>
void planar_to_pixels(const T* src, int64_t cs, int64_t ws, int64_t C, int64_t W, float* dst, int64_t ld) {
    if (cs == 1) {  // already channels-last: a copy per pixel
        for (int64_t w = 0; w < W; ++w) {
            const T* from = src + w * ws;
            float* to = dst + w * ld;
            if constexpr (std::is_same_v<T, float>) std::memcpy(to, from, sizeof(float) * C);
            else for (int64_t c = 0; c < C; ++c) to[c] = simd::to_float(from[c]);
        }
        return;
    }
    if constexpr (std::is_same_v<T, float>) {
        if (ws == 1) {
            for (int64_t c0 = 0; c0 < C; c0 += 16)
                for (int64_t w0 = 0; w0 < W; w0 += 16)
                    simd::transpose_block(src + c0 * cs + w0, cs, static_cast<int>(std::min<int64_t>(16, C - c0)),
                                    static_cast<int>(std::min<int64_t>(16, W - w0)), dst + w0 * ld + c0, ld);
            return;
        }
    }
    for (int64_t c0 = 0; c0 < C; c0 += kTransposeBlock)
        for (int64_t w = 0; w < W; ++w)
            for (int64_t c = c0; c < std::min(C, c0 + kTransposeBlock); ++c)
                dst[w * ld + c] = simd::to_float(src[c * cs + w * ws]);
}

// Pixels into a planar layout: pixel w's channels (c < C) at row_of(w) go to
// dst[c * cs + w * ws] as row_of(w)[c] + bias[c] (bias may be null), rounded
// to T once. Float output with unit pixel stride goes through 16 x 16
// register transposes.
template <class T, class RowOf>
void rows_to_planar(RowOf&& row_of, int64_t C, int64_t W, const float* bias, T* dst, int64_t cs, int64_t ws) {
#if FASTNN_SIMD_AVX512
    if constexpr (std::is_same_v<T, float>) {
        if (ws == 1) {
            for (int64_t c0 = 0; c0 < C; c0 += 16) {
                const int cn = static_cast<int>(std::min<int64_t>(16, C - c0));
                const __mmask16 channels = static_cast<__mmask16>((1u << cn) - 1u);
                const __m512 b = bias ? _mm512_maskz_loadu_ps(channels, bias + c0) : _mm512_setzero_ps();
                for (int64_t w0 = 0; w0 < W; w0 += 16) {
                    const int wn = static_cast<int>(std::min<int64_t>(16, W - w0));
                    __m512 r[16];
                    for (int i = 0; i < 16; ++i)
                        r[i] = i < wn ? _mm512_add_ps(_mm512_maskz_loadu_ps(channels, row_of(w0 + i) + c0), b)
                                      : _mm512_setzero_ps();
                    simd::transpose16x16(r);
                    const __mmask16 pixels = static_cast<__mmask16>((1u << wn) - 1u);
                    for (int j = 0; j < cn; ++j) _mm512_mask_storeu_ps(dst + (c0 + j) * cs + w0, pixels, r[j]);
                }
            }
            return;
        }
    }
#endif
    for (int64_t c = 0; c < C; ++c) {
        const float b = bias ? bias[c] : 0.0f;
        for (int64_t w = 0; w < W; ++w) dst[c * cs + w * ws] = simd::from_float<T>(row_of(w)[c] + b);
    }
}

// The inverse of planar_to_pixels: pixel w's channels at src + w * ld.
template <class T>
void pixels_to_planar(const float* src, int64_t ld, int64_t C, int64_t W, const float* bias, T* dst, int64_t cs,
                      int64_t ws) {
    rows_to_planar([&](int64_t w) { return src + w * ld; }, C, W, bias, dst, cs, ws);
}

class FloatBuffer {
public:
    explicit FloatBuffer(int64_t n, bool zero = false)
        : data_(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(round_up(std::max<int64_t>(n, 1), 16)) * 4))) {
        if (zero) std::fill_n(data_, n, 0.0f);
    }
    ~FloatBuffer() { std::free(data_); }
    FloatBuffer(const FloatBuffer&) = delete;
    FloatBuffer& operator=(const FloatBuffer&) = delete;
    float* get() const { return data_; }

private:
    float* data_;
};

// The calling thread's workspace `slot` (fastnn/workspace.h) as n elements,
// kept for its next call: a layer's multi-MB buffers would otherwise pay
// their page faults on every call. Outside parallel regions only.
template <class T = float>
T* conv_workspace(WorkspaceSlot slot, int64_t n) {
    T* p = thread_workspace<T>(slot, static_cast<size_t>(round_up(std::max<int64_t>(n, 1), 16)));
    if (!p) throw std::bad_alloc();
    return p;
}

// x as float pixels of C channels: element (n, h, w, c) at
// data[n * ns + h * hs + w * ws + c]. A view of x when it is float32 with
// unit channel stride (channels-last), else a converted copy in the calling
// thread's workspace `slot`.
template <class T>
struct PixelMajor {
    const float* data;
    int64_t ns, hs, ws;

    explicit PixelMajor(const TensorView& x, WorkspaceSlot slot = WorkspaceSlot::conv_input) {
        const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
        if (direct(x)) {
            data = static_cast<const float*>(x.data);
            ns = x.strides[0], hs = x.strides[2], ws = x.strides[3];
            return;
        }
        float* dst = conv_workspace(slot, N * H * W * C);
        const T* src = static_cast<const T*>(x.data);
        parallel_for(N * H, 1, [&](int64_t r0, int64_t r1) {
            for (int64_t row = r0; row < r1; ++row) {
                const int64_t n = row / H, h = row % H;
                planar_to_pixels(src + n * x.strides[0] + h * x.strides[2], x.strides[1], x.strides[3], C, W,
                                 dst + row * W * C, C);
            }
        });
        data = dst;
        ns = H * W * C, hs = W * C, ws = C;
    }

    static bool direct(const TensorView& x) {
        return std::is_same_v<T, float> && (x.strides[1] == 1 || x.shape[1] == 1);
    }
};

// x as float pixels with the zero padding materialized: Hp = OH + (R-1) dil_h
// rows of Wp = OW + (S-1) dil_w pixels of C channels per image, so for a
// stride-1 convolution output pixel (oh, ow) and tap (r, s) read pixel
// (oh + r dil_h) * Wp + ow + s dil_w: one linear index over whole rows. The
// Wp - OW extra columns per row are computed and discarded; the slack at the
// end keeps their reads inside the buffer.
// The copy lives in the calling thread's workspace `slot`.
template <class T>
struct PaddedPixels {
    int64_t Hp, Wp, C, ns;
    float* copy;

    PaddedPixels(const TensorView& x, int64_t OH, int64_t OW, int64_t R, int64_t S, const ConvGeometry& geo,
                 WorkspaceSlot slot = WorkspaceSlot::conv_input)
        : Hp(OH + (R - 1) * geo.dilation[0]), Wp(OW + (S - 1) * geo.dilation[1]), C(x.shape[1]), ns(Hp * Wp * C),
          copy(conv_workspace(slot, x.shape[0] * Hp * Wp * C + Wp * C)) {
        const int64_t N = x.shape[0], H = x.shape[2], W = x.shape[3];
        const int64_t top = geo.pad[0], left = geo.pad[1];
        float* dst = copy;
        const T* src = static_cast<const T*>(x.data);
        std::fill_n(dst + N * ns, Wp * C, 0.0f);
        parallel_for(N * Hp, 1, [&](int64_t r0, int64_t r1) {
            for (int64_t row = r0; row < r1; ++row) {
                const int64_t n = row / Hp, ih = row % Hp - top;
                float* d = dst + row * Wp * C;
                std::fill_n(d, Wp * C, 0.0f);
                if (ih < 0 || ih >= H) continue;
                const int64_t w_end = std::min(W, Wp - left);
                planar_to_pixels(src + n * x.strides[0] + ih * x.strides[2], x.strides[1], x.strides[3], C, w_end,
                                 d + left * C, C);
            }
        });
    }
    const float* data() const { return copy; }
};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
