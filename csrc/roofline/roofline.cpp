#include "fastnn/roofline.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "fastnn/gemm.h"
#include "fastnn/parallel.h"

namespace fastnn {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};

}  // namespace

double measure_fma_peak_gflops(double seconds) {
    const RooflineKernels& k = FASTNN_SELECT_KERNELS(roofline_kernels);
    return measure_loop_peak([&k](long iterations, int seed) { return k.fma_loop(iterations, 1.0f + seed); },
                             k.flops_per_iteration, seconds);
}

double measure_bf16_dot_peak_gflops(double seconds) {
#if FASTNN_X86_KERNELS
    const char* variant = bf16_gemm_variant();
#if FASTNN_AMX_KERNELS
    if (std::strcmp(variant, "amx") == 0)
        return measure_loop_peak(amx_bf16::amx_peak_loop, amx_bf16::kAmxPeakFlopsPerIteration, seconds);
#endif
    if (std::strcmp(variant, "avx512_bf16") == 0)
        return measure_loop_peak(avx512_bf16::dot_peak_loop, avx512_bf16::kDotPeakFlopsPerIteration, seconds);
#endif
    (void)seconds;
    return 0.0;
}

double measure_copy_bandwidth_gbps(std::size_t bytes, int repeats) {
    bytes = (bytes + 4095) / 4096 * 4096;  // aligned_alloc needs a multiple of the alignment
    std::unique_ptr<char, FreeDeleter> src(static_cast<char*>(std::aligned_alloc(4096, bytes)));
    std::unique_ptr<char, FreeDeleter> dst(static_cast<char*>(std::aligned_alloc(4096, bytes)));
    if (!src || !dst) return 0.0;
    // First touch both buffers from the threads that will copy them, so page
    // faults are not timed. Chunks are whole 4 KiB pages, so every chunk
    // starts 64-byte aligned for the streaming stores.
    const RooflineKernels& k = FASTNN_SELECT_KERNELS(roofline_kernels);
    const int64_t nchunks = num_threads();
    const std::size_t pages = bytes / 4096;
    auto copy = [&](bool fill) {
        parallel_for(nchunks, 1, [&](int64_t begin, int64_t end) {
            for (int64_t c = begin; c < end; ++c) {
                const std::size_t lo = 4096 * (pages * c / nchunks), hi = 4096 * (pages * (c + 1) / nchunks);
                if (fill) {
                    std::memset(src.get() + lo, 1, hi - lo);
                    std::memset(dst.get() + lo, 0, hi - lo);
                } else {
                    k.stream_copy(reinterpret_cast<float*>(dst.get() + lo),
                                  reinterpret_cast<const float*>(src.get() + lo), (hi - lo) / sizeof(float));
                }
            }
        });
    };
    copy(true);
    double best = 0.0;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        copy(false);
        best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds_since(t0) / 1e9);
    }
    return best;
}

}  // namespace fastnn
