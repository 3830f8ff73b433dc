// Device-side helpers shared by every CUDA kernel family: element loads and
// stores in float32 whatever the storage type, strided offsets, and grid
// sizing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastnn/strided_loop.h"
#include "fastnn/tensor.h"

namespace fastnn::cuda {

template <class T> struct Storage;
template <> struct Storage<float> { using type = float; };
template <> struct Storage<bf16> { using type = __nv_bfloat16; };

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Byte offset of operand `op` at linear index i of the layout's iteration order.
__device__ __forceinline__ int64_t strided_offset(const StridedLayout& layout, int op, int64_t i) {
    int64_t offset = 0;
    for (int d = layout.ndim - 1; d >= 0; --d) {
        const int64_t extent = layout.shape[d];
        offset += (i % extent) * layout.byte_strides[op][d];
        i /= extent;
    }
    return offset;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enough blocks to fill the GPU a few times over; grid-stride loops do the rest.
inline unsigned grid_for(int64_t work_items, int threads_per_block) {
    const int64_t blocks = (work_items + threads_per_block - 1) / threads_per_block;
    return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace fastnn::cuda
