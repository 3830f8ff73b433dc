// 2-D pooling over (N, C, H, W) views with any strides (NCHW and channels-last
// are both just strides), forward and backward, float32 or bfloat16 with
// float32 arithmetic.
//
// Windows follow PyTorch exactly. max: rows oh*stride - pad + i*dilation
// (i < kernel) inside the input; the result is the largest value, NaN if any
// is NaN, and indices (int64, h * W + w, the first maximum) record where it
// was, when asked for (a max without indices, for inference, skips their
// bookkeeping and their 8 bytes per output). avg: rows [oh*stride - pad,
// +kernel) clipped to [0, H + pad) give the padded count, then clipped to
// [0, H); the divisor is divisor_override if > 0, else the padded count
// (count_include_pad) or the clipped count.
// adaptive_avg: rows [floor(oh H / OH), ceil((oh + 1) H / OH)), divided by
// the window size. Output sizes come from the out view (the caller computes
// them, ceil_mode included).
#pragma once

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

enum class PoolKind : uint8_t { max, avg, adaptive_avg };

struct PoolWindow {
    PoolKind kind;
    int64_t kernel[2], stride[2], pad[2], dilation[2];
    bool count_include_pad;
    int64_t divisor_override;  // 0: none
};

struct PoolParams {
    PoolWindow window;
    TensorView x;
    TensorView out;      // written
    TensorView indices;  // max only: written, int64, out's shape; data null: not computed
};

// grad_in is written completely (zeros where no window reads).
struct PoolBackwardParams {
    PoolWindow window;
    TensorView grad_out;
    TensorView indices;  // max only
    TensorView grad_in;  // written, the forward input's shape
};

void pool_forward(const PoolParams& p);
void pool_backward(const PoolBackwardParams& p);

struct PoolKernels {
    void (*forward)(const PoolParams&);
    void (*backward)(const PoolBackwardParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(PoolKernels, pool_kernels)

}  // namespace fastnn
