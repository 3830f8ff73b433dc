// Dispatch front of the quant family (baseline flags): picks the per-ISA
// table, and among the int8 GEMM variants AMX or VNNI when the CPU has them
// (the AVX-512 path also runs on CPUs without either). Hands out the
// per-thread workspace and owns the int8 peak probe.
#include "fastnn/quant.h"

#include <atomic>
#include <new>

#include "fastnn/cpu_features.h"
#include "fastnn/parallel.h"
#include "fastnn/roofline.h"
#include "fastnn/workspace.h"
#include "quant_workspace.h"

namespace fastnn {
namespace {

std::atomic<bool> g_amx_enabled{true}, g_vnni_enabled{true};

const QuantKernels& table() { return FASTNN_SELECT_KERNELS(quant_kernels); }

const Int8GemmKernels& gemm_variant() {
#if FASTNN_X86_KERNELS
    if (g_vnni_enabled.load(std::memory_order_relaxed)) {
        const Isa isa = active_isa();
        const CpuFeatures& f = cpu_features();
#if FASTNN_AMX_KERNELS
        if (isa == Isa::avx512 && f.amx_int8 && g_amx_enabled.load(std::memory_order_relaxed))
            return amx_int8::int8_gemm_kernels;
#endif
        if (isa == Isa::avx512 && f.avx512_vnni) return avx512_vnni::int8_gemm_kernels;
        if (isa >= Isa::avx2 && f.avx_vnni) return avx2_vnni::int8_gemm_kernels;
    }
#endif
    return table().gemm;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void* quant_workspace(std::size_t bytes) {
    void* p = thread_workspace(WorkspaceSlot::quant, bytes);
    if (!p) throw std::bad_alloc();
    return p;
}

int64_t quant_packed_weight_bytes(QuantWeightLayout layout, int64_t n, int64_t k) {
    const int64_t strips = ceil_div(n, 16);
    if (layout == QuantWeightLayout::weight_only) return strips * k * 16;
    return strips * ceil_div(k, 4) * 64 + strips * 16 * 4;
}

void quantize(const QuantizeParams& p) { table().quantize(p); }
void dequantize(const DequantizeParams& p) { table().dequantize(p); }
void quantize_rows(const QuantizeRowsParams& p) { table().quantize_rows(p); }
void quant_pack_weight(const QuantPackWeightParams& p) { table().pack_weight(p); }
void int8_matmul(const Int8MatmulParams& p) { gemm_variant().matmul(p); }

void quant_linear(const QuantLinearParams& p) {
    if (p.layout == QuantWeightLayout::weight_only) table().linear_weight_only(p);
    else gemm_variant().linear_dynamic(p);
}

const char* int8_gemm_variant() { return gemm_variant().name; }
void set_int8_amx_enabled(bool enabled) { g_amx_enabled.store(enabled, std::memory_order_relaxed); }
void set_int8_vnni_enabled(bool enabled) { g_vnni_enabled.store(enabled, std::memory_order_relaxed); }

double measure_int8_peak_gops(double seconds) {
    const Int8GemmKernels& k = gemm_variant();
    return k.peak_loop ? measure_loop_peak(k.peak_loop, k.ops_per_iteration, seconds) : 0.0;
}

}  // namespace fastnn
