// Winograd F(2x2, 3x3) convolution, compiled once per ISA: 3x3 filters,
// stride 1, dilation 1. Each 2x2 output tile of one output channel is
//   Y = A^T [ sum_c (G g_c G^T) . (B^T d_c B) ] A
// over the 4x4 input patches d_c: 16 products per tile and channel pair where
// the direct convolution needs 36, so 2.25x fewer FMAs (Lavin and Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2015). The sum over c
// is 16 independent GEMMs, one per position xi of the 4x4 transformed tile:
//   M_xi[tile][k] = sum_c V_xi[tile][c] U_xi[c][k].
//
// Why F(2x2, 3x3) and not F(4x4, 3x3) (4x fewer FMAs): accuracy. The larger
// tile's transforms have entries up to 8 and 1/24, and in a float32 model of
// both (bench/notes/conv_pool.md) its error was 5-16x over the accuracy
// rule's bound (2x PyTorch's), while F(2x2, 3x3), whose transforms hold only
// 0, +-1 and +-1/2, stayed at 0.4-0.75 of the bound: the GEMMs sum C terms,
// not 9 C, and the transforms add at most 4 terms.
//
// Data flow per task (image, group, a block of tiles in row-major order): the
// input patches are read from a zero-padded channels-last float copy of x
// and transformed 16 channels at a time into V[xi][tile][c]; for each chunk
// of 64 output channels, the 16 GEMMs write M[xi][tile][k] and the output
// transform turns them into the tile's four pixels in Y[tile][4][k]; then
// the block's pixels go to `out` with the bias. The block is sized so that
// V, M and Y (~512 KiB) stay in L2 while the transformed weights U (16 C K
// floats, shared by every task) stream from L2/L3 panel by panel.
#include <vector>

#include "conv_common.h"
#include "conv_winograd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

using simd::VecF32;

constexpr int kXi = 16;              // positions in a transformed 4x4 tile
constexpr int64_t kChannelChunk = 64;  // output channels per GEMM + output transform pass
constexpr int64_t kBlockFloats = 128 * 1024;

// U[g][xi][c][k] = (G g G^T)[xi] for weight g = w(g, k, c), computed in
// double and rounded once; k padded to Kgp with zeros.
template <class T>
void transform_weights(const WinogradConv& p, int64_t Cg, int64_t Kg, int64_t Kgp, float* U) {
    static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    const T* w = static_cast<const T*>(p.weight.data);
    const WinogradWeights& s = p.weight;
    parallel_for(p.groups * Kg, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t g = u / Kg, k = u % Kg;
            for (int64_t c = 0; c < Cg; ++c) {
                const T* src = w + g * s.group + k * s.out + c * s.in;
                double f[3][3], gf[4][3];
                for (int r = 0; r < 3; ++r)
                    for (int q = 0; q < 3; ++q) f[r][q] = simd::to_float(src[r * s.row + q * s.col]);
                for (int i = 0; i < 4; ++i)
                    for (int q = 0; q < 3; ++q) gf[i][q] = G[i][0] * f[0][q] + G[i][1] * f[1][q] + G[i][2] * f[2][q];
                for (int i = 0; i < 4; ++i)
                    for (int j = 0; j < 4; ++j) {
                        const double v = gf[i][0] * G[j][0] + gf[i][1] * G[j][1] + gf[i][2] * G[j][2];
                        U[((g * kXi + i * 4 + j) * Cg + c) * Kgp + k] = static_cast<float>(v);
                    }
            }
        }
    });
}

// V[xi][t][c0 .. c0 + n) = (B^T d B)[xi] for the patch whose top-left pixel
// is at `patch` (pixels `ld` floats apart in a row, rows `row` floats apart),
// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: adds only.
inline void transform_patch(const float* patch, int64_t ld, int64_t row, int n, float* V, int64_t xi_stride) {
    VecF32 e[4][4];
    for (int i = 0; i < 4; ++i) {
        VecF32 d[4];
        for (int j = 0; j < 4; ++j) d[j] = VecF32::load_partial(patch + i * row + j * ld, n);
        e[i][0] = d[0] - d[2], e[i][1] = d[1] + d[2], e[i][2] = d[2] - d[1], e[i][3] = d[1] - d[3];
    }
    for (int j = 0; j < 4; ++j) {
        const VecF32 v[4] = {e[0][j] - e[2][j], e[1][j] + e[2][j], e[2][j] - e[1][j], e[1][j] - e[3][j]};
        for (int i = 0; i < 4; ++i) v[i].store_partial(V + (i * 4 + j) * xi_stride, n);
    }
}

// The tile's 2x2 pixels from M[xi] (xi = 4 i + j at M + xi * xi_stride),
// A^T = [1 1 1 0; 0 1 -1 -1]; pixel q = 2 y + x at Y + q * ld.
inline void transform_output(const float* M, int64_t xi_stride, float* Y, int64_t ld) {
    VecF32 s[2][4];
    for (int j = 0; j < 4; ++j) {
        const VecF32 m0 = VecF32::load(M + j * xi_stride), m1 = VecF32::load(M + (4 + j) * xi_stride);
        const VecF32 m2 = VecF32::load(M + (8 + j) * xi_stride), m3 = VecF32::load(M + (12 + j) * xi_stride);
        s[0][j] = m0 + m1 + m2;
        s[1][j] = m1 - m2 - m3;
    }
    for (int y = 0; y < 2; ++y) {
        (s[y][0] + s[y][1] + s[y][2]).store(Y + (2 * y) * ld);
        (s[y][1] - s[y][2] - s[y][3]).store(Y + (2 * y + 1) * ld);
    }
}

// The block's pixels (Y[i][k], pixel q = i % 4 = 2 y + x of tile t0 + i / 4)
// into channels [c0, c0 + channels) of image n of out, plus the bias;
// pixels past the output's last row or column are dropped. `offsets` holds
// 8 count elements of scratch.
template <class T>
void write_tiles(const TensorView& out, int64_t n, int64_t c0, int64_t channels, int64_t ld, const float* Y,
                 int64_t t0, int64_t count, int64_t TW, const float* bias, int64_t* offsets) {
    T* base = static_cast<T*>(out.data) + n * out.strides[0] + c0 * out.strides[1];
    const int64_t OH = out.shape[2], OW = out.shape[3], cs = out.strides[1];
    int64_t pixels = 0;
    for (int64_t t = 0; t < count; ++t) {
        const int64_t oh = (t0 + t) / TW * 2, ow = (t0 + t) % TW * 2;
        for (int q = 0; q < 4; ++q)
            if (oh + q / 2 < OH && ow + q % 2 < OW) {
                offsets[2 * pixels] = t * 4 + q;
                offsets[2 * pixels + 1] = (oh + q / 2) * out.strides[2] + (ow + q % 2) * out.strides[3];
                ++pixels;
            }
    }
    if (cs == 1 || channels == 1) {
        for (int64_t i = 0; i < pixels; ++i) {
            const float* src = Y + offsets[2 * i] * ld;
            T* dst = base + offsets[2 * i + 1];
            for (int64_t k = 0; k < channels; ++k) dst[k] = simd::from_float<T>(src[k] + (bias ? bias[k] : 0.0f));
        }
        return;
    }
    // Planar output: one channel at a time, so the stores run along its rows.
    for (int64_t k = 0; k < channels; ++k) {
        const float b = bias ? bias[k] : 0.0f;
        T* dst = base + k * cs;
        for (int64_t i = 0; i < pixels; ++i) dst[offsets[2 * i + 1]] = simd::from_float<T>(Y[offsets[2 * i] * ld + k] + b);
    }
}

template <class T>
void winograd_typed(const WinogradConv& p) {
    const TensorView& xv = p.x;
    const TensorView& ov = p.out;
    const int64_t N = xv.shape[0], C = xv.shape[1], K = ov.shape[1], OH = ov.shape[2], OW = ov.shape[3];
    const int64_t Cg = C / p.groups, Kg = K / p.groups;
    const int64_t Cgp = round_up(Cg, tile::kWidth), Kgp = round_up(Kg, tile::kWidth);
    const int64_t TH = (OH + 1) / 2, TW = (OW + 1) / 2, tiles = TH * TW;

    const FloatBuffer U(p.groups * kXi * Cg * Kgp, true);
    transform_weights<T>(p, Cg, Kg, Kgp, U.get());
    // The padded input covers the whole tile grid: 2 TH + 2 rows of 2 TW + 2 pixels.
    ConvGeometry geo{};
    geo.pad[0] = p.pad_top, geo.pad[1] = p.pad_left, geo.dilation[0] = geo.dilation[1] = 1;
    const PaddedPixels<T> x(xv, 2 * TH, 2 * TW, 3, 3, geo);

    const int64_t Kc = std::min(Kgp, kChannelChunk);
    const int64_t per_tile = kXi * (Cgp + Kc) + 4 * Kgp;
    const int64_t block = std::clamp<int64_t>(kBlockFloats / per_tile / tile::kRows * tile::kRows, tile::kRows, tiles);
    const int64_t blocks = (tiles + block - 1) / block;
    parallel_for(N * p.groups * blocks, 1, [&](int64_t u0, int64_t u1) {
        const FloatBuffer V(kXi * block * Cgp), M(kXi * block * Kc), Y(block * 4 * Kgp);
        std::vector<int64_t> offsets(8 * block);
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / (p.groups * blocks), g = u / blocks % p.groups, t0 = u % blocks * block;
            const int64_t count = std::min(block, tiles - t0);
            const float* image = x.data() + n * x.ns + g * Cg;
            for (int64_t t = 0; t < count; ++t) {
                const int64_t th = (t0 + t) / TW, tw = (t0 + t) % TW;
                const float* patch = image + (2 * th * x.Wp + 2 * tw) * x.C;
                for (int64_t c0 = 0; c0 < Cg; c0 += tile::kWidth)
                    transform_patch(patch + c0, x.C, x.Wp * x.C, static_cast<int>(std::min<int64_t>(tile::kWidth, Cg - c0)),
                                    V.get() + t * Cgp + c0, block * Cgp);
            }
            for (int64_t k0 = 0; k0 < Kgp; k0 += Kc) {
                const int64_t kn = std::min(Kc, Kgp - k0);
                for (int xi = 0; xi < kXi; ++xi)
                    tile::gemm(count, kn, Cg, V.get() + xi * block * Cgp, Cgp, 1,
                               U.get() + (g * kXi + xi) * Cg * Kgp + k0, Kgp, M.get() + xi * block * Kc, Kc, false);
                for (int64_t t = 0; t < count; ++t)
                    for (int64_t v = 0; v < kn; v += tile::kWidth)
                        transform_output(M.get() + t * Kc + v, block * Kc, Y.get() + t * 4 * Kgp + k0 + v, Kgp);
            }
            write_tiles<T>(ov, n, g * Kg, Kg, Kgp, Y.get(), t0, count, TW, p.bias ? p.bias + g * Kg : nullptr,
                           offsets.data());
        }
    });
}

}  // namespace

void winograd_forward(const WinogradConv& p) {
    if (p.x.dtype == DType::bf16) winograd_typed<bf16>(p);
    else winograd_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
