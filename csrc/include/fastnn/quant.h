// int8 quantization: symmetric quantize/dequantize, int8 x int8 -> int32 GEMM
// (plain, or with a fused dequantization epilogue), and the two Linear modes
// built on them: dynamic (activations quantized per row inside the op) and
// weight-only (activations stay float, weights are read as int8).
//
// Contract for every path:
// - Quantization is q = clamp(round_half_even(x * (1 / scale)), -128, 127)
//   with 1 / scale computed in float32, exactly as torch.quantize_per_tensor /
//   quantize_per_channel (FBGEMM) do; NaN quantizes to 0 (torch's own NaN
//   result depends on the element's position), +-inf saturates.
// - Dequantization is x = float(q) * scale, rounded once to the output dtype.
// - int8 GEMM results are exact int32 for K <= kInt8GemmMaxK (every product
//   sum fits int32 there; beyond it the binding layer refuses the call).
// - 2-D operands with any strides; tensors are never copied by the caller.
#pragma once

#include <cstdint>

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

// |sum_k a_k b_k| <= 128 * 128 * K, and (-128)(-128)K <= 2^31 - 1 holds up to
// K = 131071: the largest K for which every int8 dot product fits int32.
// Kernels may wrap in intermediate int32 sums (the offset trick of the VNNI
// paths does): two's-complement addition is exact modulo 2^32, so a final
// value known to fit int32 is exact.
inline constexpr int64_t kInt8GemmMaxK = 131071;

// Which scale applies to element (r, c) of a 2-D tensor.
enum class QuantAxis : int8_t { tensor = -1, rows = 0, cols = 1 };

struct QuantizeParams {
    TensorView x;      // (R, C) float32 or bfloat16
    TensorView scale;  // float32: 1 element, (R,) for rows or (C,) for cols
    QuantAxis axis;
    TensorView q;      // (R, C) int8, written
};

struct DequantizeParams {
    TensorView q;      // (R, C) int8
    TensorView scale;  // as QuantizeParams::scale
    QuantAxis axis;
    TensorView x;      // (R, C) float32 or bfloat16, written
};

// Dynamic symmetric per-row quantization: scale[m] = max_k |x[m,k] * smooth_inv[k]| / 127,
// q = quantize(x * smooth_inv, scale[m]). A zero row has scale 0 and q = 0; a
// row holding NaN or +-inf has scale NaN (so anything dequantized from it is NaN).
struct QuantizeRowsParams {
    TensorView x;           // (M, K) float32 or bfloat16
    TensorView smooth_inv;  // (K,) float32, or data == nullptr for none
    TensorView q;           // (M, K) int8, written
    TensorView scale;       // (M,) float32, written
};

// out = A (M, K) @ B (K, N). Without row_scale, out is the int32 product; with
// it, out[m, n] = float(C[m, n]) * row_scale[m] * col_scale[n] + bias[n]
// in float32, rounded once to out's dtype (float32 or bfloat16).
struct Int8MatmulParams {
    TensorView a;          // (M, K) int8
    TensorView b;          // (K, N) int8
    TensorView row_scale;  // (M,) float32, or data == nullptr for the int32 product
    TensorView col_scale;  // (N,) float32 (with row_scale)
    TensorView bias;       // (N,) float32, or data == nullptr
    TensorView out;        // (M, N) int32, float32 or bfloat16, written
};

// A weight W (N, K) int8 packed once for one of the Linear modes. The layouts
// do not depend on the ISA path, so a packed weight runs on every path:
// - dynamic: 16-column strips, K in groups of 4 bytes (the vpdpbusd operand
//   order): byte (n, k) at ((n/16) * K4 + k/4) * 64 + (n%16) * 4 + k%4, K4 =
//   ceil(K/4), zero-padded; then ceil(N/16)*16 int32 compensation terms
//   128 * sum_k W[n, k] for the unsigned-A trick.
// - weight_only: 16-column strips, one 16-byte row per k: byte (n, k) at
//   ((n/16) * K + k) * 16 + n%16, zero-padded.
enum class QuantWeightLayout : uint8_t { dynamic, weight_only };

int64_t quant_packed_weight_bytes(QuantWeightLayout layout, int64_t n, int64_t k);

struct QuantPackWeightParams {
    QuantWeightLayout layout;
    TensorView w;       // (N, K) int8
    TensorView packed;  // (quant_packed_weight_bytes,) uint8, written
};

// out (M, N) = x (M, K) @ dequant(W)^T + bias, W packed by quant_pack_weight.
// dynamic: x * smooth_inv is quantized per row, the product is int8 x int8 ->
// int32 and out = float(C) * x_scale[m] * w_scale[n] + bias[n].
// weight_only: out = (sum_k x[m,k] * float(W[n,k])) * w_scale[n] + bias[n] in float32.
struct QuantLinearParams {
    QuantWeightLayout layout;
    TensorView x;           // (M, K) float32 or bfloat16
    TensorView packed;      // the packed weight, N = w_scale.shape[0]
    TensorView w_scale;     // (N,) float32
    TensorView bias;        // (N,) float32, or data == nullptr
    TensorView smooth_inv;  // (K,) float32, or data == nullptr (dynamic only)
    TensorView out;         // (M, N) x's dtype, written
};

void quantize(const QuantizeParams& p);
void dequantize(const DequantizeParams& p);
void quantize_rows(const QuantizeRowsParams& p);
void int8_matmul(const Int8MatmulParams& p);
void quant_pack_weight(const QuantPackWeightParams& p);
void quant_linear(const QuantLinearParams& p);

// The int8 GEMM variant the active path runs: "amx_int8", "avx512_vnni",
// "avx2_vnni" (AVX-VNNI), "avx512", "avx2" or "generic".
// set_int8_amx_enabled(false) keeps AMX out of dispatch, and
// set_int8_vnni_enabled(false) the VNNI variants too (AMX implies VNNI), so
// tests reach every variant below the best one the CPU has.
const char* int8_gemm_variant();
void set_int8_amx_enabled(bool enabled);
void set_int8_vnni_enabled(bool enabled);
// Register-only throughput of the variant's int8 instruction (tdpbssd or
// vpdpbusd) on all pool threads (int8 ops: 2 per multiply-add); 0 for the
// variants without one.
double measure_int8_peak_gops(double seconds);

// One int8 GEMM variant: the plain/epilogue product and the dynamic Linear,
// which quantizes its activations straight into the variant's A panels.
struct Int8GemmKernels {
    const char* name;
    void (*matmul)(const Int8MatmulParams&);
    void (*linear_dynamic)(const QuantLinearParams&);
    // AMX and VNNI variants: runs iterations x ops_per_iteration int8 ops of
    // register-only tdpbssd / vpdpbusd on one thread (the peak probe);
    // nullptr on the others.
    int32_t (*peak_loop)(long iterations, int32_t seed);
    int ops_per_iteration;
};

struct QuantKernels {
    void (*quantize)(const QuantizeParams&);
    void (*dequantize)(const DequantizeParams&);
    void (*quantize_rows)(const QuantizeRowsParams&);
    void (*pack_weight)(const QuantPackWeightParams&);
    void (*linear_weight_only)(const QuantLinearParams&);
    Int8GemmKernels gemm;  // without VNNI: vpmaddwd (x86) or portable
};
FASTNN_DECLARE_KERNEL_TABLE(QuantKernels, quant_kernels)

#if FASTNN_X86_KERNELS
namespace avx512_vnni { extern const Int8GemmKernels int8_gemm_kernels; }
namespace avx2_vnni { extern const Int8GemmKernels int8_gemm_kernels; }
#endif
#if FASTNN_AMX_KERNELS
namespace amx_int8 { extern const Int8GemmKernels int8_gemm_kernels; }
#endif

}  // namespace fastnn
