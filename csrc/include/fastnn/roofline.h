// The machine limits that `fastnn bench` divides every result by: compute
// peaks (register-only loops of one instruction on all pool threads, active
// ISA) and the copy bandwidth (large buffer to buffer, all pool threads).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "fastnn/dispatch.h"
#include "fastnn/parallel.h"

namespace fastnn {

// Runs FMAs for about `seconds` and returns the best GFLOP/s of many trials.
double measure_fma_peak_gflops(double seconds);
// The same for the bf16 dot-product instruction the bf16 GEMM uses
// (bf16_gemm_variant): AMX's tdpbf16ps or AVX512_BF16's vdpbf16ps; 0 where
// the active path has neither.
double measure_bf16_dot_peak_gflops(double seconds);
// Copies `bytes` between two preallocated buffers `repeats` times with the
// active ISA's streaming copy; returns the best GB/s counting bytes read plus
// bytes written.
double measure_copy_bandwidth_gbps(std::size_t bytes, int repeats);

// Best rate, in G operations per second, of `loop(iterations, seed)` (which
// performs ops_per_iteration x iterations operations and returns a value
// derived from its accumulators, so the work cannot be elided) running on
// every pool thread at once. Trials are short and the best of many is kept:
// on a shared machine a trial longer than a scheduler time slice measures the
// other processes too.
template <class Loop>
double measure_loop_peak(Loop loop, double ops_per_iteration, double seconds) {
    using clock = std::chrono::steady_clock;
    auto elapsed = [](clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); };
    constexpr double kTrialSeconds = 5e-4;
    long iterations = 1 << 8;
    for (;;) {  // calibrate on one thread
        const auto t0 = clock::now();
        volatile auto sink = loop(iterations, 1);
        (void)sink;
        if (elapsed(t0) > kTrialSeconds || iterations > (1L << 40)) break;
        iterations *= 2;
    }
    const int threads = num_threads();
    double best = 0.0;
    const auto start = clock::now();
    for (int trial = 0; trial < 10 || elapsed(start) < seconds; ++trial) {
        const auto t0 = clock::now();
        parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t) {
                volatile auto sink = loop(iterations, static_cast<int>(t));
                (void)sink;
            }
        });
        best = std::max(best, ops_per_iteration * static_cast<double>(iterations) * threads / elapsed(t0) / 1e9);
    }
    return best;
}

struct RooflineKernels {
    // iterations x (accumulators x width x 2) FLOPs on one thread; returns a
    // value derived from the accumulators so the work cannot be elided.
    float (*fma_loop)(long iterations, float seed);
    int flops_per_iteration;
    // Copies n floats with full-width loads and non-temporal stores (dst
    // aligned to 64 bytes): the fastest way this ISA moves memory.
    void (*stream_copy)(float* dst, const float* src, std::size_t n);
};
FASTNN_DECLARE_KERNEL_TABLE(RooflineKernels, roofline_kernels)

}  // namespace fastnn
