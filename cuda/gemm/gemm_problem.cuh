// What every GEMM kernel reads: the problem normalized once on the host
// (gemm.cu) into a plain struct passed by value, and the fused epilogue.
//
// Both operands are described the same way, as an (MN, K) matrix: A is
// (M, K) and B is viewed as (N, K). An operand is "K-major" when its unit
// stride is along K (A row-major, B column-major: the mma.sync "row.col" order)
// and "MN-major" otherwise. Elements are at data + b * batch_stride +
// mn * stride_mn + k * stride_k; offsets are 64-bit, sizes fit int32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastnn/tensor.h"
#include "fastnn_cuda/gemm.h"

namespace fastnn::cuda::gemm_detail {

enum class Layout : uint8_t { k_major, mn_major, strided };

struct Operand {
    const void* data;
    int64_t stride_mn, stride_k, batch_stride;
    Layout layout;
    bool vec16;  // data, leading and batch strides all allow 16-byte chunks
};

struct Output {
    void* data;
    DType dtype;
    int64_t stride_m, stride_n, batch_stride;
    bool pairs;  // unit stride along N and two-element alignment everywhere
};

struct Epilogue {
    float alpha, beta;
    const void* bias;  // nullptr when absent
    DType bias_dtype;
    int64_t bias_stride;
    const float* row_scale;  // int8 dequantization; nullptr otherwise
    const float* col_scale;
    int64_t row_scale_stride, col_scale_stride;
    GemmActivation activation;
};

struct Problem {
    Operand a, b;
    Output c;
    Epilogue ep;
    int m, n, k, batch;
};

// Host-side kernel entry points (one per path), each for one input dtype.
enum class Math : uint8_t { bf16, f16, tf32, s8 };
cudaError_t launch_sm80(const Problem& p, Math math, cudaStream_t stream);
cudaError_t launch_simt(const Problem& p, DType input, cudaStream_t stream);
// True when this build holds the sm_90a kernels and they accept p.
bool sm90_available();
bool sm90_accepts(const Problem& p, Math math);
cudaError_t launch_sm90(const Problem& p, Math math, int multiprocessors, cudaStream_t stream);

#ifdef __CUDACC__

__device__ __forceinline__ float load_float(const void* base, DType dtype, int64_t index) {
    switch (dtype) {
        case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]);
        case DType::f16: return __half2float(static_cast<const __half*>(base)[index]);
        default: return static_cast<const float*>(base)[index];
    }
}

__device__ __forceinline__ float activate(float v, GemmActivation act) {
    switch (act) {
        case GemmActivation::relu: return v > 0.0f || v != v ? v : 0.0f;  // NaN propagates, as in torch
        case GemmActivation::gelu_erf: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        case GemmActivation::gelu_tanh: {
            const float inner = 0.79788456080286536f * (v + 0.044715f * v * v * v);
            return 0.5f * v * (1.0f + tanhf(inner));
        }
        case GemmActivation::silu: return v / (1.0f + expf(-v));
        default: return v;
    }
}

// Everything after the product, for one element of C. Integer accumulators
// arrive here only when they are to be dequantized.
__device__ __forceinline__ float epilogue_value(const Problem& p, int batch, int m, int n, float acc) {
    const Epilogue& ep = p.ep;
    float v;
    if (ep.row_scale != nullptr) {
        v = acc * ep.row_scale[m * ep.row_scale_stride] * ep.col_scale[n * ep.col_scale_stride];
    } else {
        v = ep.alpha * acc;
        if (ep.beta != 0.0f)
            v += ep.beta * load_float(p.c.data, p.c.dtype,
                                      batch * p.c.batch_stride + m * p.c.stride_m + n * p.c.stride_n);
    }
    if (ep.bias != nullptr) v += load_float(ep.bias, ep.bias_dtype, n * ep.bias_stride);
    return activate(v, ep.activation);
}

__device__ __forceinline__ void store_one(const Output& c, int64_t offset, float v) {
    switch (c.dtype) {
        case DType::bf16: static_cast<__nv_bfloat16*>(c.data)[offset] = __float2bfloat16_rn(v); break;
        case DType::f16: static_cast<__half*>(c.data)[offset] = __float2half_rn(v); break;
        default: static_cast<float*>(c.data)[offset] = v; break;
    }
}

// Two adjacent columns (n, n + 1) of one row, both inside C; one store when
// the output allows pairs.
__device__ __forceinline__ void store_pair(const Output& c, int64_t offset, float v0, float v1) {
    switch (c.dtype) {
        case DType::bf16:
            *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(c.data) + offset) =
                __floats2bfloat162_rn(v0, v1);
            break;
        case DType::f16:
            *reinterpret_cast<__half2*>(static_cast<__half*>(c.data) + offset) = __floats2half2_rn(v0, v1);
            break;
        default: *reinterpret_cast<float2*>(static_cast<float*>(c.data) + offset) = make_float2(v0, v1); break;
    }
}

// Epilogue for the accumulator pair (row m, columns n and n + 1) that every
// mma.sync / wgmma fragment holds. Columns past N and rows past M are skipped.
template <class Acc>
__device__ __forceinline__ void epilogue_pair(const Problem& p, int batch, int m, int n, Acc acc0, Acc acc1) {
    if (m >= p.m || n >= p.n) return;
    const Output& c = p.c;
    const int64_t offset = batch * c.batch_stride + m * c.stride_m + n * c.stride_n;
    const bool both = n + 1 < p.n;
    if (c.dtype == DType::i32) {  // the raw int8 product: exact, no epilogue
        int* out = static_cast<int*>(c.data);
        if (both && c.pairs) {
            *reinterpret_cast<int2*>(out + offset) = make_int2(int(acc0), int(acc1));
        } else {
            out[offset] = int(acc0);
            if (both) out[offset + c.stride_n] = int(acc1);
        }
        return;
    }
    const float v0 = epilogue_value(p, batch, m, n, float(acc0));
    if (!both) {
        store_one(c, offset, v0);
        return;
    }
    const float v1 = epilogue_value(p, batch, m, n + 1, float(acc1));
    if (c.pairs) {
        store_pair(c, offset, v0, v1);
    } else {
        store_one(c, offset, v0);
        store_one(c, offset + c.stride_n, v1);
    }
}

// Tiles in groups of 8 rows of tiles, column by column within a group, so
// concurrently running blocks share A and B panels in L2.
__device__ __forceinline__ void tile_coords(int tile, int tiles_m, int tiles_n, int* tm, int* tn) {
    constexpr int kGroup = 8;
    const int per_group = kGroup * tiles_n;
    const int first_m = (tile / per_group) * kGroup;
    const int rows = min(tiles_m - first_m, kGroup);
    const int in_group = tile % per_group;
    *tm = first_m + in_group % rows;
    *tn = in_group / rows;
}

#endif  // __CUDACC__

}  // namespace fastnn::cuda::gemm_detail
