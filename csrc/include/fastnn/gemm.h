// GEMM contract: for each batch index b,
//     C[b] = act(alpha * A[b] @ B[b] + beta * C[b] + bias)
// A (batch, M, K), B (batch, K, N), C (batch, M, N), all float32, or A and B
// bfloat16 with C float32 or bfloat16. Any strides: a transposed operand is a
// view whose unit stride is on the other dimension, and a batch stride may be
// 0 (one matrix broadcast over the batch). Arithmetic is float32 with float32
// accumulation; C is rounded once. beta == 0 never reads C (NaN in C has no
// effect). K == 0 gives act(beta * C + bias). The binding layer has validated
// shapes, dtypes and aliasing (C overlaps neither A, B nor bias).
#pragma once

#include <cstdint>

#include "fastnn/cpu_features.h"
#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

// Same formulas as torch.nn.functional: relu, gelu (erf), gelu (tanh
// approximation), silu.
enum class GemmActivation : uint8_t { none, relu, gelu_erf, gelu_tanh, silu };

struct GemmParams {
    TensorView a;     // (batch, M, K)
    TensorView b;     // (batch, K, N)
    TensorView c;     // (batch, M, N), written
    TensorView bias;  // (N,) float32 or A's dtype, any stride; data == nullptr when absent
    float alpha = 1.0f;
    float beta = 0.0f;
    GemmActivation activation = GemmActivation::none;
};

// out[j] = sum_i x[i, j] in float32 (the bias gradient of a linear layer).
// x (rows, N) float32 or bfloat16, out (N,) float32 or x's dtype; any strides.
struct ColumnSumParams {
    TensorView x;
    TensorView out;  // written
};

void gemm(const GemmParams& p);
void column_sum(const ColumnSumParams& p);

// What each ISA build provides. Its gemm takes bf16 inputs too, converting
// them to float32 while packing.
struct GemmKernels {
    void (*gemm)(const GemmParams&, const CacheSizes&);
    void (*column_sum)(const ColumnSumParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(GemmKernels, gemm_kernels)

#if FASTNN_X86_KERNELS
// AVX512_BF16 (vdpbf16ps) build, used for bf16 inputs on the avx512 path when
// cpu_features().avx512_bf16.
namespace avx512_bf16 {
void gemm_bf16_dot(const GemmParams& p, const CacheSizes& caches);
// Register-only vdpbf16ps throughput probe for the bench's bf16 peak:
// iterations x kDotPeakFlopsPerIteration FLOPs on the calling thread.
float dot_peak_loop(long iterations, int seed);
constexpr int kDotPeakChains = 12;
constexpr double kDotPeakFlopsPerIteration = kDotPeakChains * 16 * 2 * 2;
}  // namespace avx512_bf16

// AMX (tdpbf16ps) build, used for bf16 inputs on the avx512 path when
// cpu_features().amx_bf16, unless set_bf16_amx_enabled(false).
namespace amx_bf16 {
void gemm_bf16_amx(const GemmParams& p, const CacheSizes& caches);
// Tile-register-only tdpbf16ps throughput probe, as dot_peak_loop.
float amx_peak_loop(long iterations, int seed);
constexpr int kAmxPeakChains = 4;
constexpr double kAmxPeakFlopsPerIteration = kAmxPeakChains * 16.0 * 16 * 32 * 2;
}  // namespace amx_bf16
#endif

// The kernel bf16 GEMMs use on the active path: "amx", "avx512_bf16", or
// the path's own ("avx512", "avx2", "generic", converting to float32).
// set_bf16_amx_enabled(false) forbids AMX (default allowed), for testing.
const char* bf16_gemm_variant();
void set_bf16_amx_enabled(bool enabled);

}  // namespace fastnn
