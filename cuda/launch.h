// Host-side launch helpers shared by the memory-bound kernel families: the
// current device's limits (read once per device), grids sized to the blocks
// that can be resident at once, and stream-ordered scratch memory for the
// kernels whose contract has no workspace argument.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace fastnn::cuda {

struct DeviceLimits {
    int multiprocessors = 0;
    size_t shared_memory_optin = 0;  // the most dynamic shared memory one block may opt into
};

// Limits of the calling thread's current device; cached after the first call.
cudaError_t current_device_limits(DeviceLimits* out);

// The number of blocks of `kernel` (at this block size and dynamic shared
// memory) that fit on the GPU at once, capped at `max_blocks` (and >= 1):
// the grid of a kernel whose blocks loop over their share of the work.
template <class Kernel>
cudaError_t resident_grid(Kernel kernel, int threads, size_t shared_bytes, int64_t max_blocks, unsigned* grid) {
    DeviceLimits limits;
    cudaError_t status = current_device_limits(&limits);
    if (status != cudaSuccess) return status;
    int per_sm = 0;
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes);
    if (status != cudaSuccess) return status;
    int64_t blocks = int64_t(per_sm > 0 ? per_sm : 1) * limits.multiprocessors;
    if (blocks > max_blocks) blocks = max_blocks;
    *grid = static_cast<unsigned>(blocks > 0 ? blocks : 1);
    return cudaSuccess;
}

// Opts `kernel` into more than the default 48 KB of dynamic shared memory.
template <class Kernel>
cudaError_t allow_shared_memory(Kernel kernel, size_t bytes) {
    return bytes > (size_t(48) << 10)
               ? cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes))
               : cudaSuccess;
}

// Device memory valid in stream order from construction to destruction,
// from a per-device pool of fastnn's own that keeps what it has allocated
// (release threshold unlimited): after the first call of a given size an
// allocation is a pool lookup, with no device synchronization, and the
// process's default pool (which PyTorch's cudaMallocAsync backend tunes) is
// left alone.
class StreamScratch {
public:
    StreamScratch(size_t bytes, cudaStream_t stream);
    ~StreamScratch();
    StreamScratch(const StreamScratch&) = delete;
    StreamScratch& operator=(const StreamScratch&) = delete;

    cudaError_t status() const { return status_; }
    template <class T>
    T* as() const { return static_cast<T*>(data_); }

private:
    void* data_ = nullptr;
    cudaStream_t stream_;
    cudaError_t status_ = cudaSuccess;
};

}  // namespace fastnn::cuda
