// The GPU limits `fastnn bench --device cuda` divides by: fp32 FMA peak (a
// register-only FMA kernel filling every SM) and device-to-device copy
// bandwidth. These run on their own stream and synchronize it: they are
// measurements, not kernels on a user's stream.
#include "fastnn_cuda/cuda_api.h"

#include <algorithm>

namespace fastnn::cuda {
namespace {

constexpr int kChains = 8;  // FMA latency 4 cycles x 2 issue slots per scheduler

__global__ void fma_peak_kernel(float* sink, int iterations, float seed) {
    float acc[kChains];
#pragma unroll
    for (int c = 0; c < kChains; ++c) acc[c] = seed + threadIdx.x + c;
    const float a = 0.999999f, b = 1e-7f;
    for (int i = 0; i < iterations; ++i) {
#pragma unroll
        for (int c = 0; c < kChains; ++c) acc[c] = fmaf(acc[c], a, b);
    }
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < kChains; ++c) s += acc[c];
    if (s == 12345.678f) *sink = s;  // never true in practice; keeps the work live
}

struct Timer {
    cudaEvent_t start{}, stop{};
    Timer() { cudaEventCreate(&start); cudaEventCreate(&stop); }
    ~Timer() { cudaEventDestroy(start); cudaEventDestroy(stop); }
    float ms() {
        float t = 0.0f;
        cudaEventElapsedTime(&t, start, stop);
        return t;
    }
};

}  // namespace

cudaError_t measure_fma_peak_gflops(int device, double* gflops) {
    cudaError_t status = cudaSetDevice(device);
    if (status != cudaSuccess) return status;
    DeviceInfo info;
    if ((status = device_info(device, &info)) != cudaSuccess) return status;
    float* sink = nullptr;
    if ((status = cudaMalloc(&sink, sizeof(float))) != cudaSuccess) return status;
    cudaStream_t stream;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    const int threads = 256, blocks = info.multiprocessors * 8, iterations = 1 << 16;
    Timer timer;
    double best = 0.0;
    for (int trial = 0; trial < 5; ++trial) {
        cudaEventRecord(timer.start, stream);
        fma_peak_kernel<<<blocks, threads, 0, stream>>>(sink, iterations, 1.0f);
        cudaEventRecord(timer.stop, stream);
        if ((status = cudaStreamSynchronize(stream)) != cudaSuccess) break;
        const double flops = 2.0 * kChains * double(iterations) * threads * blocks;
        best = std::max(best, flops / (timer.ms() * 1e-3) / 1e9);
    }
    cudaStreamDestroy(stream);
    cudaFree(sink);
    *gflops = best;
    return status;
}

cudaError_t measure_copy_bandwidth_gbps(int device, size_t bytes, double* gbps) {
    cudaError_t status = cudaSetDevice(device);
    if (status != cudaSuccess) return status;
    void *src = nullptr, *dst = nullptr;
    if ((status = cudaMalloc(&src, bytes)) != cudaSuccess) return status;
    if ((status = cudaMalloc(&dst, bytes)) != cudaSuccess) {
        cudaFree(src);
        return status;
    }
    cudaStream_t stream;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    cudaMemsetAsync(src, 1, bytes, stream);
    Timer timer;
    double best = 0.0;
    for (int trial = 0; trial < 10; ++trial) {
        cudaEventRecord(timer.start, stream);
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
        cudaEventRecord(timer.stop, stream);
        if ((status = cudaStreamSynchronize(stream)) != cudaSuccess) break;
        best = std::max(best, 2.0 * double(bytes) / (timer.ms() * 1e-3) / 1e9);
    }
    cudaStreamDestroy(stream);
    cudaFree(src);
    cudaFree(dst);
    *gbps = best;
    return status;
}

}  // namespace fastnn::cuda
