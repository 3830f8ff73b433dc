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
// not 9 C, and the transforms add at most 4 (input) and 9 (output) terms.
//
// Data flow per task (image, group, a block of tiles in row-major order): the
// input patches are read from a zero-padded channels-last float copy of x
// and transformed a vector of channels at a time into V[xi][tile][c]; for
// each chunk of 64 output channels, the 16 GEMMs write M[xi][tile][k] and
// the output transform turns them into the tile's four pixels in
// Y[tile][4][k]; then the block's pixels go to `out` with the bias. The block is sized so that
// V, M and Y (~512 KiB) stay in L2 while the transformed weights U (16 C K
// floats, shared by every task) stream from L2/L3 panel by panel.
#include <atomic>
#include <new>
#include <vector>

#include "conv_common.h"
#include "conv_winograd.h"
#include "fastnn/gemm.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::conv {
namespace {

using simd::VecF32;

constexpr int kXi = 16;  // positions in a transformed 4x4 tile
// M holds the 16 GEMMs' results for this many output channels at a time, so
// that it stays small beside V whatever K is.
constexpr int64_t kChannelChunk = 64;
constexpr int64_t kBlockFloats = 128 * 1024;  // V + M + Y of one task: 512 KiB, half of a Zen 4 L2

// U[g][xi][c][k] = (G f G^T)[xi] for the filter f = w(g, k, c), computed in
// double and rounded once; k padded to Kgp with zeros. One task per group
// and 16 x 16 block of (input, output) channels: its taps (9 KiB of
// weights) are gathered in the weights' memory order (the filter's own
// order in the forward pass, the transposed one for dX) into an L1 buffer,
// then transformed along k (G's entries are 0, 1 and 1/2: adds and
// halvings) into whole 64-byte lines of U.
template <class T>
void transform_weights(const WinogradConv& p, int64_t Cg, int64_t Kg, int64_t Kgp, float* U) {
    constexpr int64_t kB = 16;
    const T* w = static_cast<const T*>(p.weight.data);
    const WinogradWeights& s = p.weight;
    const int64_t cblocks = (Cg + kB - 1) / kB, kblocks = (Kg + kB - 1) / kB;
    const int64_t xi_stride = Cg * Kgp;
    parallel_for(p.groups * cblocks * kblocks, 1, [&](int64_t u0, int64_t u1) {
        double taps[kB][9][kB], h[12][kB];
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t g = u / (cblocks * kblocks), c0 = u / kblocks % cblocks * kB, k0 = u % kblocks * kB;
            const int64_t cn = std::min(kB, Cg - c0), kn = std::min(kB, Kg - k0);
            auto gather = [&](int64_t cc, int64_t kk) {
                const T* src = w + g * s.group + (k0 + kk) * s.out + (c0 + cc) * s.in;
                for (int tap = 0; tap < 9; ++tap) taps[cc][tap][kk] = simd::to_float(src[tap / 3 * s.row + tap % 3 * s.col]);
            };
            if (std::abs(s.in) <= std::abs(s.out)) {
                for (int64_t kk = 0; kk < kn; ++kk)
                    for (int64_t cc = 0; cc < cn; ++cc) gather(cc, kk);
            } else {
                for (int64_t cc = 0; cc < cn; ++cc)
                    for (int64_t kk = 0; kk < kn; ++kk) gather(cc, kk);
            }
            for (int64_t cc = 0; cc < cn; ++cc) {
                // G f: rows f0, (f0 + f1 + f2)/2, (f0 - f1 + f2)/2, f2 of each column q.
                for (int q = 0; q < 3; ++q)
                    for (int64_t kk = 0; kk < kn; ++kk) {
                        const double f0 = taps[cc][q][kk], f1 = taps[cc][3 + q][kk], f2 = taps[cc][6 + q][kk];
                        h[q][kk] = f0;
                        h[3 + q][kk] = 0.5 * (f0 + f1 + f2);
                        h[6 + q][kk] = 0.5 * (f0 - f1 + f2);
                        h[9 + q][kk] = f2;
                    }
                // (G f) G^T: the same combination along each row i.
                for (int i = 0; i < 4; ++i) {
                    float* out = U + ((g * kXi + 4 * i) * Cg + c0 + cc) * Kgp + k0;
                    for (int64_t kk = 0; kk < kn; ++kk) {
                        const double h0 = h[3 * i][kk], h1 = h[3 * i + 1][kk], h2 = h[3 * i + 2][kk];
                        out[kk] = static_cast<float>(h0);
                        out[xi_stride + kk] = static_cast<float>(0.5 * (h0 + h1 + h2));
                        out[2 * xi_stride + kk] = static_cast<float>(0.5 * (h0 - h1 + h2));
                        out[3 * xi_stride + kk] = static_cast<float>(h2);
                    }
                    if (k0 + kn == Kg)
                        for (int j = 0; j < 4; ++j) std::fill(out + j * xi_stride + kn, out + j * xi_stride + Kgp - k0, 0.0f);
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

// Tiles per task, counted over the tiles of all images: as many as keep a
// task's buffers (floats_per_tile each) within kBlockFloats (L2), but at
// least 48 where the images hold that many, so that a wide layer's U (16 C K
// floats, read once per block) is reused over enough rows; at most half of
// each thread's share, for balance. A multiple of the micro-tile's rows.
inline int64_t tile_block(int64_t floats_per_tile, int64_t total_tiles) {
    const int64_t share = (total_tiles + 2 * num_threads() - 1) / (2 * num_threads());
    const int64_t block = std::min(std::max<int64_t>(kBlockFloats / floats_per_tile, std::min<int64_t>(48, share)), share);
    return std::min(std::max<int64_t>(tile::kRows, block / tile::kRows * tile::kRows), std::max<int64_t>(total_tiles, 1));
}

// Tile t (counted over the tiles of all images) of the tile grid.
struct TileGrid {
    int64_t tiles, TW;  // tiles per image, tiles per row
    int64_t image(int64_t t) const { return t / tiles; }
    int64_t row(int64_t t) const { return t % tiles / TW; }
    int64_t col(int64_t t) const { return t % TW; }
};

// The block's pixels (Y[i][k], pixel q = i % 4 = 2 y + x of tile t0 + i / 4
// of the grid) into channels [c0, c0 + channels) of out, plus the bias;
// pixels past the output's last row or column are dropped. `offsets` holds
// 8 count elements of scratch.
template <class T>
void write_tiles(const TensorView& out, int64_t c0, int64_t channels, int64_t ld, const float* Y, int64_t t0,
                 int64_t count, const TileGrid& grid, const float* bias, int64_t* offsets) {
    T* base = static_cast<T*>(out.data) + c0 * out.strides[1];
    const int64_t OH = out.shape[2], OW = out.shape[3], cs = out.strides[1];
    if (cs == 1 || channels == 1) {
        int64_t pixels = 0;
        for (int64_t t = 0; t < count; ++t) {
            const int64_t n = grid.image(t0 + t), oh = 2 * grid.row(t0 + t), ow = 2 * grid.col(t0 + t);
            for (int q = 0; q < 4; ++q)
                if (oh + q / 2 < OH && ow + q % 2 < OW) {
                    offsets[2 * pixels] = t * 4 + q;
                    offsets[2 * pixels + 1] =
                        n * out.strides[0] + (oh + q / 2) * out.strides[2] + (ow + q % 2) * out.strides[3];
                    ++pixels;
                }
        }
        for (int64_t i = 0; i < pixels; ++i) {
            const float* src = Y + offsets[2 * i] * ld;
            T* dst = base + offsets[2 * i + 1];
            for (int64_t k = 0; k < channels; ++k) dst[k] = simd::from_float<T>(src[k] + (bias ? bias[k] : 0.0f));
        }
        return;
    }
    // Planar output: each output row's run of pixels (the tiles of one tile
    // row, y = 0 or 1) transposed; `offsets` holds the run's Y rows.
    for (int64_t ta = 0; ta < count;) {
        const int64_t n = grid.image(t0 + ta), row = grid.row(t0 + ta);
        int64_t tb = ta + 1;
        while (tb < count && grid.image(t0 + tb) == n && grid.row(t0 + tb) == row) ++tb;
        const int64_t ow0 = 2 * grid.col(t0 + ta);
        for (int y = 0; y < 2 && 2 * row + y < OH; ++y) {
            int64_t run = 0;
            for (int64_t t = ta; t < tb; ++t)
                for (int x = 0; x < 2; ++x)
                    if (2 * grid.col(t0 + t) + x < OW) offsets[run++] = t * 4 + 2 * y + x;
            rows_to_planar([&](int64_t w) { return Y + offsets[w] * ld; }, channels, run, bias,
                           base + n * out.strides[0] + (2 * row + y) * out.strides[2] + ow0 * out.strides[3], cs,
                           out.strides[3]);
        }
        ta = tb;
    }
}

// The 2x2 output gradient dy (pixel (y, x) at dy + y * row + x * ld) of one
// tile as the 4x4 A dy A^T that meets (B^T d B) in the weight gradient,
// stored at W + xi * xi_stride (all `width` lanes: those past n are zeros);
// A = [1 0; 1 1; 1 -1; 0 -1].
inline void transform_grad_tile(const float* dy, int64_t ld, int64_t row, int n, float* W, int64_t xi_stride) {
    VecF32 a[4][2];
    for (int x = 0; x < 2; ++x) {
        const VecF32 top = VecF32::load_partial(dy + x * ld, n), bottom = VecF32::load_partial(dy + row + x * ld, n);
        a[0][x] = top, a[1][x] = top + bottom, a[2][x] = top - bottom, a[3][x] = VecF32::zero() - bottom;
    }
    for (int i = 0; i < 4; ++i) {
        const VecF32 v[4] = {a[i][0], a[i][0] + a[i][1], a[i][0] - a[i][1], VecF32::zero() - a[i][1]};
        for (int j = 0; j < 4; ++j) v[j].store(W + (i * 4 + j) * xi_stride);
    }
}

// V[xi][t - t0][c] (V + xi * xi_stride + (t - t0) * ld + c) for tiles
// [t0, t0 + count) of group g; x is the padded input of the tile grid.
template <class T>
void transform_inputs(const PaddedPixels<T>& x, const TileGrid& grid, int64_t g, int64_t Cg, int64_t t0, int64_t count,
                      float* V, int64_t ld, int64_t xi_stride) {
    for (int64_t t = t0; t < t0 + count; ++t) {
        const float* patch =
            x.data() + grid.image(t) * x.ns + (2 * grid.row(t) * x.Wp + 2 * grid.col(t)) * x.C + g * Cg;
        for (int64_t c0 = 0; c0 < Cg; c0 += tile::kWidth)
            transform_patch(patch + c0, x.C, x.Wp * x.C, static_cast<int>(std::min<int64_t>(tile::kWidth, Cg - c0)),
                            V + (t - t0) * ld + c0, xi_stride);
    }
}

// D[xi][t - t0][k] likewise from the output gradient's 2x2 tiles (all Kgp
// lanes written, zeros past Kg).
template <class T>
void transform_grads(const PaddedPixels<T>& dy, const TileGrid& grid, int64_t g, int64_t Kg, int64_t Kgp, int64_t t0,
                     int64_t count, float* D, int64_t ld, int64_t xi_stride) {
    for (int64_t t = t0; t < t0 + count; ++t) {
        const float* grad =
            dy.data() + grid.image(t) * dy.ns + (2 * grid.row(t) * dy.Wp + 2 * grid.col(t)) * dy.C + g * Kg;
        for (int64_t k0 = 0; k0 < Kgp; k0 += tile::kWidth)
            transform_grad_tile(grad + k0, dy.C, dy.Wp * dy.C, static_cast<int>(std::clamp<int64_t>(Kg - k0, 0, tile::kWidth)),
                                D + (t - t0) * ld + k0, xi_stride);
    }
}

// c_xi (M x N, row stride ldc) (+)= a_xi (M x K) @ b_xi (K x N, row stride
// ldb) for the 16 xi, on the package's GEMM (packed panels, cache blocking,
// threads over the batch and the matrix); a_xi's element (m, k) is at
// a + xi * a_batch + m * a_m + k * a_k. Called outside any parallel region.
void gemm16(int64_t M, int64_t N, int64_t K, const float* a, int64_t a_batch, int64_t a_m, int64_t a_k, const float* b,
            int64_t b_batch, int64_t ldb, float* c, int64_t c_batch, int64_t ldc, bool accumulate) {
    auto view = [](const float* data, int64_t rows, int64_t cols, int64_t batch, int64_t row_stride, int64_t col_stride) {
        TensorView t;
        t.data = const_cast<float*>(data);
        t.dtype = DType::f32;
        t.ndim = 3;
        t.shape[0] = kXi, t.shape[1] = rows, t.shape[2] = cols;
        t.strides[0] = batch, t.strides[1] = row_stride, t.strides[2] = col_stride;
        return t;
    };
    GemmParams gp;
    gp.a = view(a, M, K, a_batch, a_m, a_k);
    gp.b = view(b, K, N, b_batch, ldb, 1);
    gp.c = view(c, M, N, c_batch, ldc, 1);
    gp.beta = accumulate ? 1.0f : 0.0f;
    gemm(gp);
}

// Wide layers (C, K >= ~200): a tile's V and M outgrow the L2 budget, so a
// fused block would hold too few tiles to reuse each U_xi panel. They
// transform every tile of a chunk first (up to kWholeFloats of V and M, in
// L3 or memory) and run the 16 products over all of them on the package's
// GEMM.
constexpr int64_t kWholeFloats = 16 * 1024 * 1024;

inline bool wide_layer(int64_t Cgp, int64_t Kgp) {
    return kBlockFloats / (kXi * (Cgp + std::min(Kgp, kChannelChunk)) + 4 * Kgp) < 24;
}

inline int64_t whole_chunk(int64_t Cgp, int64_t Kgp, int64_t total_tiles) {
    return std::clamp<int64_t>(kWholeFloats / (kXi * (Cgp + Kgp)), tile::kRows, std::max<int64_t>(total_tiles, 1));
}

// The sizes of a convolution from its input (N, C, H, W) and output
// (N, K, OH, OW), and its grid of 2x2 output tiles.
struct Problem {
    int64_t Cg, Kg, Cgp, Kgp, TH, TW;
    TileGrid grid;
    int64_t total;  // tiles of all images

    Problem(const TensorView& in, const TensorView& out, int64_t groups)
        : Cg(in.shape[1] / groups), Kg(out.shape[1] / groups), Cgp(round_up(Cg, tile::kWidth)),
          Kgp(round_up(Kg, tile::kWidth)), TH((out.shape[2] + 1) / 2), TW((out.shape[3] + 1) / 2),
          grid{TH * TW, TW}, total(in.shape[0] * TH * TW) {}

    // x zero-padded (top/left as given) over the whole tile grid: 2 TH + 2
    // rows of 2 TW + 2 pixels.
    template <class T>
    PaddedPixels<T> padded_input(const TensorView& x, int64_t pad_top, int64_t pad_left) const {
        ConvGeometry geo{};
        geo.pad[0] = pad_top, geo.pad[1] = pad_left, geo.dilation[0] = geo.dilation[1] = 1;
        return PaddedPixels<T>(x, 2 * TH, 2 * TW, 3, 3, geo);
    }
};

template <class T>
void winograd_typed(const WinogradConv& p) {
    const TensorView& ov = p.out;
    const Problem z(p.x, ov, p.groups);
    const int64_t Cg = z.Cg, Kg = z.Kg, Cgp = z.Cgp, Kgp = z.Kgp, total = z.total;
    const TileGrid& grid = z.grid;

    float* U = conv_workspace(WorkspaceSlot::conv_weights, p.groups * kXi * Cg * Kgp);
    transform_weights<T>(p, Cg, Kg, Kgp, U);
    const PaddedPixels<T> x = z.padded_input<T>(p.x, p.pad_top, p.pad_left);
    auto bias_of = [&](int64_t g) { return p.bias ? p.bias + g * Kg : nullptr; };

    if (wide_layer(Cgp, Kgp)) {
        const int64_t chunk = whole_chunk(Cgp, Kgp, total);
        float* V = conv_workspace(WorkspaceSlot::conv_tiles, kXi * chunk * (Cgp + Kgp));
        float* M = V + kXi * chunk * Cgp;
        constexpr int64_t kWriteBlock = 32;
        std::atomic<bool> out_of_memory{false};
        for (int64_t g = 0; g < p.groups; ++g)
            for (int64_t t0 = 0; t0 < total; t0 += chunk) {
                const int64_t count = std::min(chunk, total - t0);
                parallel_for(count, 8, [&](int64_t a, int64_t b) {
                    transform_inputs(x, grid, g, Cg, t0 + a, b - a, V + a * Cgp, Cgp, chunk * Cgp);
                });
                gemm16(count, Kgp, Cg, V, chunk * Cgp, Cgp, 1, U + g * kXi * Cg * Kgp, Cg * Kgp, Kgp, M, chunk * Kgp, Kgp,
                       false);
                parallel_for((count + kWriteBlock - 1) / kWriteBlock, 1, [&](int64_t b0, int64_t b1) {
                    float* Y = thread_workspace<float>(WorkspaceSlot::conv_block, kWriteBlock * 4 * Kgp);
                    if (!Y) {
                        out_of_memory = true;
                        return;
                    }
                    int64_t offsets[8 * kWriteBlock];
                    for (int64_t b = b0; b < b1; ++b) {
                        const int64_t s0 = b * kWriteBlock, n = std::min(kWriteBlock, count - s0);
                        for (int64_t t = 0; t < n; ++t)
                            for (int64_t v = 0; v < Kgp; v += tile::kWidth)
                                transform_output(M + (s0 + t) * Kgp + v, chunk * Kgp, Y + t * 4 * Kgp + v, Kgp);
                        write_tiles<T>(ov, g * Kg, Kg, Kgp, Y, t0 + s0, n, grid, bias_of(g), offsets);
                    }
                });
            }
        if (out_of_memory) throw std::bad_alloc();
        return;
    }

    const int64_t Kc = std::min(Kgp, kChannelChunk);
    const int64_t block = tile_block(kXi * (Cgp + Kc) + 4 * Kgp, total);
    const int64_t blocks = (total + block - 1) / block;
    std::atomic<bool> out_of_memory{false};
    parallel_for(p.groups * blocks, 1, [&](int64_t u0, int64_t u1) {
        float* V = thread_workspace<float>(WorkspaceSlot::conv_block, kXi * block * (Cgp + Kc) + 4 * block * Kgp);
        if (!V) {
            out_of_memory = true;
            return;
        }
        float* M = V + kXi * block * Cgp;
        float* Y = M + kXi * block * Kc;
        std::vector<int64_t> offsets(8 * block);
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t g = u / blocks, t0 = u % blocks * block, count = std::min(block, total - t0);
            transform_inputs(x, grid, g, Cg, t0, count, V, Cgp, block * Cgp);
            for (int64_t k0 = 0; k0 < Kgp; k0 += Kc) {
                const int64_t kn = std::min(Kc, Kgp - k0);
                for (int xi = 0; xi < kXi; ++xi)
                    tile::gemm(count, kn, Cg, V + xi * block * Cgp, Cgp, 1, U + (g * kXi + xi) * Cg * Kgp + k0, Kgp,
                               M + xi * block * Kc, Kc, false, 1.0f, tile::kLongChunk);
                for (int64_t t = 0; t < count; ++t)
                    for (int64_t v = 0; v < kn; v += tile::kWidth)
                        transform_output(M + t * Kc + v, block * Kc, Y + t * 4 * Kgp + k0 + v, Kgp);
            }
            write_tiles<T>(ov, g * Kg, Kg, Kgp, Y, t0, count, grid, bias_of(g), offsets.data());
        }
    });
    if (out_of_memory) throw std::bad_alloc();
}

// grad_weight from Z[g][xi][c][k] summed over `splits` copies (z_size floats
// apart) in split order: dW = G^T Z G in double. One task per (group, input
// channel): its 16 rows Z[xi][c][0 .. Kg) are contiguous, so the split sums
// and the transform run along k in vectorizable loops (walking k per c, as
// the first version did, read every value with a stride of Kgp floats: two
// thirds as long as the weight gradient's GEMMs at C256 K256 14x14).
template <class T>
void write_grad_weight(const WinogradGradWeight& p, int64_t Cg, int64_t Kg, int64_t Kgp, const float* Z, int64_t splits,
                       int64_t z_size) {
    T* gw = static_cast<T*>(p.grad_weight.data);
    const TensorView& wv = p.grad_weight;
    parallel_for(p.groups * Cg, 1, [&](int64_t u0, int64_t u1) {
        std::vector<double> z(static_cast<size_t>(kXi * Kg)), zg(static_cast<size_t>(12 * Kg));
        std::vector<float> out(static_cast<size_t>(9 * Kg));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t g = u / Cg, c = u % Cg;
            for (int xi = 0; xi < kXi; ++xi) {
                double* zx = z.data() + xi * Kg;
                const float* src = Z + ((g * kXi + xi) * Cg + c) * Kgp;
                for (int64_t k = 0; k < Kg; ++k) zx[k] = src[k];
                for (int64_t split = 1; split < splits; ++split)
                    for (int64_t k = 0; k < Kg; ++k) zx[k] += src[split * z_size + k];
            }
            // Z G: per row i, columns (z0 + z1 + z2) / 2 ... with G^T's rows
            // (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1).
            for (int i = 0; i < 4; ++i) {
                const double *z0 = z.data() + (4 * i) * Kg, *z1 = z0 + Kg, *z2 = z1 + Kg, *z3 = z2 + Kg;
                double *h0 = zg.data() + (3 * i) * Kg, *h1 = h0 + Kg, *h2 = h1 + Kg;
                for (int64_t k = 0; k < Kg; ++k) {
                    const double m = 0.5 * (z1[k] + z2[k]);
                    h0[k] = z0[k] + m;
                    h1[k] = 0.5 * (z1[k] - z2[k]);
                    h2[k] = m + z3[k];
                }
            }
            // G^T (Z G): the same combination down each column s.
            for (int s = 0; s < 3; ++s) {
                const double *h0 = zg.data() + s * Kg, *h1 = h0 + 3 * Kg, *h2 = h1 + 3 * Kg, *h3 = h2 + 3 * Kg;
                float *r0 = out.data() + s * Kg, *r1 = r0 + 3 * Kg, *r2 = r1 + 3 * Kg;
                for (int64_t k = 0; k < Kg; ++k) {
                    const double m = 0.5 * (h1[k] + h2[k]);
                    r0[k] = static_cast<float>(h0[k] + m);
                    r1[k] = static_cast<float>(0.5 * (h1[k] - h2[k]));
                    r2[k] = static_cast<float>(m + h3[k]);
                }
            }
            for (int64_t k = 0; k < Kg; ++k) {
                T* to = gw + (g * Kg + k) * wv.strides[0] + c * wv.strides[1];
                for (int r = 0; r < 3; ++r)
                    for (int s = 0; s < 3; ++s)
                        to[r * wv.strides[2] + s * wv.strides[3]] = simd::from_float<T>(out[(3 * r + s) * Kg + k]);
            }
        }
    });
}

// Weight gradient: Y is linear in the filter f, so
//   dL/df = G^T [ sum over tiles (A dy A^T) . (B^T d B) ] G,
// 16 GEMMs Z_xi[c][k] = sum_tiles V_xi[tile][c] D_xi[tile][k] whose
// reduction runs over every tile of every image. Fused: each thread sums a
// contiguous range of tile blocks into its own Z; the copies are added in a
// fixed order (deterministic for a thread count). Wide layers: the tiles of
// a chunk at once on the package's GEMM, one Z.
template <class T>
void grad_weight_typed(const WinogradGradWeight& p) {
    const Problem z(p.x, p.grad_out, p.groups);
    const int64_t Cg = z.Cg, Kg = z.Kg, Cgp = z.Cgp, Kgp = z.Kgp, total = z.total;
    const TileGrid& grid = z.grid;
    const PaddedPixels<T> x = z.padded_input<T>(p.x, p.pad_top, p.pad_left);
    // dY as channels-last float pixels over the whole tile grid (zeros past OH, OW).
    const PaddedPixels<T> dy(p.grad_out, 2 * z.TH, 2 * z.TW, 1, 1, ConvGeometry{}, WorkspaceSlot::conv_grad);
    const int64_t z_size = p.groups * kXi * Cg * Kgp;

    if (wide_layer(Cgp, Kgp)) {
        const int64_t chunk = whole_chunk(Cgp, Kgp, total);
        float* Z = conv_workspace(WorkspaceSlot::conv_tiles, z_size + kXi * chunk * (Cgp + Kgp));
        float* V = Z + z_size;
        float* D = V + kXi * chunk * Cgp;
        for (int64_t g = 0; g < p.groups; ++g)
            for (int64_t t0 = 0; t0 < total; t0 += chunk) {
                const int64_t count = std::min(chunk, total - t0);
                parallel_for(count, 8, [&](int64_t a, int64_t b) {
                    transform_inputs(x, grid, g, Cg, t0 + a, b - a, V + a * Cgp, Cgp, chunk * Cgp);
                    transform_grads(dy, grid, g, Kg, Kgp, t0 + a, b - a, D + a * Kgp, Kgp, chunk * Kgp);
                });
                gemm16(Cg, Kgp, count, V, chunk * Cgp, 1, Cgp, D, chunk * Kgp, Kgp, Z + g * kXi * Cg * Kgp, Cg * Kgp,
                       Kgp, t0 > 0);
            }
        write_grad_weight<T>(p, Cg, Kg, Kgp, Z, 1, z_size);
        return;
    }

    // Each block's GEMMs make one pass over Z (Cg x Kgp per xi): the blocks
    // are 4x longer than the forward's.
    const int64_t block = tile_block(kXi * (Cgp + Kgp) / 4, total);
    const int64_t units = (total + block - 1) / block;
    const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(num_threads(), units));
    float* partial = conv_workspace(WorkspaceSlot::conv_tiles, splits * z_size);
    std::atomic<bool> out_of_memory{false};
    parallel_for(splits, 1, [&](int64_t s0, int64_t s1) {
        float* V = thread_workspace<float>(WorkspaceSlot::conv_block, kXi * block * (Cgp + Kgp));
        if (!V) {
            out_of_memory = true;
            return;
        }
        float* D = V + kXi * block * Cgp;
        for (int64_t split = s0; split < s1; ++split) {
            float* Z = partial + split * z_size;
            std::fill_n(Z, z_size, 0.0f);
            for (int64_t u = units * split / splits; u < units * (split + 1) / splits; ++u) {
                const int64_t t0 = u * block, count = std::min(block, total - t0);
                for (int64_t g = 0; g < p.groups; ++g) {
                    transform_inputs(x, grid, g, Cg, t0, count, V, Cgp, block * Cgp);
                    transform_grads(dy, grid, g, Kg, Kgp, t0, count, D, Kgp, block * Kgp);
                    for (int xi = 0; xi < kXi; ++xi)
                        tile::gemm(Cg, Kgp, count, V + xi * block * Cgp, 1, Cgp, D + xi * block * Kgp, Kgp,
                                   Z + (g * kXi + xi) * Cg * Kgp, Kgp, true);
                }
            }
        }
    });
    if (out_of_memory) throw std::bad_alloc();
    write_grad_weight<T>(p, Cg, Kg, Kgp, partial, splits, z_size);
}

}  // namespace

void winograd_forward(const WinogradConv& p) {
    if (p.x.dtype == DType::bf16) winograd_typed<bf16>(p);
    else winograd_typed<float>(p);
}

void winograd_grad_weight(const WinogradGradWeight& p) {
    if (p.x.dtype == DType::bf16) grad_weight_typed<bf16>(p);
    else grad_weight_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::conv
