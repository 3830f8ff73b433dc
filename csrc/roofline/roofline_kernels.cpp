// The FMA peak probe, compiled per ISA. Latency 4 cycles x 2 FMA pipes needs at
// least 8 independent chains to keep both pipes busy; 12 leaves margin and
// still fits the 16 architectural registers of AVX2.
#include "fastnn/roofline.h"
#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

constexpr int kChains = 12;

float fma_loop(long iterations, float seed) {
    using simd::VecF32;
    VecF32 acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = VecF32::broadcast(seed + 0.001f * c);
    const VecF32 a = VecF32::broadcast(0.999999f), b = VecF32::broadcast(1e-7f);
    for (long i = 0; i < iterations; ++i) {
        // Without -ffast-math the compiler may not reassociate these chains,
        // so each iteration really issues kChains dependent-per-chain FMAs.
        for (int c = 0; c < kChains; ++c) acc[c] = simd::fmadd(acc[c], a, b);
    }
    VecF32 sum = acc[0];
    for (int c = 1; c < kChains; ++c) sum = sum + acc[c];
    return simd::reduce_add(sum);
}

void stream_copy(float* dst, const float* src, std::size_t n) {
    using simd::VecF32;
    constexpr std::size_t W = VecF32::width;
    std::size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        const VecF32 a = VecF32::load(src + i), b = VecF32::load(src + i + W);
        const VecF32 c = VecF32::load(src + i + 2 * W), d = VecF32::load(src + i + 3 * W);
        a.stream(dst + i);
        b.stream(dst + i + W);
        c.stream(dst + i + 2 * W);
        d.stream(dst + i + 3 * W);
    }
    for (; i < n; ++i) dst[i] = src[i];
    simd::store_fence();
}

}  // namespace

const RooflineKernels roofline_kernels = {fma_loop, kChains * simd::VecF32::width * 2, stream_copy};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
