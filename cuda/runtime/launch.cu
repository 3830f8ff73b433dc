#include <array>
#include <cstdint>
#include <mutex>

#include "launch.h"

namespace fastnn::cuda {
namespace {

constexpr int kMaxDevices = 64;

cudaError_t current_device(int* device) {
    const cudaError_t status = cudaGetDevice(device);
    if (status != cudaSuccess) return status;
    return *device >= 0 && *device < kMaxDevices ? cudaSuccess : cudaErrorInvalidDevice;
}

// One pool per device, created on first use and kept for the process.
cudaError_t scratch_pool(cudaMemPool_t* pool) {
    static std::array<std::once_flag, kMaxDevices> once;
    static std::array<cudaMemPool_t, kMaxDevices> pools{};
    static std::array<cudaError_t, kMaxDevices> status{};
    int device = 0;
    const cudaError_t e = current_device(&device);
    if (e != cudaSuccess) return e;
    std::call_once(once[device], [device] {
        cudaMemPoolProps props{};
        props.allocType = cudaMemAllocationTypePinned;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = device;
        status[device] = cudaMemPoolCreate(&pools[device], &props);
        if (status[device] != cudaSuccess) return;
        uint64_t keep_everything = UINT64_MAX;
        status[device] = cudaMemPoolSetAttribute(pools[device], cudaMemPoolAttrReleaseThreshold, &keep_everything);
    });
    *pool = pools[device];
    return status[device];
}

}  // namespace

cudaError_t current_device_limits(DeviceLimits* out) {
    static std::array<std::once_flag, kMaxDevices> once;
    static std::array<DeviceLimits, kMaxDevices> limits;
    static std::array<cudaError_t, kMaxDevices> status{};
    int device = 0;
    const cudaError_t e = current_device(&device);
    if (e != cudaSuccess) return e;
    std::call_once(once[device], [device] {
        int sms = 0, optin = 0;
        status[device] = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        if (status[device] == cudaSuccess)
            status[device] = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
        limits[device] = {sms, static_cast<size_t>(optin)};
    });
    *out = limits[device];
    return status[device];
}

StreamScratch::StreamScratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes == 0) return;
    cudaMemPool_t pool;
    status_ = scratch_pool(&pool);
    if (status_ == cudaSuccess) status_ = cudaMallocFromPoolAsync(&data_, bytes, pool, stream);
    if (status_ != cudaSuccess) data_ = nullptr;
}

StreamScratch::~StreamScratch() {
    if (data_) cudaFreeAsync(data_, stream_);
}

}  // namespace fastnn::cuda
