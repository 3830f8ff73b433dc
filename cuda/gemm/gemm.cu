// GEMM dispatch: normalizes the views of the contract into the kernels'
// Problem (one layout per operand, 16-byte alignment decided once) and picks
// the path: the sm_90a warpgroup kernel on compute capability 9.0 when the
// build holds it and the operands suit TMA; the sm_80 mma.sync kernel for the
// other tensor-core cases; the SIMT kernel for strict fp32 and for operands
// without a unit stride.
#include <array>
#include <mutex>

#include "gemm_problem.cuh"

namespace fastnn::cuda {
namespace gemm_detail {
namespace {

struct DeviceCaps {
    int major = 0, minor = 0, multiprocessors = 0;
};

// cudaGetDeviceProperties costs milliseconds; read each device once.
cudaError_t device_caps(DeviceCaps* out) {
    constexpr int kMaxDevices = 64;
    static std::array<std::once_flag, kMaxDevices> once;
    static std::array<DeviceCaps, kMaxDevices> caps;
    static std::array<cudaError_t, kMaxDevices> status;
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess) return e;
    if (device < 0 || device >= kMaxDevices) return cudaErrorInvalidDevice;
    std::call_once(once[device], [device] {
        cudaDeviceProp prop;
        status[device] = cudaGetDeviceProperties(&prop, device);
        if (status[device] == cudaSuccess) caps[device] = {prop.major, prop.minor, prop.multiProcessorCount};
    });
    *out = caps[device];
    return status[device];
}

bool aligned(int64_t bytes, int64_t to) { return bytes % to == 0; }

// A (batch, rows, cols) or (rows, cols) view as an (MN, K) operand; mn_dim and
// k_dim index its last two dimensions.
Operand make_operand(const TensorView& v, int mn_dim, int k_dim) {
    const int64_t size = int64_t(dtype_size(v.dtype));
    const int64_t mn_extent = v.shape[mn_dim], k_extent = v.shape[k_dim];
    const int64_t batch_stride = v.ndim == 3 && v.shape[0] > 1 ? v.strides[0] : 0;
    // A stride along a dimension of extent 1 is never used.
    const bool unit_k = v.strides[k_dim] == 1 || k_extent == 1;
    const bool unit_mn = v.strides[mn_dim] == 1 || mn_extent == 1;
    const int64_t ld_if_k_major = mn_extent == 1 ? 0 : v.strides[mn_dim];
    const int64_t ld_if_mn_major = k_extent == 1 ? 0 : v.strides[k_dim];
    const auto vec = [&](int64_t ld) {
        return aligned(reinterpret_cast<intptr_t>(v.data), 16) && aligned(ld * size, 16) &&
               aligned(batch_stride * size, 16);
    };
    if (unit_k && (vec(ld_if_k_major) || !(unit_mn && vec(ld_if_mn_major))))
        return {v.data, ld_if_k_major, 1, batch_stride, Layout::k_major, vec(ld_if_k_major)};
    if (unit_mn) return {v.data, 1, ld_if_mn_major, batch_stride, Layout::mn_major, vec(ld_if_mn_major)};
    return {v.data, v.strides[mn_dim], v.strides[k_dim], batch_stride, Layout::strided, false};
}

Output make_output(const TensorView& v) {
    const int64_t size = int64_t(dtype_size(v.dtype));
    const int r = v.ndim - 2, c = v.ndim - 1;
    const int64_t batch_stride = v.ndim == 3 && v.shape[0] > 1 ? v.strides[0] : 0;
    const int64_t stride_m = v.shape[r] == 1 ? 0 : v.strides[r];
    const bool pairs = (v.strides[c] == 1 || v.shape[c] == 1) && aligned(reinterpret_cast<intptr_t>(v.data), 2 * size) &&
                       aligned(stride_m, 2) && aligned(batch_stride, 2);
    return {v.data, v.dtype, stride_m, v.strides[c], batch_stride, pairs};
}

int64_t batch_of(const TensorView& v) { return v.ndim == 3 ? v.shape[0] : 1; }

Epilogue no_epilogue() {
    return {1.0f, 0.0f, nullptr, DType::f32, 0, nullptr, nullptr, 0, 0, GemmActivation::none};
}

bool fits_int(int64_t x) { return x >= 0 && x <= INT32_MAX; }

cudaError_t run_tensor_cores(const Problem& p, Math math, cudaStream_t stream) {
    DeviceCaps caps;
    if (const cudaError_t e = device_caps(&caps); e != cudaSuccess) return e;
    if (caps.major == 9 && caps.minor == 0 && sm90_available() && sm90_accepts(p, math))
        return launch_sm90(p, math, caps.multiprocessors, stream);
    return launch_sm80(p, math, stream);
}

}  // namespace
}  // namespace gemm_detail

cudaError_t gemm(const GemmParams& g, cudaStream_t stream) {
    using namespace gemm_detail;
    const int rm = g.c.ndim - 2, rn = g.c.ndim - 1;
    const int64_t m = g.c.shape[rm], n = g.c.shape[rn], k = g.a.shape[g.a.ndim - 1];
    const int64_t batch = batch_of(g.c);
    if (!fits_int(m) || !fits_int(n) || !fits_int(k) || !fits_int(batch)) return cudaErrorInvalidValue;
    if (m == 0 || n == 0 || batch == 0) return cudaSuccess;

    Problem p;
    p.a = make_operand(g.a, g.a.ndim - 2, g.a.ndim - 1);
    p.b = make_operand(g.b, g.b.ndim - 1, g.b.ndim - 2);
    p.c = make_output(g.c);
    p.ep = no_epilogue();
    p.ep.alpha = g.alpha;
    p.ep.beta = g.beta;
    p.ep.activation = g.activation;
    if (g.bias.data != nullptr) {
        p.ep.bias = g.bias.data;
        p.ep.bias_dtype = g.bias.dtype;
        p.ep.bias_stride = g.bias.strides[0];
    }
    p.m = int(m);
    p.n = int(n);
    p.k = int(k);
    p.batch = int(batch);

    const DType input = g.a.dtype;
    const bool strided = p.a.layout == Layout::strided || p.b.layout == Layout::strided;
    if (strided || k == 0 || (input == DType::f32 && !g.allow_tf32)) return launch_simt(p, input, stream);
    switch (input) {
        case DType::bf16: return run_tensor_cores(p, Math::bf16, stream);
        case DType::f16: return run_tensor_cores(p, Math::f16, stream);
        case DType::f32: return run_tensor_cores(p, Math::tf32, stream);
        default: return cudaErrorInvalidValue;
    }
}

cudaError_t int8_gemm(const Int8GemmParams& g, cudaStream_t stream) {
    using namespace gemm_detail;
    const int64_t m = g.a.shape[0], k = g.a.shape[1], n = g.b.shape[1];
    if (!fits_int(m) || !fits_int(n) || k < 0 || k > kInt8GemmMaxK) return cudaErrorInvalidValue;
    if (m == 0 || n == 0) return cudaSuccess;

    Problem p;
    p.a = make_operand(g.a, 0, 1);
    p.b = make_operand(g.b, 1, 0);
    if (p.a.layout == Layout::strided || p.b.layout == Layout::strided) return cudaErrorInvalidValue;
    p.c = make_output(g.out);
    p.ep = no_epilogue();
    if (g.row_scale.data != nullptr) {
        p.ep.row_scale = static_cast<const float*>(g.row_scale.data);
        p.ep.col_scale = static_cast<const float*>(g.col_scale.data);
        p.ep.row_scale_stride = g.row_scale.strides[0];
        p.ep.col_scale_stride = g.col_scale.strides[0];
        p.ep.activation = g.activation;
        if (g.bias.data != nullptr) {
            p.ep.bias = g.bias.data;
            p.ep.bias_dtype = g.bias.dtype;
            p.ep.bias_stride = g.bias.strides[0];
        }
    }
    p.m = int(m);
    p.n = int(n);
    p.k = int(k);
    p.batch = 1;
    return run_tensor_cores(p, Math::s8, stream);
}

}  // namespace fastnn::cuda
