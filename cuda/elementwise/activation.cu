// Activations on CUDA. Memory-bound like the CPU path: the floor is bytes over
// DRAM bandwidth. Dense operands take 16-byte vector loads; anything else
// takes per-element strided offsets. Math in float32, one rounding on store.
#include "common.cuh"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::cuda {
namespace {

constexpr int kThreads = 256;

struct Relu {
    // fmaxf(0, NaN) would return 0; relu must propagate NaN.
    __device__ static float forward(float x) { return x > 0.0f || x != x ? x : 0.0f; }
    __device__ static float backward(float grad, float y) { return y <= 0.0f ? 0.0f : grad; }
};

template <class Op>
__device__ __forceinline__ float apply(const float* in, int nin) {
    return nin == 1 ? Op::forward(in[0]) : Op::backward(in[0], in[1]);
}

// Operand 0 is written; operands 1..nin are read.
template <class Op, class S>
__global__ void activation_dense_kernel(StridedLayout layout, int nin) {
    constexpr int kVec = 16 / sizeof(S);
    const int64_t n = layout.numel;
    const int64_t nvec = n / kVec;
    const int64_t stride = int64_t(blockDim.x) * gridDim.x;
    S* out = reinterpret_cast<S*>(layout.base[0]);
    for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < nvec; v += stride) {
        S in[2][kVec];
        for (int k = 0; k < nin; ++k)
            *reinterpret_cast<uint4*>(in[k]) = reinterpret_cast<const uint4*>(layout.base[k + 1])[v];
        S result[kVec];
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
            float x[2] = {to_float(in[0][j]), nin > 1 ? to_float(in[1][j]) : 0.0f};
            result[j] = from_float<S>(apply<Op>(x, nin));
        }
        reinterpret_cast<uint4*>(out)[v] = *reinterpret_cast<uint4*>(result);
    }
    for (int64_t i = nvec * kVec + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
        float x[2] = {0.0f, 0.0f};
        for (int k = 0; k < nin; ++k) x[k] = to_float(reinterpret_cast<const S*>(layout.base[k + 1])[i]);
        out[i] = from_float<S>(apply<Op>(x, nin));
    }
}

template <class Op, class S>
__global__ void activation_strided_kernel(StridedLayout layout, int nin) {
    const int64_t stride = int64_t(blockDim.x) * gridDim.x;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < layout.numel; i += stride) {
        float x[2] = {0.0f, 0.0f};
        for (int k = 0; k < nin; ++k)
            x[k] = to_float(*reinterpret_cast<const S*>(layout.base[k + 1] + strided_offset(layout, k + 1, i)));
        *reinterpret_cast<S*>(layout.base[0] + strided_offset(layout, 0, i)) = from_float<S>(apply<Op>(x, nin));
    }
}

bool vector_aligned(const StridedLayout& layout) {
    for (int k = 0; k < layout.noperands; ++k)
        if (reinterpret_cast<uintptr_t>(layout.base[k]) % 16 != 0) return false;
    return true;
}

template <class Op, class T>
cudaError_t launch(const TensorView* const* operands, int noperands, cudaStream_t stream) {
    using S = typename Storage<T>::type;
    const StridedLayout layout = make_strided_layout(operands, noperands);
    if (layout.numel == 0) return cudaSuccess;
    const unsigned grid = grid_for(layout.numel, kThreads);
    if (layout.ndim == 1 && layout.inner_dense() && vector_aligned(layout))
        activation_dense_kernel<Op, S><<<grid, kThreads, 0, stream>>>(layout, noperands - 1);
    else
        activation_strided_kernel<Op, S><<<grid, kThreads, 0, stream>>>(layout, noperands - 1);
    return cudaGetLastError();
}

template <class Op>
cudaError_t launch_typed(DType dtype, const TensorView* const* operands, int noperands, cudaStream_t stream) {
    return dtype == DType::bf16 ? launch<Op, bf16>(operands, noperands, stream)
                                : launch<Op, float>(operands, noperands, stream);
}

}  // namespace

cudaError_t activation_forward(const ActivationParams& p, cudaStream_t stream) {
    const TensorView* ops[] = {&p.y, &p.x};
    switch (p.kind) {
        case Activation::relu: return launch_typed<Relu>(p.x.dtype, ops, 2, stream);
        default: break;  // the other activations are CPU-only so far
    }
    return cudaErrorInvalidValue;
}

cudaError_t activation_backward(const ActivationBackwardParams& p, cudaStream_t stream) {
    const TensorView* ops[] = {&p.grad_in, &p.grad_out, &p.saved};
    switch (p.kind) {
        case Activation::relu: return launch_typed<Relu>(p.grad_out.dtype, ops, 3, stream);
        default: break;
    }
    return cudaErrorInvalidValue;
}

}  // namespace fastnn::cuda
