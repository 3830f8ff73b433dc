// The machine limits that `fastnn bench` divides every result by: the fp32 FMA
// peak (register-only FMAs on all pool threads, active ISA) and the copy
// bandwidth (large buffer to buffer, all pool threads).
#pragma once

#include <cstddef>

#include "fastnn/dispatch.h"

namespace fastnn {

// Runs FMAs for about `seconds` and returns the best GFLOP/s of a few trials.
double measure_fma_peak_gflops(double seconds);
// Copies `bytes` between two preallocated buffers `repeats` times with the
// active ISA's streaming copy; returns the best GB/s counting bytes read plus
// bytes written.
double measure_copy_bandwidth_gbps(std::size_t bytes, int repeats);

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
