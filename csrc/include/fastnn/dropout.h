// Dropout with a counter-based generator (Philox4x32-10; Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011). Whether element i
// (its row-major index in the logical shape, whatever the strides) is kept is
// a pure function of (seed, offset, i), so the mask is the same for any
// thread count, ISA or memory layout, and the backward regenerates it instead
// of storing it:
//   counter = (c mod 2^32, c >> 32, offset mod 2^32, offset >> 32),
//             c = 16 floor(i / 64) + i mod 16;  key = (seed mod 2^32, seed >> 32)
//   r = word (i / 16) mod 4 of philox4x32_10(counter, key)
//   keep  <=>  (r >> 8) < round((1 - p) 2^24)
//   y = x * (keep ? 1 / (1 - p) : 0)   (so inf or NaN dropped gives NaN, as PyTorch)
// Blocks of 64 elements take 16 consecutive counters and the 4 words of each,
// which maps onto 16-lane (or 2 x 8-lane) vectors with no shuffles.
#pragma once

#include <cstdint>

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

// Forward (x -> y) and backward (grad_out -> grad_in) are the same map.
struct DropoutParams {
    TensorView x;
    TensorView y;  // written; may be x itself
    double p;      // in [0, 1]
    uint64_t seed;
    uint64_t offset;
};

void dropout_apply(const DropoutParams& p);

// What every implementation derives from DropoutParams before generating: the
// Philox key and counter high words, the keep threshold and the scale.
struct DropoutStream {
    uint32_t key[2], offset[2];
    uint32_t threshold;  // keep when (r >> 8) < threshold, in [0, 2^24]
    float scale;         // 1/(1-p) rounded once from double, as PyTorch's scalar; unused when p = 1
};

inline DropoutStream dropout_stream(const DropoutParams& p) {
    const double keep = 1.0 - p.p;
    return {{static_cast<uint32_t>(p.seed), static_cast<uint32_t>(p.seed >> 32)},
            {static_cast<uint32_t>(p.offset), static_cast<uint32_t>(p.offset >> 32)},
            static_cast<uint32_t>(keep * 16777216.0 + 0.5),
            keep > 0.0 ? static_cast<float>(1.0 / keep) : 0.0f};
}

struct DropoutKernels {
    void (*apply)(const DropoutParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(DropoutKernels, dropout_kernels)

}  // namespace fastnn
