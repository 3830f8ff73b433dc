// int8 quantization on CUDA (contract: fastnn/quant.h), with the CPU kernels'
// arithmetic to the bit: q = clamp(round_half_even(x * (1 / scale)), -128,
// 127) with 1 / scale an IEEE float32 division, NaN -> 0, +-inf saturated;
// dequantization float(q) * scale rounded once; dynamic per-row scales
// max|x * smooth_inv| / 127 (NaN for a row holding NaN or inf, 0 for a zero
// row, whose q is then 0). The outputs are what the CUDA int8 GEMM takes:
// quantize_rows gives A (M, K) and its row_scale, a per-channel quantized
// weight W (N, K) gives B = W^T and col_scale.
//
// Floor: memory, 5 (fp32) or 3 (bf16) bytes per element. quantize and
// dequantize are a 2-D map: grid.x tiles the columns (one 16-byte pack of x
// per thread, its per-column scales loaded once), grid.y strides over the
// rows. quantize_rows is a row kernel (rows.cuh): the row's absolute maximum
// from the registers, then the quantized row from the same registers, so x is
// read once for rows up to 16384 elements.
//
// Scales live on the device: the binding cannot check that they are positive
// and finite without a synchronization, so that is the caller's contract
// here (a zero scale saturates, a NaN one quantizes to 0).
#include "common.cuh"
#include "fastnn_cuda/cuda_api.h"
#include "launch.h"
#include "rows.cuh"

namespace fastnn::cuda {
namespace {

constexpr int kThreads = 256;

// The bounds are integers, so clamping before rounding equals round-then-clamp.
__device__ __forceinline__ int8_t round_to_i8(float v) {
    if (v != v) return 0;
    return static_cast<int8_t>(__float2int_rn(fminf(fmaxf(v, -128.0f), 127.0f)));
}

// int8 elements [first, first + N) of a row, `stride` apart; whole N-byte
// stores when the row is dense and aligned.
template <int N>
struct Int8Row {
    int8_t* row;
    int64_t stride;
    bool vector;

    __device__ __forceinline__ void store(int64_t first, int64_t n, const int8_t (&q)[N]) const {
        if (vector && first + N <= n) {
            if constexpr (N == 8) {
                uint2 raw;
                memcpy(&raw, q, sizeof raw);
                *reinterpret_cast<uint2*>(row + first) = raw;
            } else {
                uint32_t raw;
                memcpy(&raw, q, sizeof raw);
                *reinterpret_cast<uint32_t*>(row + first) = raw;
            }
            return;
        }
#pragma unroll
        for (int k = 0; k < N; ++k)
            if (first + k < n) row[(first + k) * stride] = q[k];
    }

    __device__ __forceinline__ void load(int64_t first, int64_t n, float (&v)[N]) const {
#pragma unroll
        for (int k = 0; k < N; ++k) v[k] = first + k < n ? static_cast<float>(row[(first + k) * stride]) : 0.0f;
    }
};

struct MapArgs {
    char* x;  // float32 / bfloat16 (R, C)
    int64_t x_row, x_col;
    bool x_vector;
    int8_t* q;  // (R, C)
    int64_t q_row, q_col;
    bool q_vector;
    const float* scale;
    int64_t scale_stride;
    QuantAxis axis;
    int64_t rows, cols;
};

// kDequantize: x = float(q) * scale; else q = round(x * (1 / scale)).
template <class S, bool kDequantize>
__global__ void __launch_bounds__(kThreads) quant_map_kernel(const MapArgs a) {
    constexpr int E = kPack<S>;
    const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * E;
    if (first >= a.cols) return;
    // The CPU path's factors: per column 1 / scale[c] (or scale[c]) times a
    // row factor of 1; per row or tensor the row's factor alone.
    float col_factor[E];
#pragma unroll
    for (int k = 0; k < E; ++k) {
        const float s = a.axis == QuantAxis::cols && first + k < a.cols ? a.scale[(first + k) * a.scale_stride] : 1.0f;
        col_factor[k] = kDequantize || a.axis != QuantAxis::cols ? s : 1.0f / s;
    }
    for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
        const float s = a.axis == QuantAxis::cols ? 1.0f : a.scale[a.axis == QuantAxis::rows ? r * a.scale_stride : 0];
        const float row_factor = kDequantize || a.axis == QuantAxis::cols ? s : 1.0f / s;
        const RowPtr<S> x{a.x + r * a.x_row * int64_t(sizeof(S)), a.x_col, a.x_vector};
        const Int8Row<E> q{a.q + r * a.q_row, a.q_col, a.q_vector};
        float v[E];
        if constexpr (kDequantize) {
            q.load(first, a.cols, v);
#pragma unroll
            for (int k = 0; k < E; ++k) v[k] = v[k] * row_factor * col_factor[k];
            x.store(first, a.cols, v);
        } else {
            x.load(first, a.cols, 0.0f, v);
            int8_t out[E];
#pragma unroll
            for (int k = 0; k < E; ++k) out[k] = round_to_i8(v[k] * col_factor[k] * row_factor);
            q.store(first, a.cols, out);
        }
    }
}

template <class T, bool kDequantize>
cudaError_t map_typed(const TensorView& xv, const TensorView& qv, const TensorView& scale, QuantAxis axis,
                      cudaStream_t stream) {
    using S = typename Storage<T>::type;
    constexpr int E = kPack<S>;
    MapArgs a{};
    a.rows = xv.shape[0];
    a.cols = xv.shape[1];
    if (a.rows == 0 || a.cols == 0) return cudaSuccess;
    a.x = static_cast<char*>(xv.data);
    a.x_row = xv.strides[0];
    a.x_col = a.cols > 1 ? xv.strides[1] : 1;
    a.x_vector = a.x_col == 1 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 &&
                 (a.rows == 1 || (a.x_row * int64_t(sizeof(S))) % 16 == 0);
    a.q = static_cast<int8_t*>(qv.data);
    a.q_row = qv.strides[0];
    a.q_col = a.cols > 1 ? qv.strides[1] : 1;
    a.q_vector = a.q_col == 1 && reinterpret_cast<uintptr_t>(a.q) % E == 0 && (a.rows == 1 || a.q_row % E == 0);
    a.scale = static_cast<const float*>(scale.data);
    a.scale_stride = scale.ndim > 0 && scale.shape[0] > 1 ? scale.strides[0] : 0;
    a.axis = axis;
    const auto kernel = quant_map_kernel<S, kDequantize>;
    const int64_t column_blocks = ceil_div(ceil_div(a.cols, E), kThreads);
    unsigned resident;
    const cudaError_t status = resident_grid(kernel, kThreads, 0, INT32_MAX, &resident);
    if (status != cudaSuccess) return status;
    int64_t row_blocks = ceil_div(resident, column_blocks);
    row_blocks = row_blocks < a.rows ? row_blocks : a.rows;
    row_blocks = row_blocks < 65535 ? row_blocks : 65535;
    kernel<<<dim3(static_cast<unsigned>(column_blocks), static_cast<unsigned>(row_blocks)), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------
// Dynamic per-row quantization.

struct RowsArgs {
    RowLayout rows;  // x, q, scale
    int64_t n;
    int64_t x_stride, q_stride;
    bool x_vector, q_vector;
    const float* smooth;  // (K,) or null
    int64_t smooth_stride;
    bool smooth_vector;
    int chunks;
};

struct AbsMax {
    float value;
    int finite;
};

struct MergeAbsMax {
    __device__ AbsMax operator()(const AbsMax& a, const AbsMax& b) const {
        return {fmaxf(a.value, b.value), a.finite & b.finite};
    }
};

template <class S, bool kWarpRows>
__global__ void __launch_bounds__(kWarpRows ? kWarpBlockThreads : kRowMaxThreads)
    quantize_rows_kernel(const RowsArgs a) {
    using Threads = RowThreads<kWarpRows>;
    using Slice = RowSlice<S, kWarpRows ? kWarpElems : kBlockElems>;
    constexpr int E = Slice::kWidth;
    __shared__ AbsMax scratch[33];
    const int t = Threads::rank(), T = Threads::count();
    const RowPtr<float> smooth{reinterpret_cast<char*>(const_cast<float*>(a.smooth)), a.smooth_stride,
                               a.smooth_vector};
    // x * smooth_inv, as the CPU path scales before both the maximum and the rounding.
    auto load_scaled = [&](Slice& s, const RowPtr<S>& x, int c) {
        s.load(x, c, t, T, a.n, 0.0f);
        if (!a.smooth) return;
#pragma unroll
        for (int j = 0; j < Slice::kSlots; ++j) {
            float m[E];
            smooth.load(Slice::first(c, j, t, T), a.n, 0.0f, m);
#pragma unroll
            for (int k = 0; k < E; ++k) s.v[j][k] *= m[k];
        }
    };
    for (int64_t r = Threads::first_row(); r < a.rows.rows; r += Threads::row_step()) {
        const RowPtr<S> x{a.rows.row(0, r), a.x_stride, a.x_vector};
        const Int8Row<E> q{reinterpret_cast<int8_t*>(a.rows.row(1, r)), a.q_stride, a.q_vector};
        Slice s;
        AbsMax m{0.0f, 1};  // elements past the row were loaded as 0
        for (int c = 0; c < a.chunks; ++c) {
            load_scaled(s, x, c);
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
                for (int k = 0; k < E; ++k) m = {fmaxf(m.value, fabsf(s.v[j][k])), m.finite & isfinite(s.v[j][k])};
        }
        m = row_allreduce<kWarpRows>(m, MergeAbsMax(), scratch);
        const float scale = m.finite ? m.value / 127.0f : __int_as_float(0x7fc00000);
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        if (t == 0) *reinterpret_cast<float*>(a.rows.row(2, r)) = scale;
        for (int c = 0; c < a.chunks; ++c) {
            if (a.chunks > 1) load_scaled(s, x, c);
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j) {
                const int64_t at = Slice::first(c, j, t, T);
                if (at >= a.n) continue;
                int8_t out[E];
#pragma unroll
                for (int k = 0; k < E; ++k) out[k] = round_to_i8(s.v[j][k] * inv);
                q.store(at, a.n, out);
            }
        }
    }
}

template <class T>
cudaError_t quantize_rows_typed(const QuantizeRowsParams& p, cudaStream_t stream) {
    using S = typename Storage<T>::type;
    RowsArgs a{};
    a.n = p.x.shape[1];
    const TensorView* ops[] = {&p.x, &p.q, &p.scale};
    a.rows = make_row_layout(ops, 3, 1);
    if (a.rows.rows == 0) return cudaSuccess;
    a.x_stride = a.n > 1 ? p.x.strides[1] : 1;
    a.q_stride = a.n > 1 ? p.q.strides[1] : 1;
    a.x_vector = a.x_stride == 1 && a.rows.rows_aligned(0);
    a.q_vector = a.q_stride == 1 && reinterpret_cast<uintptr_t>(p.q.data) % kPack<S> == 0 &&
                 (p.q.shape[0] <= 1 || p.q.strides[0] % kPack<S> == 0);
    if (p.smooth_inv.data) {
        a.smooth = static_cast<const float*>(p.smooth_inv.data);
        a.smooth_stride = a.n > 1 ? p.smooth_inv.strides[0] : 1;
        a.smooth_vector = a.smooth_stride == 1 && reinterpret_cast<uintptr_t>(a.smooth) % 16 == 0;
    }
    const RowTiling tile = row_tiling(a.n);
    a.chunks = tile.chunks;
    const auto kernel = tile.warp_rows ? quantize_rows_kernel<S, true> : quantize_rows_kernel<S, false>;
    unsigned grid;
    const cudaError_t status =
        resident_grid(kernel, tile.threads, 0, ceil_div(a.rows.rows, tile.rows_per_block), &grid);
    if (status != cudaSuccess) return status;
    kernel<<<grid, tile.threads, 0, stream>>>(a);
    return cudaGetLastError();
}

}  // namespace

cudaError_t quantize(const QuantizeParams& p, cudaStream_t stream) {
    return p.x.dtype == DType::bf16 ? map_typed<bf16, false>(p.x, p.q, p.scale, p.axis, stream)
                                    : map_typed<float, false>(p.x, p.q, p.scale, p.axis, stream);
}

cudaError_t dequantize(const DequantizeParams& p, cudaStream_t stream) {
    return p.x.dtype == DType::bf16 ? map_typed<bf16, true>(p.x, p.q, p.scale, p.axis, stream)
                                    : map_typed<float, true>(p.x, p.q, p.scale, p.axis, stream);
}

cudaError_t quantize_rows(const QuantizeRowsParams& p, cudaStream_t stream) {
    return p.x.dtype == DType::bf16 ? quantize_rows_typed<bf16>(p, stream) : quantize_rows_typed<float>(p, stream);
}

}  // namespace fastnn::cuda
