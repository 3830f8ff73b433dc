// GEMM dispatch front (baseline flags): the choice between the per-ISA
// kernels and the AVX512_BF16 and AMX builds for bf16 inputs.
#include <atomic>

#include "fastnn/gemm.h"

namespace fastnn {
namespace {

std::atomic<bool> g_amx_enabled{true};

enum class Bf16Variant { amx, dot, isa };

Bf16Variant bf16_variant() {
#if FASTNN_X86_KERNELS
    if (active_isa() == Isa::avx512) {
        const CpuFeatures& f = cpu_features();
#if FASTNN_AMX_KERNELS
        if (f.amx_bf16 && g_amx_enabled.load(std::memory_order_relaxed)) return Bf16Variant::amx;
#endif
        if (f.avx512_bf16) return Bf16Variant::dot;
    }
#endif
    return Bf16Variant::isa;
}

}  // namespace

void gemm(const GemmParams& p) {
#if FASTNN_X86_KERNELS
    if (p.a.dtype == DType::bf16) {
        const Bf16Variant variant = bf16_variant();
#if FASTNN_AMX_KERNELS
        if (variant == Bf16Variant::amx) return amx_bf16::gemm_bf16_amx(p, cache_sizes());
#endif
        if (variant == Bf16Variant::dot) return avx512_bf16::gemm_bf16_dot(p, cache_sizes());
    }
#endif
    FASTNN_SELECT_KERNELS(gemm_kernels).gemm(p, cache_sizes());
}

void column_sum(const ColumnSumParams& p) { FASTNN_SELECT_KERNELS(gemm_kernels).column_sum(p); }

const char* bf16_gemm_variant() {
    switch (bf16_variant()) {
        case Bf16Variant::amx: return "amx";
        case Bf16Variant::dot: return "avx512_bf16";
        case Bf16Variant::isa: break;
    }
    return isa_name(active_isa());
}

void set_bf16_amx_enabled(bool enabled) { g_amx_enabled.store(enabled, std::memory_order_relaxed); }

}  // namespace fastnn
