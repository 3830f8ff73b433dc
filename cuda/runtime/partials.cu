#include "common.cuh"
#include "partials.h"

namespace fastnn::cuda {
namespace {

constexpr int kThreads = 256;

template <class S>
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const float* partials, int64_t blocks, int64_t row_length, int64_t offset, int64_t n,
                        S* out, int64_t out_stride) {
    for (int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x; j < n; j += int64_t(gridDim.x) * kThreads) {
        double sum = 0.0;
        for (int64_t b = 0; b < blocks; ++b) sum += partials[b * row_length + offset + j];
        out[j * out_stride] = from_float<S>(static_cast<float>(sum));
    }
}

template <class T>
cudaError_t launch(const float* partials, int64_t blocks, int64_t row_length, int64_t offset, const TensorView& out,
                   cudaStream_t stream) {
    using S = typename Storage<T>::type;
    const int64_t n = out.shape[0];
    sum_partials_kernel<S><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        partials, blocks, row_length, offset, n, static_cast<S*>(out.data), n > 1 ? out.strides[0] : 1);
    return cudaGetLastError();
}

}  // namespace

cudaError_t sum_column_partials(const float* partials, int64_t blocks, int64_t row_length, int64_t offset,
                                const TensorView& out, cudaStream_t stream) {
    if (out.shape[0] == 0) return cudaSuccess;
    return out.dtype == DType::bf16 ? launch<bf16>(partials, blocks, row_length, offset, out, stream)
                                    : launch<float>(partials, blocks, row_length, offset, out, stream);
}

}  // namespace fastnn::cuda
