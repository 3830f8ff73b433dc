// CUDA GEMM contract, free of nanobind and torch. For each batch index b,
//     C[b] = act(alpha * A[b] @ B[b] + beta * C[b] + bias)
// A (batch, M, K), B (batch, K, N), C (batch, M, N), strides in elements, so a
// transposed operand is a view (unit stride on the other dimension) and a
// batch stride of 0 broadcasts one matrix over the batch. Inputs bf16, fp16 or
// fp32 (A and B of one dtype), accumulation always fp32; fp32 inputs run
// either strict fp32 (SIMT FMA) or, with allow_tf32, on the tensor cores with
// operands rounded to tf32. C is fp32, bf16 or fp16, rounded once. beta == 0
// never reads C, so NaN in C has no effect; K == 0 gives act(beta * C + bias).
//
// int8: out = A (M, K) int8 @ B (K, N) int8 accumulated exactly in int32.
// Without row_scale, out is that int32 product (bit-identical to
// torch._int_mm); with it, out[m, n] = act(float(acc) * row_scale[m] *
// col_scale[n] + bias[n]) in fp32, rounded once to fp32 or bf16.
//
// Launchers enqueue on the caller's stream, never synchronize, and return the
// launch status. The binding layer has validated shapes, dtypes, devices and
// aliasing (C overlaps nothing it reads except itself through beta). Every
// operand needs a unit stride on one of its two matrix dimensions for the
// tensor-core paths; float operands without one take the SIMT path, int8
// operands without one are refused (cudaErrorInvalidValue).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fastnn/tensor.h"

namespace fastnn::cuda {

// Same formulas as torch.nn.functional: relu, gelu (erf), gelu (tanh
// approximation), silu.
enum class GemmActivation : uint8_t { none, relu, gelu_erf, gelu_tanh, silu };

struct GemmParams {
    TensorView a;     // (batch, M, K) bf16, fp16 or fp32
    TensorView b;     // (batch, K, N), A's dtype
    TensorView c;     // (batch, M, N) fp32, bf16 or fp16, written (read too when beta != 0)
    TensorView bias;  // (N,) fp32 or C's dtype, any stride; data == nullptr when absent
    float alpha = 1.0f;
    float beta = 0.0f;
    GemmActivation activation = GemmActivation::none;
    bool allow_tf32 = false;  // fp32 inputs only: tensor cores with tf32 operands
};

// |sum_k a_k b_k| <= 128 * 128 * K fits int32 for K <= 131071.
inline constexpr int64_t kInt8GemmMaxK = 131071;

struct Int8GemmParams {
    TensorView a;          // (M, K) int8
    TensorView b;          // (K, N) int8
    TensorView row_scale;  // (M,) fp32, or data == nullptr for the int32 product
    TensorView col_scale;  // (N,) fp32 (with row_scale)
    TensorView bias;       // (N,) fp32, or data == nullptr (with row_scale)
    TensorView out;        // (M, N) int32, or fp32 / bf16 with row_scale; written
    GemmActivation activation = GemmActivation::none;  // with row_scale
};

cudaError_t gemm(const GemmParams& p, cudaStream_t stream);
cudaError_t int8_gemm(const Int8GemmParams& p, cudaStream_t stream);

}  // namespace fastnn::cuda
