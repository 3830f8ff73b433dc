// Activations on CUDA (contract: fastnn/activation.h), and the fused
// bias + activation y = act(x + bias) with its backward. Memory-bound like
// the CPU path: the floor is bytes over DRAM bandwidth (8 bytes per fp32
// element forward, 12 backward; half in bf16). The transcendental ones cost
// an exp or erfc and a division per element, ~20 instructions, which an H100
// issues at several times the rate memory delivers elements. Dense operands
// take 16-byte vector loads; anything else per-element strided offsets. Math
// in float32, one rounding on store.
//
// Bias + activation: the bias is read once per thread (its columns are fixed)
// and reused over the thread's rows. Its gradient, the column sums of the
// input gradient, is reduced without atomics: each block row of the grid
// writes one float32 partial row, summed in block order (partials.h).
#include "activation_math.cuh"
#include "common.cuh"
#include "fastnn_cuda/cuda_api.h"
#include "launch.h"
#include "partials.h"
#include "rows.cuh"

namespace fastnn::cuda {
namespace {

constexpr int kThreads = 256;

template <class Op>
__device__ __forceinline__ float apply(const float* in, int nin) {
    return nin == 1 ? Op::forward(in[0]) : Op::backward(in[0], in[1]);
}

// Operand 0 is written; operands 1..nin are read.
template <class Op, class S>
__global__ void __launch_bounds__(kThreads) activation_dense_kernel(StridedLayout layout, int nin) {
    constexpr int kVec = 16 / sizeof(S);
    const int64_t n = layout.numel;
    const int64_t nvec = n / kVec;
    const int64_t stride = int64_t(blockDim.x) * gridDim.x;
    S* out = reinterpret_cast<S*>(layout.base[0]);
    for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < nvec; v += stride) {
        S in[2][kVec];
        // Unrolled over both inputs (a run-time bound would put the arrays
        // in local memory).
#pragma unroll
        for (int k = 0; k < 2; ++k)
            if (k < nin) *reinterpret_cast<uint4*>(in[k]) = reinterpret_cast<const uint4*>(layout.base[k + 1])[v];
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
#pragma unroll
        for (int k = 0; k < 2; ++k)
            if (k < nin) x[k] = to_float(reinterpret_cast<const S*>(layout.base[k + 1])[i]);
        out[i] = from_float<S>(apply<Op>(x, nin));
    }
}

template <class Op, class S>
__global__ void __launch_bounds__(kThreads) activation_strided_kernel(StridedLayout layout, int nin) {
    const int64_t stride = int64_t(blockDim.x) * gridDim.x;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < layout.numel; i += stride) {
        float x[2] = {0.0f, 0.0f};
#pragma unroll
        for (int k = 0; k < 2; ++k)
            if (k < nin)
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

template <class T>
cudaError_t launch_kind(Activation kind, const TensorView* const* operands, int noperands, cudaStream_t stream) {
    return with_activation(kind, [&](auto op) { return launch<decltype(op), T>(operands, noperands, stream); });
}

// ---------------------------------------------------------------------------
// Bias + activation over rows (..., N): grid.x tiles the columns (one pack of
// kPack columns per thread), grid.y strides over the rows.

struct BiasActivationArgs {
    RowLayout rows;  // forward: x, y; backward: grad_out, x, grad_in
    int64_t n;
    int64_t stride[3];
    bool vector[3];
    char* bias;
    int64_t bias_stride;
    bool bias_vector;
    float* partials;  // backward with grad_bias: [gridDim.y][n]
};

template <class Op, class S, class B, bool kBackward>
__global__ void __launch_bounds__(kThreads) bias_activation_kernel(const BiasActivationArgs a) {
    constexpr int E = kPack<S>;
    const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * E;
    if (first >= a.n) return;
    float bias[E], acc[E] = {};
    const RowPtr<B> bias_row{a.bias, a.bias_stride, a.bias_vector};
    bias_row.load(first, a.n, 0.0f, bias);
    for (int64_t r = blockIdx.y; r < a.rows.rows; r += gridDim.y) {
        float v[E];
        if constexpr (kBackward) {
            float x[E];
            RowPtr<S>{a.rows.row(0, r), a.stride[0], a.vector[0]}.load(first, a.n, 0.0f, v);
            RowPtr<S>{a.rows.row(1, r), a.stride[1], a.vector[1]}.load(first, a.n, 0.0f, x);
#pragma unroll
            for (int k = 0; k < E; ++k) {
                v[k] = backward_from_input<Op>(v[k], x[k] + bias[k]);
                acc[k] += v[k];
            }
            RowPtr<S>{a.rows.row(2, r), a.stride[2], a.vector[2]}.store(first, a.n, v);
        } else {
            RowPtr<S>{a.rows.row(0, r), a.stride[0], a.vector[0]}.load(first, a.n, 0.0f, v);
#pragma unroll
            for (int k = 0; k < E; ++k) v[k] = Op::forward(v[k] + bias[k]);
            RowPtr<S>{a.rows.row(1, r), a.stride[1], a.vector[1]}.store(first, a.n, v);
        }
    }
    if (kBackward && a.partials)
#pragma unroll
        for (int k = 0; k < E; ++k)
            if (first + k < a.n) a.partials[blockIdx.y * a.n + first + k] = acc[k];
}

template <bool kBackward, class T, class Bt>
cudaError_t bias_activation_typed(Activation kind, const TensorView* const* ops, int noperands, const TensorView& bias,
                                  const TensorView* grad_bias, cudaStream_t stream) {
    using S = typename Storage<T>::type;
    using B = typename Storage<Bt>::type;
    const int nlead = ops[0]->ndim - 1;
    BiasActivationArgs a{};
    a.n = ops[0]->shape[nlead];
    a.rows = make_row_layout(ops, noperands, nlead);
    if (a.n == 0) return cudaSuccess;
    for (int k = 0; k < noperands; ++k) {
        a.stride[k] = a.n > 1 ? ops[k]->strides[nlead] : 1;
        a.vector[k] = a.stride[k] == 1 && a.rows.rows_aligned(k);
    }
    a.bias = static_cast<char*>(bias.data);
    a.bias_stride = a.n > 1 ? bias.strides[0] : 1;
    a.bias_vector = a.bias_stride == 1 && reinterpret_cast<uintptr_t>(bias.data) % 16 == 0;

    return with_activation(kind, [&](auto op) -> cudaError_t {
        const auto kernel = bias_activation_kernel<decltype(op), S, B, kBackward>;
        const int64_t column_blocks = ceil_div(ceil_div(a.n, kPack<S>), kThreads);
        unsigned resident;
        cudaError_t status = resident_grid(kernel, kThreads, 0, INT32_MAX, &resident);
        if (status != cudaSuccess) return status;
        int64_t row_blocks = ceil_div(resident, column_blocks);
        row_blocks = a.rows.rows < row_blocks ? a.rows.rows : row_blocks;
        row_blocks = row_blocks < 65535 ? (row_blocks > 0 ? row_blocks : 1) : 65535;
        StreamScratch partials(grad_bias ? size_t(row_blocks) * size_t(a.n) * sizeof(float) : 0, stream);
        if (partials.status() != cudaSuccess) return partials.status();
        a.partials = partials.as<float>();
        if (a.rows.rows > 0) {
            kernel<<<dim3(static_cast<unsigned>(column_blocks), static_cast<unsigned>(row_blocks)), kThreads, 0,
                     stream>>>(a);
            if ((status = cudaGetLastError()) != cudaSuccess) return status;
        }
        if (!grad_bias) return cudaSuccess;
        return sum_column_partials(a.partials, a.rows.rows > 0 ? row_blocks : 0, a.n, 0, *grad_bias, stream);
    });
}

template <bool kBackward>
cudaError_t bias_activation(Activation kind, const TensorView* const* ops, int noperands, const TensorView& bias,
                            const TensorView* grad_bias, cudaStream_t stream) {
    if (ops[0]->dtype == DType::f32)
        return bias_activation_typed<kBackward, float, float>(kind, ops, noperands, bias, grad_bias, stream);
    return bias.dtype == DType::bf16
               ? bias_activation_typed<kBackward, bf16, bf16>(kind, ops, noperands, bias, grad_bias, stream)
               : bias_activation_typed<kBackward, bf16, float>(kind, ops, noperands, bias, grad_bias, stream);
}

}  // namespace

cudaError_t activation_forward(const ActivationParams& p, cudaStream_t stream) {
    const TensorView* ops[] = {&p.y, &p.x};
    return p.x.dtype == DType::bf16 ? launch_kind<bf16>(p.kind, ops, 2, stream)
                                    : launch_kind<float>(p.kind, ops, 2, stream);
}

cudaError_t activation_backward(const ActivationBackwardParams& p, cudaStream_t stream) {
    const TensorView* ops[] = {&p.grad_in, &p.grad_out, &p.saved};
    return p.grad_out.dtype == DType::bf16 ? launch_kind<bf16>(p.kind, ops, 3, stream)
                                           : launch_kind<float>(p.kind, ops, 3, stream);
}

cudaError_t bias_activation_forward(const BiasActivationParams& p, cudaStream_t stream) {
    const TensorView* ops[] = {&p.x, &p.y};
    return bias_activation<false>(p.kind, ops, 2, p.bias, nullptr, stream);
}

cudaError_t bias_activation_backward(const BiasActivationBackwardParams& p, cudaStream_t stream) {
    const TensorView* ops[] = {&p.grad_out, &p.x, &p.grad_in};
    return bias_activation<true>(p.kind, ops, 3, p.bias, p.grad_bias.data ? &p.grad_bias : nullptr, stream);
}

}  // namespace fastnn::cuda
