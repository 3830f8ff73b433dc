// GEMM dispatch front (baseline flags): the choice between the per-ISA
// kernels and the AVX512_BF16 build.
#include "fastnn/gemm.h"

namespace fastnn {

void gemm(const GemmParams& p) {
#if FASTNN_X86_KERNELS
    if (p.a.dtype == DType::bf16 && active_isa() == Isa::avx512 && cpu_features().avx512_bf16)
        return avx512_bf16::gemm_bf16_dot(p, cache_sizes());
#endif
    FASTNN_SELECT_KERNELS(gemm_kernels).gemm(p, cache_sizes());
}

void column_sum(const ColumnSumParams& p) { FASTNN_SELECT_KERNELS(gemm_kernels).column_sum(p); }

}  // namespace fastnn
