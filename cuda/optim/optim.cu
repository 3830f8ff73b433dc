// Multi-tensor fused optimizers (Adam/AdamW, SGD, RMSprop) and gradient-norm
// clipping on CUDA, with the CPU path's arithmetic operation for operation
// (contract: fastnn/optim.h; the per-element formulas are those of
// csrc/optim/optim_kernels.cpp, every product and sum rounded where the CPU
// path rounds it: explicit fmaf for its fused multiply-adds, __fmul_rn where
// a contraction by the compiler would fuse what the CPU rounds).
//
// Floor: memory. AdamW on fp32 reads param, grad, exp_avg, exp_avg_sq and
// writes param, exp_avg, exp_avg_sq: 28 bytes per element, so 100M
// parameters move 2.8 GB, 0.93 ms at 3 TB/s.
//
// One launch covers up to kTableRows tensors: the table of their pointers
// and sizes travels as the kernel's parameter (under the 4 KB limit), each
// tensor is cut into chunks of kChunk elements, and block b finds its tensor
// by a binary search of the chunk prefix sums, so one huge tensor and many
// small ones load the GPU alike. Elements go 16 bytes of the parameter at a
// time (4 fp32 or 8 bf16; the float32 state in one or two 16-byte accesses)
// when every pointer of the tensor is aligned, one by one otherwise.
//
// Step counts and GradScaler live on the device: a tiny kernel per table
// first increments the steps (unless found_inf) and derives each tensor's
// Adam bias corrections from the new count in float64, as the CPU path does
// on the host; grad_scale and found_inf are read by every block.
//
// Gradient norm: each chunk's partial in a fixed order (float32 within a
// thread, float64 across), written to a workspace and summed by one block in
// chunk order: the same bits on every run.
#include "common.cuh"
#include "fastnn_cuda/cuda_api.h"
#include "launch.h"
#include "rows.cuh"

namespace fastnn::cuda {
namespace {

constexpr int kTableRows = 48;
constexpr int64_t kChunk = 16384;
constexpr int kThreads = 256;
constexpr int kFinishThreads = 1024;

struct OptimTable {
    void* param[kTableRows];
    void* grad[kTableRows];
    float* state[kOptimMaxState][kTableRows];
    float* master[kTableRows];
    float* step[kTableRows];
    int64_t numel[kTableRows];
    int32_t chunk_begin[kTableRows + 1];  // block b works on chunk b - chunk_begin[i] of row i
    int count;
};

struct DeviceCoeffs {
    OptimCoeffs c;  // adam_rows unused: the bias corrections come from the device step counts
    const float* grad_scale;
    const float* found_inf;
    double lr, beta1, beta2;
    bool scaled, momentum, momentum_init, nesterov, centered;
};

static_assert(sizeof(OptimTable) + sizeof(DeviceCoeffs) <= 4000, "kernel parameters stay under 4 KB");

// The row whose chunks hold block b: the last row with chunk_begin <= b.
template <class Table>
__device__ __forceinline__ int find_row(const Table& t, int64_t b) {
    int lo = 0, hi = t.count;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (t.chunk_begin[mid] <= b) lo = mid;
        else hi = mid;
    }
    return lo;
}

__device__ __forceinline__ bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// torch.lerp: one fused multiply-add from whichever end is nearer, so a
// weight of exactly 1 returns `end` exactly.
__device__ __forceinline__ float lerp(float start, float end, float weight) {
    const float diff = end - start;
    return fabsf(weight) < 0.5f ? fmaf(weight, diff, start) : fmaf(weight - 1.0f, diff, end);
}

// torch.maximum: NaN when either operand is.
__device__ __forceinline__ float maximum_nan(float a, float b) { return a != a ? a : b != b ? b : fmaxf(a, b); }

// Increments each row's step count (unless found_inf) and, for Adam, derives
// the row's bias corrections from the new count in float64, as the CPU path
// does on the host: {-lr / (1 - beta1^t), sqrt(1 - beta2^t)}.
__global__ void advance_steps_kernel(const OptimTable t, const DeviceCoeffs dc, bool adam, float2* adam_rows) {
    if (dc.found_inf && *dc.found_inf != 0.0f) return;
    const int i = threadIdx.x;
    if (i >= t.count) return;
    const float step = *t.step[i] + 1.0f;
    *t.step[i] = step;
    if (!adam) return;
    const double bias_correction1 = 1.0 - pow(dc.beta1, static_cast<double>(step));
    const double bias_correction2 = 1.0 - pow(dc.beta2, static_cast<double>(step));
    adam_rows[i] = make_float2(static_cast<float>(-(dc.lr / bias_correction1)),
                               static_cast<float>(sqrt(bias_correction2)));
}

// Two blocks per SM at least (up to 128 registers): left to itself ptxas for
// sm_80 holds the bf16 amsgrad step to 64 and spills.
template <class S, OptimKind kKind, bool kMaster, bool kAmsgrad>
__global__ void __launch_bounds__(kThreads, 2)
    optim_step_kernel(const OptimTable t, const DeviceCoeffs dc, const float2* adam_rows) {
    if (dc.found_inf && *dc.found_inf != 0.0f) return;
    constexpr int V = kPack<S>;
    const OptimCoeffs& c = dc.c;
    const int i = find_row(t, blockIdx.x);
    const int64_t lo = (int64_t(blockIdx.x) - t.chunk_begin[i]) * kChunk;
    const int64_t hi = lo + kChunk < t.numel[i] ? lo + kChunk : t.numel[i];
    bool vector = aligned(t.param[i]) && aligned(t.grad[i]) && (!kMaster || aligned(t.master[i]));
    for (int k = 0; k < kOptimMaxState; ++k) vector = vector && aligned(t.state[k][i]);
    const RowPtr<S> param{static_cast<char*>(t.param[i]), 1, vector};
    const RowPtr<S> grad{static_cast<char*>(t.grad[i]), 1, vector};
    const RowPtr<float> master{reinterpret_cast<char*>(t.master[i]), 1, vector};
    const RowPtr<float> s0{reinterpret_cast<char*>(t.state[0][i]), 1, vector};
    const RowPtr<float> s1{reinterpret_cast<char*>(t.state[1][i]), 1, vector};
    const RowPtr<float> s2{reinterpret_cast<char*>(t.state[2][i]), 1, vector};
    const float inv_grad_scale = dc.scaled ? 1.0f / *dc.grad_scale : 1.0f;
    float neg_step_size = c.neg_step_size, bias_correction2_sqrt = 1.0f;
    if constexpr (kKind == OptimKind::adam) {
        neg_step_size = adam_rows[i].x;
        bias_correction2_sqrt = adam_rows[i].y;
    }

    for (int64_t e = lo + int64_t(threadIdx.x) * V; e < hi; e += int64_t(kThreads) * V) {
        // The gradient as the update sees it: unscaled (and written back
        // unscaled, as GradScaler.unscale_ leaves it), then negated when maximizing.
        float g[V], p[V];
        grad.load(e, hi, 0.0f, g);
        if (dc.scaled) {
#pragma unroll
            for (int k = 0; k < V; ++k) g[k] = g[k] * inv_grad_scale;
            grad.store(e, hi, g);
        }
#pragma unroll
        for (int k = 0; k < V; ++k) g[k] = g[k] * c.grad_sign;
        if constexpr (kMaster) master.load(e, hi, 0.0f, p);
        else param.load(e, hi, 0.0f, p);

        if constexpr (kKind == OptimKind::adam) {
            float m[V], v[V], vmax[V];
            s0.load(e, hi, 0.0f, m);
            s1.load(e, hi, 0.0f, v);
            if constexpr (kAmsgrad) s2.load(e, hi, 0.0f, vmax);
#pragma unroll
            for (int k = 0; k < V; ++k) {
                if (c.decoupled) p[k] = __fmul_rn(p[k], c.decay_factor);
                if (c.l2) g[k] = fmaf(p[k], c.weight_decay, g[k]);
                m[k] = lerp(m[k], g[k], c.lerp_weight);
                v[k] = fmaf(__fmul_rn(c.one_minus_beta2, g[k]), g[k], __fmul_rn(v[k], c.beta2));
            }
            s0.store(e, hi, m);
            s1.store(e, hi, v);
            if constexpr (kAmsgrad) {
#pragma unroll
                for (int k = 0; k < V; ++k) v[k] = vmax[k] = maximum_nan(vmax[k], v[k]);
                s2.store(e, hi, vmax);
            }
#pragma unroll
            for (int k = 0; k < V; ++k) {
                const float denom = sqrtf(v[k]) / bias_correction2_sqrt + c.eps;
                p[k] = p[k] + __fmul_rn(neg_step_size, m[k]) / denom;
            }
        } else if constexpr (kKind == OptimKind::sgd) {
            float buf[V];
            if (dc.momentum && !dc.momentum_init) s0.load(e, hi, 0.0f, buf);
#pragma unroll
            for (int k = 0; k < V; ++k) {
                if (c.l2) g[k] = fmaf(p[k], c.weight_decay, g[k]);
                if (dc.momentum) {
                    buf[k] = dc.momentum_init ? g[k] : fmaf(g[k], c.one_minus_dampening, __fmul_rn(buf[k], c.momentum));
                    g[k] = dc.nesterov ? fmaf(buf[k], c.momentum, g[k]) : buf[k];
                }
                p[k] = fmaf(g[k], c.neg_step_size, p[k]);
            }
            if (dc.momentum) s0.store(e, hi, buf);
        } else {
            float sq[V], buf[V], ga[V];
            s0.load(e, hi, 0.0f, sq);
            if (dc.momentum) s1.load(e, hi, 0.0f, buf);
            if (dc.centered) s2.load(e, hi, 0.0f, ga);
#pragma unroll
            for (int k = 0; k < V; ++k) {
                if (c.l2) g[k] = fmaf(p[k], c.weight_decay, g[k]);
                sq[k] = fmaf(__fmul_rn(c.one_minus_beta2, g[k]), g[k], __fmul_rn(sq[k], c.beta2));
                float avg;
                if (dc.centered) {
                    ga[k] = lerp(ga[k], g[k], c.lerp_weight);
                    avg = sqrtf(fmaf(-ga[k], ga[k], sq[k]));
                } else {
                    avg = sqrtf(sq[k]);
                }
                avg = avg + c.eps;
                if (dc.momentum) {
                    buf[k] = __fmul_rn(buf[k], c.momentum) + g[k] / avg;
                    p[k] = fmaf(buf[k], c.neg_step_size, p[k]);
                } else {
                    p[k] = p[k] + __fmul_rn(c.neg_step_size, g[k]) / avg;
                }
            }
            s0.store(e, hi, sq);
            if (dc.momentum) s1.store(e, hi, buf);
            if (dc.centered) s2.store(e, hi, ga);
        }
        if constexpr (kMaster) master.store(e, hi, p);
        param.store(e, hi, p);
    }
}

// Fills table rows [first, first + count) of p and returns the chunks they hold.
int64_t fill_table(const OptimStepParams& p, int64_t first, int count, OptimTable* t) {
    int64_t chunks = 0;
    t->count = count;
    for (int r = 0; r < count; ++r) {
        const OptimTensor& row = p.tensors[first + r];
        t->param[r] = row.param;
        t->grad[r] = row.grad;
        for (int k = 0; k < kOptimMaxState; ++k) t->state[k][r] = row.state[k];
        t->master[r] = row.master;
        t->step[r] = row.step;
        t->numel[r] = row.numel;
        t->chunk_begin[r] = static_cast<int32_t>(chunks);
        chunks += ceil_div(row.numel, kChunk);
    }
    t->chunk_begin[count] = static_cast<int32_t>(chunks);
    return chunks;
}

template <class S, OptimKind kKind, bool kMaster, bool kAmsgrad>
cudaError_t step_tables(const OptimStepParams& p, const DeviceCoeffs& dc, cudaStream_t stream) {
    const bool has_steps = p.num_tensors > 0 && p.tensors[0].step != nullptr;
    const int64_t tables = ceil_div(p.num_tensors, kTableRows);
    constexpr bool kAdam = kKind == OptimKind::adam;
    StreamScratch adam_rows(kAdam ? size_t(tables) * kTableRows * sizeof(float2) : 0, stream);
    if (adam_rows.status() != cudaSuccess) return adam_rows.status();
    for (int64_t first = 0; first < p.num_tensors; first += kTableRows) {
        const int count = static_cast<int>(p.num_tensors - first < kTableRows ? p.num_tensors - first : kTableRows);
        OptimTable t{};
        const int64_t chunks = fill_table(p, first, count, &t);
        if (chunks > INT32_MAX) return cudaErrorInvalidValue;
        float2* rows = kAdam ? adam_rows.as<float2>() + first : nullptr;
        if (has_steps) {
            advance_steps_kernel<<<1, kTableRows, 0, stream>>>(t, dc, kAdam, rows);
            if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) return status;
        }
        if (chunks == 0) continue;
        optim_step_kernel<S, kKind, kMaster, kAmsgrad>
            <<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(t, dc, rows);
        if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) return status;
    }
    return cudaSuccess;
}

template <class S, bool kMaster>
cudaError_t step_typed(const OptimStepParams& p, const DeviceCoeffs& dc, cudaStream_t stream) {
    switch (p.kind) {
        case OptimKind::adam:
            return p.amsgrad ? step_tables<S, OptimKind::adam, kMaster, true>(p, dc, stream)
                             : step_tables<S, OptimKind::adam, kMaster, false>(p, dc, stream);
        case OptimKind::sgd: return step_tables<S, OptimKind::sgd, kMaster, false>(p, dc, stream);
        case OptimKind::rmsprop: return step_tables<S, OptimKind::rmsprop, kMaster, false>(p, dc, stream);
    }
    return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------------------
// Gradient norm and scaling.

struct GradTable {
    const void* data[kTableRows];
    int64_t numel[kTableRows];
    bool bf16[kTableRows];
    int32_t chunk_begin[kTableRows + 1];
    int count;
};

enum class NormOrder { one, two, inf, p };

struct NormPartial {
    double value;
    int nan;  // inf norm: a NaN was seen (max alone would drop it)
    int pad;
};

template <NormOrder kOrder>
struct MergeNorm {
    __device__ NormPartial operator()(const NormPartial& a, const NormPartial& b) const {
        const double v = kOrder == NormOrder::inf ? fmax(a.value, b.value) : a.value + b.value;
        return {v, a.nan | b.nan, 0};
    }
};

int64_t fill_grad_table(const GradNormTensor* rows, int64_t first, int count, GradTable* t) {
    int64_t chunks = 0;
    t->count = count;
    for (int r = 0; r < count; ++r) {
        t->data[r] = rows[first + r].data;
        t->numel[r] = rows[first + r].numel;
        t->bf16[r] = rows[first + r].dtype == DType::bf16;
        t->chunk_begin[r] = static_cast<int32_t>(chunks);
        chunks += ceil_div(rows[first + r].numel, kChunk);
    }
    t->chunk_begin[count] = static_cast<int32_t>(chunks);
    return chunks;
}

// Calls fn(v) on the 8-element groups of block b's chunk owned by this thread.
template <class Fn>
__device__ __forceinline__ void for_each_group(const GradTable& t, Fn&& fn) {
    constexpr int V = 8;
    const int i = find_row(t, blockIdx.x);
    const int64_t lo = (int64_t(blockIdx.x) - t.chunk_begin[i]) * kChunk;
    const int64_t hi = lo + kChunk < t.numel[i] ? lo + kChunk : t.numel[i];
    char* data = static_cast<char*>(const_cast<void*>(t.data[i]));
    const bool vector = aligned(data);
    for (int64_t e = lo + int64_t(threadIdx.x) * V; e < hi; e += int64_t(kThreads) * V) {
        if (t.bf16[i]) fn(RowPtr<__nv_bfloat16>{data, 1, vector}, e, hi);
        else fn(RowPtr<float>{data, 1, vector}, e, hi);
    }
}

template <NormOrder kOrder>
__global__ void __launch_bounds__(kThreads) grad_norm_partials_kernel(const GradTable t, double p, double* partials) {
    __shared__ NormPartial scratch[33];
    float acc = 0.0f;
    double acc_p = 0.0;
    int nan = 0;
    for_each_group(t, [&](const auto& src, int64_t e, int64_t hi) {
        float v[8];
        src.load(e, hi, 0.0f, v);
        if constexpr (kOrder == NormOrder::p) {
            // Rolled: pow is a call, and few values should stay live across it.
#pragma unroll 1
            for (int k = 0; k < 8; ++k) acc_p += pow(static_cast<double>(fabsf(v[k])), p);
        } else {
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                const float a = fabsf(v[k]);
                if constexpr (kOrder == NormOrder::two) acc = fmaf(v[k], v[k], acc);
                else if constexpr (kOrder == NormOrder::one) acc += a;
                else {
                    nan |= a != a;
                    acc = fmaxf(acc, a);
                }
            }
        }
    });
    NormPartial part{kOrder == NormOrder::p ? acc_p : static_cast<double>(acc), nan, 0};
    part = row_allreduce<false>(part, MergeNorm<kOrder>(), scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = part.nan ? NAN : part.value;
}

template <NormOrder kOrder, class S>
__global__ void __launch_bounds__(kFinishThreads)
    grad_norm_finish_kernel(const double* partials, int64_t count, double p, S* out) {
    __shared__ NormPartial scratch[33];
    NormPartial part{0.0, 0, 0};
    for (int64_t b = threadIdx.x; b < count; b += blockDim.x) {
        const double v = partials[b];
        part = MergeNorm<kOrder>()(part, {v, v != v, 0});
    }
    part = row_allreduce<false>(part, MergeNorm<kOrder>(), scratch);
    if (threadIdx.x != 0) return;
    double total = part.nan ? NAN : part.value;
    if (kOrder == NormOrder::two) total = sqrt(total);
    else if (kOrder == NormOrder::p) total = pow(total, 1.0 / p);
    *out = from_float<S>(static_cast<float>(total));
}

template <NormOrder kOrder>
cudaError_t grad_norm_ordered(const GradNormParams& p, const TensorView& out, cudaStream_t stream) {
    int64_t total_chunks = 0;
    for (int64_t r = 0; r < p.num_tensors; ++r) total_chunks += ceil_div(p.tensors[r].numel, kChunk);
    StreamScratch partials(size_t(total_chunks) * sizeof(double), stream);
    if (partials.status() != cudaSuccess) return partials.status();
    int64_t done = 0;
    for (int64_t first = 0; first < p.num_tensors; first += kTableRows) {
        const int count = static_cast<int>(p.num_tensors - first < kTableRows ? p.num_tensors - first : kTableRows);
        GradTable t{};
        const int64_t chunks = fill_grad_table(p.tensors, first, count, &t);
        if (chunks == 0) continue;
        grad_norm_partials_kernel<kOrder><<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(
            t, p.norm_type, partials.as<double>() + done);
        if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) return status;
        done += chunks;
    }
    if (out.dtype == DType::bf16)
        grad_norm_finish_kernel<kOrder, __nv_bfloat16><<<1, kFinishThreads, 0, stream>>>(
            partials.as<double>(), total_chunks, p.norm_type, static_cast<__nv_bfloat16*>(out.data));
    else
        grad_norm_finish_kernel<kOrder, float><<<1, kFinishThreads, 0, stream>>>(
            partials.as<double>(), total_chunks, p.norm_type, static_cast<float*>(out.data));
    return cudaGetLastError();
}

template <class C>
__global__ void __launch_bounds__(kThreads) grad_scale_kernel(const GradTable t, const C* coef_ptr) {
    const float coef = to_float(*coef_ptr);
    if (coef == 1.0f) return;  // the clip coefficient is exactly 1 unless the norm exceeds max_norm
    for_each_group(t, [&](const auto& data, int64_t e, int64_t hi) {
        float v[8];
        data.load(e, hi, 0.0f, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] *= coef;
        data.store(e, hi, v);
    });
}

}  // namespace

cudaError_t optim_step(const OptimStepParams& p, cudaStream_t stream) {
    DeviceCoeffs dc{};
    dc.c = optim_coeffs(p);
    dc.grad_scale = p.grad_scale;
    dc.found_inf = p.found_inf;
    dc.scaled = p.grad_scale != nullptr;
    dc.lr = p.lr;
    dc.beta1 = p.beta1;
    dc.beta2 = p.beta2;
    dc.momentum = p.kind == OptimKind::sgd ? p.momentum != 0.0 : p.momentum > 0.0;
    dc.momentum_init = p.momentum_init;
    dc.nesterov = p.nesterov;
    dc.centered = p.centered;
    if (p.param_dtype == DType::f32) return step_typed<float, false>(p, dc, stream);
    return p.master_weights ? step_typed<__nv_bfloat16, true>(p, dc, stream)
                            : step_typed<__nv_bfloat16, false>(p, dc, stream);
}

cudaError_t grad_norm(const GradNormParams& p, const TensorView& out, cudaStream_t stream) {
    if (p.norm_type == 2.0) return grad_norm_ordered<NormOrder::two>(p, out, stream);
    if (p.norm_type == 1.0) return grad_norm_ordered<NormOrder::one>(p, out, stream);
    if (isinf(p.norm_type)) return grad_norm_ordered<NormOrder::inf>(p, out, stream);
    return grad_norm_ordered<NormOrder::p>(p, out, stream);
}

cudaError_t grad_scale(const GradNormTensor* tensors, int64_t num_tensors, const TensorView& coef,
                       cudaStream_t stream) {
    for (int64_t first = 0; first < num_tensors; first += kTableRows) {
        const int count = static_cast<int>(num_tensors - first < kTableRows ? num_tensors - first : kTableRows);
        GradTable t{};
        const int64_t chunks = fill_grad_table(tensors, first, count, &t);
        if (chunks == 0) continue;
        const unsigned grid = static_cast<unsigned>(chunks);
        if (coef.dtype == DType::bf16)
            grad_scale_kernel<<<grid, kThreads, 0, stream>>>(t, static_cast<const __nv_bfloat16*>(coef.data));
        else
            grad_scale_kernel<<<grid, kThreads, 0, stream>>>(t, static_cast<const float*>(coef.data));
        if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) return status;
    }
    return cudaSuccess;
}

}  // namespace fastnn::cuda
