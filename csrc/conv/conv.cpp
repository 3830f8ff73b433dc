#include "fastnn/conv.h"

#include "fastnn/gemm.h"

namespace fastnn {
namespace {

// The (N, P) view of a 4-D (N, C, H, W) tensor's pixels as one dimension,
// channel dimension kept: (N, P, C) with P = H * W, or false when H and W
// cannot merge (rows not W elements apart). NCHW and channels-last both merge.
bool merge_pixels(const TensorView& t, TensorView& out) {
    const int64_t H = t.shape[2], W = t.shape[3];
    if (H > 1 && W > 1 && t.strides[2] != W * t.strides[3]) return false;
    out = t;
    out.ndim = 3;
    out.shape[1] = H * W;
    out.strides[1] = W > 1 ? t.strides[3] : t.strides[2];
    out.shape[2] = t.shape[1];
    out.strides[2] = t.strides[1];
    return true;
}

bool is_pointwise(const ConvGeometry& g, const TensorView& weight) {
    return weight.shape[2] == 1 && weight.shape[3] == 1 && g.groups == 1 && g.stride[0] == 1 && g.stride[1] == 1 &&
           g.pad[0] == 0 && g.pad[1] == 0;
}

// A 1 x 1 convolution with stride 1, no padding and one group is, per image,
//   out^T (pixels x K) = x^T (pixels x C) @ weight^T (C x K) + bias,
// a batched GEMM over the images with the weight broadcast. The convolution
// kernels read channels-last pixels in place (as broadcast rows) but convert
// any other input to channels-last first; the GEMM packs any layout, so it
// takes the planar (NCHW) inputs: N8 C256 K64 56x56, 2 threads: 10.0 ms ->
// 5.9 ms. Channels-last inputs too, except for 64 or fewer output channels,
// where the convolution kernel reads the pixels in place and the GEMM would
// pack all of x for one narrow panel (C256 K64 56x56: 5.2 vs 5.6 ms). Wider
// layers gain: C1024 K256 14x14 5.5 -> 4.1 ms, C2048 K512 7x7 8.0 -> 5.1 ms.
bool pointwise_as_gemm(const ConvParams& p) {
    if (!is_pointwise(p.geo, p.weight) || p.weight.dtype != p.x.dtype) return false;
    if (p.x.strides[1] == 1 && p.weight.shape[0] <= 64) return false;
    GemmParams gp;
    if (!merge_pixels(p.x, gp.a) || !merge_pixels(p.out, gp.c)) return false;
    gp.b = p.weight;  // (K, C, 1, 1) -> (1, C, K): the transpose of its first two dims
    gp.b.ndim = 3;
    gp.b.shape[0] = 1, gp.b.shape[1] = p.weight.shape[1], gp.b.shape[2] = p.weight.shape[0];
    gp.b.strides[0] = 0, gp.b.strides[1] = p.weight.strides[1], gp.b.strides[2] = p.weight.strides[0];
    gp.bias = p.bias;
    gemm(gp);
    return true;
}

// A (rows x cols) matrix view of `t` (any 2 of its dims), batch 1.
TensorView matrix(const TensorView& t, int64_t rows, int64_t row_stride, int64_t cols, int64_t col_stride) {
    TensorView m = t;
    m.ndim = 3;
    m.shape[0] = 1, m.shape[1] = rows, m.shape[2] = cols;
    m.strides[0] = 0, m.strides[1] = row_stride, m.strides[2] = col_stride;
    return m;
}

// The backward of a pointwise convolution is two GEMMs (the kernels' direct
// backward packs dY into a padded frame and sums in 16-term tiles: 0.44-0.75x
// torch at N8 56x56-7x7 where the GEMM runs at its own speed):
//   dX^T (pixels x C) = dY^T (pixels x K) @ W (K x C), batched over images;
//   dW (K x C) = sum over images of dY (K x pixels) @ X^T (pixels x C),
// one GEMM over the pixels of all images where they merge (channels-last),
// else accumulated image by image in float32 C. Returns the params left for
// the kernel (the bias gradient among them).
ConvBackwardParams pointwise_backward_as_gemm(const ConvBackwardParams& p) {
    ConvBackwardParams rest = p;
    if (!is_pointwise(p.geo, p.weight) || p.weight.dtype != p.x.dtype) return rest;
    TensorView x, gy;
    if (!merge_pixels(p.x, x) || !merge_pixels(p.grad_out, gy)) return rest;
    const int64_t N = x.shape[0], P = x.shape[1], C = x.shape[2], K = gy.shape[2];
    const TensorView& w = p.weight;
    TensorView gx;
    if (p.grad_x.data && merge_pixels(p.grad_x, gx)) {
        GemmParams gp;
        gp.a = gy;
        gp.b = matrix(w, K, w.strides[0], C, w.strides[1]);
        gp.c = gx;
        gemm(gp);
        rest.grad_x = {};
    }
    if (p.grad_weight.data) {
        const TensorView& gw = p.grad_weight;
        GemmParams gp;
        gp.c = matrix(gw, K, gw.strides[0], C, gw.strides[1]);
        const bool merged = N == 1 || (x.strides[0] == P * x.strides[1] && gy.strides[0] == P * gy.strides[1]);
        if (merged) {
            gp.a = matrix(gy, K, gy.strides[2], N * P, gy.strides[1]);
            gp.b = matrix(x, N * P, x.strides[1], C, x.strides[2]);
            gemm(gp);
            rest.grad_weight = {};
        } else if (gw.dtype == DType::f32) {
            for (int64_t n = 0; n < N; ++n) {
                gp.a = matrix(gy, K, gy.strides[2], P, gy.strides[1]);
                gp.a.data = static_cast<char*>(gy.data) + n * gy.strides[0] * dtype_size(gy.dtype);
                gp.b = matrix(x, P, x.strides[1], C, x.strides[2]);
                gp.b.data = static_cast<char*>(x.data) + n * x.strides[0] * dtype_size(x.dtype);
                gp.beta = n > 0 ? 1.0f : 0.0f;
                gemm(gp);
            }
            rest.grad_weight = {};
        }
    }
    return rest;
}

// The bias gradient of channels-last dY is a column sum over the pixels of
// all images (channels contiguous, the package's compensated column sum);
// the kernels sum one channel at a time over pixels K floats apart, reading
// each cache line once per channel in it (N8 K256 56x56: ~10 ms).
bool grad_bias_as_column_sum(const ConvBackwardParams& p) {
    TensorView gy;
    if (!p.grad_bias.data || !merge_pixels(p.grad_out, gy) || gy.strides[2] != 1) return false;
    const int64_t N = gy.shape[0], P = gy.shape[1], K = gy.shape[2];
    if (N > 1 && gy.strides[0] != P * gy.strides[1]) return false;
    ColumnSumParams cp;
    cp.x = gy;
    cp.x.ndim = 2;
    cp.x.shape[0] = N * P, cp.x.shape[1] = K;
    cp.x.strides[0] = gy.strides[1], cp.x.strides[1] = 1;
    cp.out = p.grad_bias;
    column_sum(cp);
    return true;
}

}  // namespace

void conv2d_forward(const ConvParams& p) {
    if (pointwise_as_gemm(p)) return;
    FASTNN_SELECT_KERNELS(conv_kernels).forward(p);
}

void conv2d_backward(const ConvBackwardParams& p) {
    ConvBackwardParams rest = pointwise_backward_as_gemm(p);
    if (grad_bias_as_column_sum(p)) rest.grad_bias = {};
    if (rest.grad_x.data || rest.grad_weight.data || rest.grad_bias.data)
        FASTNN_SELECT_KERNELS(conv_kernels).backward(rest);
}

}  // namespace fastnn
