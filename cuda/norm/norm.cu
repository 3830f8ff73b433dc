// LayerNorm / RMSNorm forward and backward on CUDA (contract: fastnn/norm.h).
//
// Floor: memory. Forward reads x and writes y (4 bytes per element in bf16,
// 8 in fp32, plus 8 bytes of statistics per row); backward reads grad_out and
// x and writes grad_x (6 / 12 bytes per element) plus the parameter-gradient
// partials (blocks x N floats per parameter, a few MB). At 16384 x 4096 bf16:
// 268 MB forward, 403 MB backward, 90 / 134 us at 3 TB/s.
//
// Geometry (rows.cuh): rows of up to 512 elements belong to one warp (8 rows
// per block, 16 elements per lane); longer rows to one block, 32 elements per
// thread (up to 512 threads), so rows up to 16384 elements stay in registers
// from the statistics to the output and x (and grad_out) are read once.
// Longer rows go in chunks of that size, read twice (the second time mostly
// from L2). 16-byte loads and stores where the rows are dense and aligned,
// element by element with strides otherwise. The grid is persistent: as many
// blocks as fit at once, each looping over rows.
//
// Statistics: each thread takes the two-pass mean and M2 of its registers,
// shifted by x[0] (so x - x[0] is exact for a large mean with a small
// variance, and y is computed from it, never from the rounded mean), and the
// threads' (count, mean, M2) merge by Chan's formula in a fixed tree. Where
// the shift itself overflows (finite values of both signs near FLT_MAX) the
// row is redone unshifted.
//
// Parameter gradients: a block accumulates grad_out * xhat and grad_out of its
// rows column by column in shared memory (every thread owns the same columns
// on every row, so no two threads touch one address and no atomics are
// needed), or in its own workspace row when that does not fit, then writes
// one float32 partial row; partials.h adds the blocks' rows in block order in
// float64. Same bits on every run.
#include "fastnn_cuda/cuda_api.h"
#include "launch.h"
#include "partials.h"
#include "rows.cuh"

namespace fastnn::cuda {
namespace {

struct NormArgs {
    RowLayout rows;  // forward: x, y, rstd, mean; backward: grad_out, x, grad_x, rstd, mean
    int64_t n;
    int64_t stride[3];  // last-dim element strides of operands 0..2
    bool vector[3];     // operand k's rows are dense and 16-byte aligned
    char* weight;
    int64_t weight_stride;
    bool weight_vector;
    char* bias;
    int64_t bias_stride;
    bool bias_vector;
    float eps;
    int chunks;  // register-sized pieces per row; 1: the row stays in registers
    // Backward: grad_weight then grad_bias partials, nparams rows of n floats per block.
    int nparams;
    bool grad_weight, grad_bias;
    float* partials;
    bool shared_acc;  // accumulate in shared memory, else in the block's partial rows
};

struct Moments {
    float count, mean, m2;
    int finite;  // 1 while every element seen is finite
};

struct MergeMoments {
    __device__ Moments operator()(const Moments& a, const Moments& b) const {
        const int finite = a.finite & b.finite;
        if (b.count == 0.0f) return {a.count, a.mean, a.m2, finite};
        if (a.count == 0.0f) return {b.count, b.mean, b.m2, finite};
        const float count = a.count + b.count, delta = b.mean - a.mean, wb = b.count / count;
        return {count, fmaf(delta, wb, a.mean), a.m2 + b.m2 + delta * delta * (a.count * wb), finite};
    }
};

// Two-pass moments of x - shift over the valid elements of a thread's slice.
template <class Slice>
__device__ __forceinline__ Moments slice_moments(const Slice& s, int c, int t, int T, int64_t n, float shift) {
    float count = 0.0f, sum = 0.0f;
    int finite = 1;
#pragma unroll
    for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
        for (int k = 0; k < Slice::kWidth; ++k)
            if (Slice::first(c, j, t, T) + k < n) {
                count += 1.0f;
                sum += s.v[j][k] - shift;
                finite &= isfinite(s.v[j][k]);
            }
    if (count == 0.0f) return {0.0f, 0.0f, 0.0f, finite};
    const float mean = sum / count;
    float m2 = 0.0f;
#pragma unroll
    for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
        for (int k = 0; k < Slice::kWidth; ++k)
            if (Slice::first(c, j, t, T) + k < n) {
                const float e = (s.v[j][k] - shift) - mean;
                m2 = fmaf(e, e, m2);
            }
    return {count, mean, m2, finite};
}

template <class Slice>
__device__ __forceinline__ float slice_sum_of_squares(const Slice& s) {
    float acc = 0.0f;  // elements past the row were loaded as 0
#pragma unroll
    for (int j = 0; j < Slice::kSlots; ++j)
#pragma unroll
        for (int k = 0; k < Slice::kWidth; ++k) acc = fmaf(s.v[j][k], s.v[j][k], acc);
    return acc;
}

template <class S, class W, bool kCentered, bool kWarpRows>
__global__ void __launch_bounds__(kWarpRows ? kWarpBlockThreads : kRowMaxThreads)
    norm_forward_kernel(const NormArgs a) {
    using Threads = RowThreads<kWarpRows>;
    using Slice = RowSlice<S, kWarpRows ? kWarpElems : kBlockElems>;
    constexpr int E = Slice::kWidth;
    __shared__ Moments moment_scratch[33];
    __shared__ float sum_scratch[33];
    const int t = Threads::rank(), T = Threads::count();
    const RowPtr<W> weight{a.weight, a.weight_stride, a.weight_vector};
    const RowPtr<W> bias{a.bias, a.bias_stride, a.bias_vector};
    const bool reload = a.chunks > 1;

    for (int64_t r = Threads::first_row(); r < a.rows.rows; r += Threads::row_step()) {
        const RowPtr<S> x{a.rows.row(0, r), a.stride[0], a.vector[0]};
        const RowPtr<S> y{a.rows.row(1, r), a.stride[1], a.vector[1]};
        Slice s;
        if (!reload) s.load(x, 0, t, T, a.n, 0.0f);

        float shift = 0.0f, center = 0.0f, rstd;
        if constexpr (kCentered) {
            auto moments = [&](float sh) {
                Moments m{0.0f, 0.0f, 0.0f, 1};
                for (int c = 0; c < a.chunks; ++c) {
                    if (reload) s.load(x, c, t, T, a.n, 0.0f);
                    m = MergeMoments()(m, slice_moments(s, c, t, T, a.n, sh));
                }
                return row_allreduce<kWarpRows>(m, MergeMoments(), moment_scratch);
            };
            if (a.n > 0) shift = to_float(*reinterpret_cast<const S*>(x.row));
            Moments m = moments(shift);
            if (m.finite && !(isfinite(m.mean) && isfinite(m.m2))) {
                shift = 0.0f;
                m = moments(0.0f);
            }
            center = m.mean;
            const double var = static_cast<double>(m.m2) / static_cast<double>(a.n);
            rstd = static_cast<float>(1.0 / sqrt(var + static_cast<double>(a.eps)));
            if (t == 0)
                *reinterpret_cast<float*>(a.rows.row(3, r)) = a.n > 0 ? shift + center : __int_as_float(0x7fc00000);
        } else {
            float ss = 0.0f;
            for (int c = 0; c < a.chunks; ++c) {
                if (reload) s.load(x, c, t, T, a.n, 0.0f);
                ss += slice_sum_of_squares(s);
            }
            ss = row_allreduce<kWarpRows>(ss, Add(), sum_scratch);
            const double mean_square = static_cast<double>(ss) / static_cast<double>(a.n);
            rstd = static_cast<float>(1.0 / sqrt(mean_square + static_cast<double>(a.eps)));
        }
        if (t == 0) *reinterpret_cast<float*>(a.rows.row(2, r)) = rstd;

        for (int c = 0; c < a.chunks; ++c) {
            if (reload) s.load(x, c, t, T, a.n, 0.0f);
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j) {
                const int64_t at = Slice::first(c, j, t, T);
                if (at >= a.n) continue;
                float w[E], b[E];
                if (a.weight) weight.load(at, a.n, 1.0f, w);
                if (a.bias) bias.load(at, a.n, 0.0f, b);
#pragma unroll
                for (int k = 0; k < E; ++k) {
                    const float v = ((s.v[j][k] - shift) - center) * rstd;
                    s.v[j][k] = a.weight && a.bias ? fmaf(v, w[k], b[k]) : a.weight ? v * w[k] : a.bias ? v + b[k] : v;
                }
            }
            s.store(y, c, t, T, a.n);
        }
    }
}

struct GradSums {
    float g, gd;  // sum(grad_out * weight), sum(grad_out * weight * (x - mean))
    __device__ GradSums operator+(const GradSums& o) const { return {g + o.g, gd + o.gd}; }
};

// With d = x - mean (x for rms), xhat = d * rstd and g = grad_out * weight:
//   grad_x = rstd * (g - d * k - mean(g)),  k = rstd^2 * mean(g * d)
// (working from d rather than a rounded xhat saves a rounding on each term of
// the cancelling difference). The first sweep adds grad_out * xhat and
// grad_out into the accumulators of the parameter gradients.
template <class S, class W, bool kCentered, bool kWarpRows>
__global__ void __launch_bounds__(kWarpRows ? kWarpBlockThreads : kRowMaxThreads)
    norm_backward_kernel(const NormArgs a) {
    using Threads = RowThreads<kWarpRows>;
    using Slice = RowSlice<S, kWarpRows ? kWarpElems : kBlockElems>;
    constexpr int E = Slice::kWidth;
    extern __shared__ float shared_acc[];  // [row groups][nparams][n] with a.shared_acc
    __shared__ GradSums sum_scratch[33];
    const int t = Threads::rank(), T = Threads::count();
    const int64_t n = a.n, group_floats = int64_t(a.nparams) * n;
    const RowPtr<W> weight{a.weight, a.weight_stride, a.weight_vector};
    const bool reload = a.chunks > 1;
    float* const acc = a.nparams == 0 ? nullptr
                       : a.shared_acc ? shared_acc + Threads::group() * group_floats
                                      : a.partials + blockIdx.x * group_floats;
    float* const acc_w = acc;
    float* const acc_b = acc + (a.grad_weight ? n : 0);

    // Each thread zeroes the columns it will accumulate (no barrier needed).
    if (a.nparams > 0)
        for (int c = 0; c < a.chunks; ++c)
            for (int j = 0; j < Slice::kSlots; ++j)
                for (int k = 0; k < E; ++k) {
                    const int64_t col = Slice::first(c, j, t, T) + k;
                    if (col >= n) break;
                    if (a.grad_weight) acc_w[col] = 0.0f;
                    if (a.grad_bias) acc_b[col] = 0.0f;
                }

    for (int64_t r = Threads::first_row(); r < a.rows.rows; r += Threads::row_step()) {
        const RowPtr<S> dy{a.rows.row(0, r), a.stride[0], a.vector[0]};
        const RowPtr<S> x{a.rows.row(1, r), a.stride[1], a.vector[1]};
        const RowPtr<S> dx{a.rows.row(2, r), a.stride[2], a.vector[2]};
        const float rstd = *reinterpret_cast<const float*>(a.rows.row(3, r));
        const float mean = kCentered ? *reinterpret_cast<const float*>(a.rows.row(4, r)) : 0.0f;
        Slice gs, xs;
        if (!reload) {
            gs.load(dy, 0, t, T, n, 0.0f);
            xs.load(x, 0, t, T, n, 0.0f);
        }
        GradSums sums{0.0f, 0.0f};
        for (int c = 0; c < a.chunks; ++c) {
            if (reload) {
                gs.load(dy, c, t, T, n, 0.0f);
                xs.load(x, c, t, T, n, 0.0f);
            }
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j) {
                const int64_t at = Slice::first(c, j, t, T);
                if (at >= n) continue;
                float w[E];
                if (a.weight) weight.load(at, n, 1.0f, w);
#pragma unroll
                for (int k = 0; k < E; ++k) {
                    if (at + k >= n) continue;
                    const float go = gs.v[j][k], d = kCentered ? xs.v[j][k] - mean : xs.v[j][k];
                    const float g = a.weight ? go * w[k] : go;
                    if constexpr (kCentered) sums.g += g;
                    sums.gd = fmaf(g, d, sums.gd);
                    if (a.grad_weight) acc_w[at + k] = fmaf(go, d * rstd, acc_w[at + k]);
                    if (a.grad_bias) acc_b[at + k] += go;
                }
            }
        }
        sums = row_allreduce<kWarpRows>(sums, Add(), sum_scratch);
        const float inv_n = 1.0f / static_cast<float>(n);
        const float mean_g = kCentered ? sums.g * inv_n : 0.0f;
        const float neg_k = -rstd * (rstd * (sums.gd * inv_n));

        for (int c = 0; c < a.chunks; ++c) {
            if (reload) {
                gs.load(dy, c, t, T, n, 0.0f);
                xs.load(x, c, t, T, n, 0.0f);
            }
#pragma unroll
            for (int j = 0; j < Slice::kSlots; ++j) {
                const int64_t at = Slice::first(c, j, t, T);
                if (at >= n) continue;
                float w[E];
                if (a.weight) weight.load(at, n, 1.0f, w);
#pragma unroll
                for (int k = 0; k < E; ++k) {
                    const float d = kCentered ? xs.v[j][k] - mean : xs.v[j][k];
                    const float g = a.weight ? gs.v[j][k] * w[k] : gs.v[j][k];
                    const float v = fmaf(d, neg_k, g);
                    gs.v[j][k] = (kCentered ? v - mean_g : v) * rstd;
                }
            }
            gs.store(dx, c, t, T, n);
        }
    }

    if (a.nparams > 0 && a.shared_acc) {
        __syncthreads();
        float* out = a.partials + blockIdx.x * group_floats;
        for (int64_t i = threadIdx.x; i < group_floats; i += blockDim.x) {
            float sum = shared_acc[i];
            for (int g = 1; g < Threads::kRowsPerBlock; ++g) sum += shared_acc[g * group_floats + i];
            out[i] = sum;
        }
    }
}

struct Operand {
    int64_t stride;
    bool vector;
};

Operand row_operand(const RowLayout& rows, int op, const TensorView& v, int64_t n) {
    const int64_t stride = n > 1 ? v.strides[v.ndim - 1] : 1;
    return {stride, stride == 1 && rows.rows_aligned(op)};
}

void set_param(const TensorView& v, bool present, char** data, int64_t* stride, bool* vector) {
    if (!present) return;
    *data = static_cast<char*>(v.data);
    *stride = v.shape[0] > 1 ? v.strides[0] : 1;
    *vector = *stride == 1 && reinterpret_cast<uintptr_t>(v.data) % 16 == 0;
}

template <class Kernel>
cudaError_t launch_rows(Kernel kernel, const NormArgs& a, int threads, size_t shared_bytes, int64_t rows_per_block,
                        unsigned* grid, cudaStream_t stream) {
    cudaError_t status = allow_shared_memory(kernel, shared_bytes);
    if (status == cudaSuccess)
        status = resident_grid(kernel, threads, shared_bytes, ceil_div(a.rows.rows, rows_per_block), grid);
    if (status != cudaSuccess) return status;
    kernel<<<*grid, threads, shared_bytes, stream>>>(a);
    return cudaGetLastError();
}

template <class T, class Wt, bool kCentered>
cudaError_t forward_typed(const NormForwardParams& p, cudaStream_t stream) {
    using S = typename Storage<T>::type;
    using W = typename Storage<Wt>::type;
    const int nlead = p.x.ndim - 1;
    NormArgs a{};
    a.n = p.x.shape[nlead];
    const TensorView* ops[] = {&p.x, &p.y, &p.rstd, &p.mean};
    a.rows = make_row_layout(ops, kCentered ? 4 : 3, nlead);
    if (a.rows.rows == 0) return cudaSuccess;
    for (int k = 0; k < 2; ++k) {
        const Operand o = row_operand(a.rows, k, *ops[k], a.n);
        a.stride[k] = o.stride;
        a.vector[k] = o.vector;
    }
    set_param(p.weight, p.has_weight, &a.weight, &a.weight_stride, &a.weight_vector);
    set_param(p.bias, kCentered && p.has_bias, &a.bias, &a.bias_stride, &a.bias_vector);
    a.eps = p.eps;
    const RowTiling tile = row_tiling(a.n);
    a.chunks = tile.chunks;
    const auto kernel = tile.warp_rows ? norm_forward_kernel<S, W, kCentered, true>
                                       : norm_forward_kernel<S, W, kCentered, false>;
    unsigned grid;
    return launch_rows(kernel, a, tile.threads, 0, tile.rows_per_block, &grid, stream);
}

template <class T, class Wt, bool kCentered>
cudaError_t backward_typed(const NormBackwardParams& p, cudaStream_t stream) {
    using S = typename Storage<T>::type;
    using W = typename Storage<Wt>::type;
    const int nlead = p.x.ndim - 1;
    NormArgs a{};
    a.n = p.x.shape[nlead];
    if (a.n == 0) return cudaSuccess;  // every output is empty
    const TensorView* ops[] = {&p.grad_out, &p.x, &p.grad_x, &p.rstd, &p.mean};
    a.rows = make_row_layout(ops, kCentered ? 5 : 4, nlead);
    for (int k = 0; k < 3; ++k) {
        const Operand o = row_operand(a.rows, k, *ops[k], a.n);
        a.stride[k] = o.stride;
        a.vector[k] = o.vector;
    }
    set_param(p.weight, p.has_weight, &a.weight, &a.weight_stride, &a.weight_vector);
    a.grad_weight = p.want_grad_weight;
    a.grad_bias = kCentered && p.want_grad_bias;
    a.nparams = int(a.grad_weight) + int(a.grad_bias);
    const int64_t row_floats = int64_t(a.nparams) * a.n;

    const RowTiling tile = row_tiling(a.n);
    a.chunks = tile.chunks;
    const int threads = tile.threads, groups = tile.rows_per_block;
    DeviceLimits limits;
    cudaError_t status = current_device_limits(&limits);
    if (status != cudaSuccess) return status;
    // The grid (and so the order of the row sums) is sized for both
    // parameter gradients whichever are asked for, so that grad_weight has
    // the same bits with or without grad_bias. The budget leaves room for the
    // kernel's static shared memory (the reduction scratch).
    const auto acc_bytes = [&](int nparams) { return size_t(groups) * size_t(nparams) * size_t(a.n) * sizeof(float); };
    const auto fits = [&](size_t bytes) { return bytes + 1024 <= limits.shared_memory_optin; };
    const int grid_params = kCentered ? 2 : 1;
    a.shared_acc = fits(acc_bytes(a.nparams));
    const size_t shared_bytes = a.shared_acc ? acc_bytes(a.nparams) : 0;
    const size_t grid_bytes = fits(acc_bytes(grid_params)) ? acc_bytes(grid_params) : 0;

    unsigned grid = 0;
    const auto kernel = tile.warp_rows ? norm_backward_kernel<S, W, kCentered, true>
                                       : norm_backward_kernel<S, W, kCentered, false>;
    if (a.rows.rows > 0) {
        status = allow_shared_memory(kernel, shared_bytes > grid_bytes ? shared_bytes : grid_bytes);
        if (status == cudaSuccess)
            status = resident_grid(kernel, threads, grid_bytes, ceil_div(a.rows.rows, groups), &grid);
        if (status != cudaSuccess) return status;
    }
    StreamScratch partials(size_t(grid) * size_t(row_floats) * sizeof(float), stream);
    if (partials.status() != cudaSuccess) return partials.status();
    a.partials = partials.as<float>();
    if (grid > 0) {
        kernel<<<grid, threads, shared_bytes, stream>>>(a);
        if ((status = cudaGetLastError()) != cudaSuccess) return status;
    }
    if (a.grad_weight &&
        (status = sum_column_partials(a.partials, grid, row_floats, 0, p.grad_weight, stream)) != cudaSuccess)
        return status;
    if (a.grad_bias)
        status = sum_column_partials(a.partials, grid, row_floats, a.grad_weight ? a.n : 0, p.grad_bias, stream);
    return status;
}

// x float32 or bfloat16; parameters float32 or x's dtype.
template <template <class, class, bool> class Fn, class Params>
cudaError_t dispatch(bool centered, DType x, DType w, const Params& p, cudaStream_t stream) {
    const auto run = [&](auto kCentered) {
        constexpr bool c = decltype(kCentered)::value;
        if (x == DType::f32) return Fn<float, float, c>::run(p, stream);
        return w == DType::bf16 ? Fn<bf16, bf16, c>::run(p, stream) : Fn<bf16, float, c>::run(p, stream);
    };
    return centered ? run(std::true_type{}) : run(std::false_type{});
}

template <class T, class Wt, bool kCentered>
struct Forward {
    static cudaError_t run(const NormForwardParams& p, cudaStream_t s) { return forward_typed<T, Wt, kCentered>(p, s); }
};

template <class T, class Wt, bool kCentered>
struct Backward {
    static cudaError_t run(const NormBackwardParams& p, cudaStream_t s) {
        return backward_typed<T, Wt, kCentered>(p, s);
    }
};

}  // namespace

cudaError_t norm_forward(const NormForwardParams& p, cudaStream_t stream) {
    const DType w = p.has_weight ? p.weight.dtype : p.has_bias ? p.bias.dtype : DType::f32;
    return dispatch<Forward>(p.kind == NormKind::layer, p.x.dtype, w, p, stream);
}

cudaError_t norm_backward(const NormBackwardParams& p, cudaStream_t stream) {
    const DType w = p.has_weight ? p.weight.dtype : p.want_grad_bias ? p.grad_bias.dtype : DType::f32;
    return dispatch<Backward>(p.kind == NormKind::layer, p.x.dtype, w, p, stream);
}

}  // namespace fastnn::cuda
