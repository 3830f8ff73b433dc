// What the max and average pooling kernels share (compiled per ISA with
// them): the window geometry along one axis and the work split.
#pragma once

#include <algorithm>
#include <cstdint>

#include "fastnn/pool.h"
#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::pool {

void max_forward(const PoolParams& p);
void max_backward(const PoolBackwardParams& p);
void average_forward(const PoolParams& p);
void average_backward(const PoolBackwardParams& p);

// Channels per unit of work when channels are innermost: 64 floats are 4
// AVX-512 vectors, and the unit's window taps are 256-byte runs.
inline constexpr int64_t kChannelBlock = 64;

struct Geometry {
    int64_t N, C, H, W, OH, OW;
    int64_t cblock, ncb;

    Geometry(const TensorView& in, const TensorView& out, bool channels_inner)
        : N(in.shape[0]), C(in.shape[1]), H(in.shape[2]), W(in.shape[3]), OH(out.shape[2]), OW(out.shape[3]) {
        cblock = channels_inner ? kChannelBlock : 1;
        ncb = (C + cblock - 1) / cblock;
    }
};

// Both views have unit channel stride (channels-last), so a vector runs over
// channels.
inline bool channels_inner(const TensorView& a, const TensorView& b) {
    return a.shape[1] > 1 && a.strides[1] == 1 && b.strides[1] == 1;
}

// The input rows (or columns) one output row reads: begin, end (exclusive),
// step, and for averages the divisor's factor along this axis.
struct Span {
    int64_t begin, end, step, count;
};

inline Span window_span(const PoolWindow& w, int axis, int64_t o, int64_t in, int64_t out) {
    switch (w.kind) {
        case PoolKind::max: {
            const int64_t d = w.dilation[axis];
            int64_t start = o * w.stride[axis] - w.pad[axis];
            const int64_t end = std::min(start + (w.kernel[axis] - 1) * d + 1, in);
            while (start < 0) start += d;
            return {start, end, d, 0};
        }
        case PoolKind::avg: {
            int64_t start = o * w.stride[axis] - w.pad[axis];
            int64_t end = std::min(start + w.kernel[axis], in + w.pad[axis]);
            const int64_t padded = end - start;
            start = std::max<int64_t>(start, 0);
            end = std::min(end, in);
            return {start, end, 1, w.count_include_pad ? padded : end - start};
        }
        case PoolKind::adaptive_avg: {
            const int64_t start = o * in / out, end = ((o + 1) * in + out - 1) / out;
            return {start, end, 1, end - start};
        }
    }
    return {0, 0, 1, 0};
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::pool
