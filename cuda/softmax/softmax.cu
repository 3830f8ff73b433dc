// Softmax and log-softmax over the last dimension, forward and backward, on
// CUDA (contract: fastnn/softmax.h).
//
// Floor: memory. Forward reads x and writes y (4 bytes per element in bf16,
// 8 in fp32); backward reads y and grad_out and writes grad_in (6 / 12).
// Geometry as the norms (rows.cuh): a warp per row up to 512 elements, a
// block per row beyond, 32 elements per thread held in registers between the
// row statistics and the output, so rows up to 16384 elements are read once;
// longer ones (vocabularies) are read twice, the second time largely from L2.
//
// Statistics: each thread's maximum m and sum(exp(x - m)) over its registers,
// merged across threads as (m, s) pairs (s rescaled by exp(m_old - m_new)).
// A thread that has seen only -inf (or nothing) holds (-inf, 0) and shifts by
// 0, so it adds nothing instead of exp(-inf - -inf) = NaN; a row of only
// -inf, or holding +inf or NaN, still gives NaN everywhere, as PyTorch.
// The backward's row sum (sum(grad_out * y), or sum(grad_out)) is a float32
// tree over the threads.
#include "fastnn_cuda/cuda_api.h"
#include "launch.h"
#include "rows.cuh"

namespace fastnn::cuda {
namespace {


struct SoftmaxArgs {
    RowLayout rows;  // forward: x, y; backward: grad_out, y, grad_in
    int64_t n;
    int64_t stride[3];
    bool vector[3];
    int chunks;
    bool log;
};

struct MaxSum {
    float max, sum;
};

__device__ __forceinline__ float shift_of(float m) { return m == -INFINITY ? 0.0f : m; }

struct MergeMaxSum {
    __device__ MaxSum operator()(const MaxSum& a, const MaxSum& b) const {
        const float m = fmaxf(a.max, b.max), shift = shift_of(m);
        const float sa = a.sum == 0.0f ? 0.0f : a.sum * expf(a.max - shift);
        const float sb = b.sum == 0.0f ? 0.0f : b.sum * expf(b.max - shift);
        return {m, sa + sb};
    }
};

template <class Slice>
__device__ __forceinline__ MaxSum slice_max_sum(const Slice& s) {
    float m = -INFINITY;  // elements past the row were loaded as -inf
#pragma unroll
    for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
        for (int k = 0; k < Slice::kWidth; ++k) m = fmaxf(m, s.v[j][k]);
    const float shift = shift_of(m);
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
        for (int k = 0; k < Slice::kWidth; ++k) sum += expf(s.v[j][k] - shift);
    return {m, sum};
}

// One block per SM at least: left to itself ptxas for sm_80 trades registers
// for a second 512-thread block and spills.
template <class S, bool kWarpRows>
__global__ void __launch_bounds__(kWarpRows ? kWarpBlockThreads : kRowMaxThreads, 1)
    softmax_forward_kernel(const SoftmaxArgs a) {
    using Threads = RowThreads<kWarpRows>;
    using Slice = RowSlice<S, kWarpRows ? kWarpElems : kBlockElems>;
    __shared__ MaxSum scratch[33];
    const int t = Threads::rank(), T = Threads::count();
    const bool reload = a.chunks > 1;
    for (int64_t r = Threads::first_row(); r < a.rows.rows; r += Threads::row_step()) {
        const RowPtr<S> x{a.rows.row(0, r), a.stride[0], a.vector[0]};
        const RowPtr<S> y{a.rows.row(1, r), a.stride[1], a.vector[1]};
        Slice s;
        MaxSum ms{-INFINITY, 0.0f};
        for (int c = 0; c < a.chunks; ++c) {
            s.load(x, c, t, T, a.n, -INFINITY);
            ms = MergeMaxSum()(ms, slice_max_sum(s));
        }
        ms = row_allreduce<kWarpRows>(ms, MergeMaxSum(), scratch);
        // A row of only -inf keeps max -inf: x - max is NaN, as PyTorch.
        const float log_sum = static_cast<float>(log(static_cast<double>(ms.sum)));
        const float inv_sum = static_cast<float>(1.0 / static_cast<double>(ms.sum));
        for (int c = 0; c < a.chunks; ++c) {
            if (reload) s.load(x, c, t, T, a.n, -INFINITY);
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
                for (int k = 0; k < Slice::kWidth; ++k) {
                    const float v = s.v[j][k] - ms.max;
                    s.v[j][k] = a.log ? v - log_sum : expf(v) * inv_sum;
                }
            s.store(y, c, t, T, a.n);
        }
    }
}

// softmax: grad_in = y (grad_out - sum(grad_out y)); log_softmax: grad_in =
// grad_out - exp(y) sum(grad_out).
template <class S, bool kWarpRows>
__global__ void __launch_bounds__(kWarpRows ? kWarpBlockThreads : kRowMaxThreads, 1)
    softmax_backward_kernel(const SoftmaxArgs a) {
    using Threads = RowThreads<kWarpRows>;
    using Slice = RowSlice<S, kWarpRows ? kWarpElems : kBlockElems>;
    __shared__ float scratch[33];
    const int t = Threads::rank(), T = Threads::count();
    const bool reload = a.chunks > 1;
    for (int64_t r = Threads::first_row(); r < a.rows.rows; r += Threads::row_step()) {
        const RowPtr<S> g{a.rows.row(0, r), a.stride[0], a.vector[0]};
        const RowPtr<S> y{a.rows.row(1, r), a.stride[1], a.vector[1]};
        const RowPtr<S> dx{a.rows.row(2, r), a.stride[2], a.vector[2]};
        Slice gs, ys;
        float sum = 0.0f;  // elements past the row were loaded as 0
        for (int c = 0; c < a.chunks; ++c) {
            gs.load(g, c, t, T, a.n, 0.0f);
            if (!a.log) ys.load(y, c, t, T, a.n, 0.0f);
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
                for (int k = 0; k < Slice::kWidth; ++k)
                    sum = a.log ? sum + gs.v[j][k] : fmaf(gs.v[j][k], ys.v[j][k], sum);
        }
        sum = row_allreduce<kWarpRows>(sum, Add(), scratch);
        for (int c = 0; c < a.chunks; ++c) {
            if (reload) gs.load(g, c, t, T, a.n, 0.0f);
            if (reload || a.log) ys.load(y, c, t, T, a.n, 0.0f);
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
                for (int k = 0; k < Slice::kWidth; ++k)
                    gs.v[j][k] = a.log ? gs.v[j][k] - expf(ys.v[j][k]) * sum : ys.v[j][k] * (gs.v[j][k] - sum);
            gs.store(dx, c, t, T, a.n);
        }
    }
}

template <template <class, bool> class Kernel, class T>
cudaError_t launch(SoftmaxArgs a, const TensorView* const* ops, int noperands, cudaStream_t stream) {
    using S = typename Storage<T>::type;
    const int nlead = ops[0]->ndim - 1;
    a.n = ops[0]->shape[nlead];
    a.rows = make_row_layout(ops, noperands, nlead);
    if (a.rows.rows == 0 || a.n == 0) return cudaSuccess;
    for (int k = 0; k < noperands; ++k) {
        a.stride[k] = a.n > 1 ? ops[k]->strides[nlead] : 1;
        a.vector[k] = a.stride[k] == 1 && a.rows.rows_aligned(k);
    }
    const RowTiling tile = row_tiling(a.n);
    a.chunks = tile.chunks;
    const auto kernel = tile.warp_rows ? Kernel<S, true>::get() : Kernel<S, false>::get();
    unsigned grid;
    const cudaError_t status =
        resident_grid(kernel, tile.threads, 0, ceil_div(a.rows.rows, tile.rows_per_block), &grid);
    if (status != cudaSuccess) return status;
    kernel<<<grid, tile.threads, 0, stream>>>(a);
    return cudaGetLastError();
}

template <class S, bool kWarpRows>
struct Forward {
    static auto get() { return softmax_forward_kernel<S, kWarpRows>; }
};

template <class S, bool kWarpRows>
struct Backward {
    static auto get() { return softmax_backward_kernel<S, kWarpRows>; }
};

}  // namespace

cudaError_t softmax_forward(const SoftmaxParams& p, cudaStream_t stream) {
    SoftmaxArgs a{};
    a.log = p.log;
    const TensorView* ops[] = {&p.x, &p.y};
    return p.x.dtype == DType::bf16 ? launch<Forward, bf16>(a, ops, 2, stream)
                                    : launch<Forward, float>(a, ops, 2, stream);
}

cudaError_t softmax_backward(const SoftmaxBackwardParams& p, cudaStream_t stream) {
    SoftmaxArgs a{};
    a.log = p.log;
    const TensorView* ops[] = {&p.grad_out, &p.y, &p.grad_in};
    return p.y.dtype == DType::bf16 ? launch<Backward, bf16>(a, ops, 3, stream)
                                    : launch<Backward, float>(a, ops, 3, stream);
}

}  // namespace fastnn::cuda
