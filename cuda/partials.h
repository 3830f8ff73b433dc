// Deterministic column sums: kernels that reduce over rows (parameter and
// bias gradients) write one float32 partial row per block to a workspace,
// and this adds the blocks' rows in block order, in float64, rounding each
// column once into its output. No atomics, so the result is the same bits on
// every run.
#pragma once

#include <cuda_runtime_api.h>

#include "fastnn/tensor.h"

namespace fastnn::cuda {

// out[j] = sum over b < blocks of partials[b * row_length + offset + j], for
// j < n (out: (n,) float32 or bfloat16, any stride). blocks == 0 writes zeros.
cudaError_t sum_column_partials(const float* partials, int64_t blocks, int64_t row_length, int64_t offset,
                                const TensorView& out, cudaStream_t stream);

}  // namespace fastnn::cuda
