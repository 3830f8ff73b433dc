// Building blocks shared by the sm_80 attention kernels: the PTX the tiles are
// made of (cp.async, ldmatrix, mma.sync m16n8k16), the swizzled shared-memory
// tile layout, predicated tile loads, and the per-(batch, head) addressing of
// the AttentionParams contract.
//
// Fragment conventions of mma.sync.m16n8k16 (fp32 accumulate), lane = l:
//   A 16x16: a0 (l/4, 2(l%4)+{0,1}), a1 rows +8, a2 cols +8, a3 both +8
//   B 16x8:  b0 (k = 2(l%4)+{0,1}, n = l/4), b1 k +8
//   C 16x8:  c0,c1 (l/4, 2(l%4)+{0,1}), c2,c3 row +8
// so an accumulator pair of n8 tiles is, converted to 16-bit, the A fragment
// of the next product (P·V) without leaving registers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fastnn_cuda/attention.h"

namespace fastnn::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;

template <class T> struct MmaOp;
template <> struct MmaOp<__nv_bfloat16> {
    __device__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ static uint32_t pack(float lo, float hi) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const uint32_t*>(&v);
    }
    __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
    __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};
template <> struct MmaOp<__half> {
    __device__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ static uint32_t pack(float lo, float hi) {
        const __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const uint32_t*>(&v);
    }
    __device__ static float to_float(__half x) { return __half2float(x); }
    __device__ static __half from_float(float x) { return __float2half_rn(x); }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(smem)));
}

// 2^x on the SFU (max relative error 2^-22); ex2.approx(-inf) = +0.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Element offset of 16-byte chunk `chunk` of row `row` in a row-major tile
// kWidth elements wide. ldmatrix reads one chunk from each of 8 consecutive
// rows per phase; XOR-ing the chunk index with the row spreads those 8 reads
// over all 32 banks. Rows of 8k chunks (widths 64, 128, 256) XOR with row % 8;
// 12-chunk rows (width 96) are 192 bytes, so rows r and r+2 start in the same
// bank: XOR with (row / 2) % 4 separates them and stays inside the row.
template <int kWidth>
__device__ __forceinline__ int swizzle(int row, int chunk) {
    constexpr int kChunks = kWidth / 8;
    static_assert(kChunks % 4 == 0, "tile width must be a multiple of 32 elements");
    if constexpr (kChunks % 8 == 0)
        return row * kWidth + ((chunk ^ (row & 7)) << 3);
    else
        return row * kWidth + ((chunk ^ ((row >> 1) & 3)) << 3);
}

// A lane's ldmatrix addresses in a swizzled tile, precomputed so that the
// unrolled loops address shared memory with a handful of registers plus
// immediates. The lane reads row row0 + f and chunk chunk0 + g, where row0 (a
// multiple of 8) and chunk0 (a multiple of kStep) are compile-time constants
// of the unrolled loop and f < 16, g < kStep depend on the lane (and warp).
// Then chunk0 + g = chunk0 ^ g, and the swizzle XOR touches only the low bits
// of the chunk index: the result depends on chunk0 only through chunk0 & kMask,
// a compile-time index into `base` (a run-time one would put it in local memory).
template <int kWidth, int kStep = 2>
struct LaneOffsets {
    static constexpr int kMask = (kWidth / 8) % 8 == 0 ? 7 : 3;
    static constexpr int kEntries = kStep > kMask ? 1 : (kMask + 1) / kStep;
    int base[kEntries];

    __device__ __forceinline__ LaneOffsets(int f, int g) {
        const int bits = kMask == 7 ? (f & 7) : ((f >> 1) & 3);
#pragma unroll
        for (int j = 0; j < kEntries; ++j) base[j] = f * kWidth + (((kStep * j + g) ^ bits) << 3);
    }
    __device__ __forceinline__ int operator()(int row0, int chunk0) const {
        return base[(chunk0 & kMask) / kStep] + row0 * kWidth + ((chunk0 & ~kMask) << 3);
    }
};

// One (batch, head)'s rows of a q/k/v-shaped operand; E is T for outputs and
// const T for inputs.
template <class E>
struct Slice {
    E* base = nullptr;  // row 0, column 0
    int64_t row_stride = 0;
    bool vec_ok = false;  // every row starts 16-byte aligned: 16-byte accesses apply

    __device__ E* row(int r) const { return base + r * row_stride; }
};

template <class T, class Void>
__device__ __forceinline__ auto make_slice(Void* ptr, const AttentionStrides& s, int b, int h, int row0) {
    using E = std::conditional_t<std::is_const_v<Void>, const T, T>;
    Slice<E> out;
    out.base = static_cast<E*>(ptr) + int64_t(b) * s.batch + int64_t(h) * s.head + int64_t(row0) * s.row;
    out.row_stride = s.row;
    out.vec_ok = reinterpret_cast<uintptr_t>(out.base) % 16 == 0 && s.row % 8 == 0;
    return out;
}

// Sequence extents of batch b: varlen reads them from cu_seqlens, else they are
// the padded lengths. batch_index is the b used with batch strides (0 for varlen).
struct SeqInfo {
    int q_row0, kv_row0, seqlen_q, seqlen_kv, batch_index;
};

__device__ __forceinline__ SeqInfo seq_info(const AttentionParams& p, int b) {
    if (p.cu_seqlens_q) {
        const int q0 = p.cu_seqlens_q[b], k0 = p.cu_seqlens_kv[b];
        return {q0, k0, p.cu_seqlens_q[b + 1] - q0, p.cu_seqlens_kv[b + 1] - k0, 0};
    }
    return {0, 0, p.seqlen_q, p.seqlen_kv, b};
}

// Row of the (head, row) workspace space: batches laid end to end.
__device__ __forceinline__ int64_t workspace_row(const AttentionParams& p, int b, const SeqInfo& s) {
    return p.cu_seqlens_q ? s.q_row0 : int64_t(b) * p.seqlen_q;
}
__host__ __device__ inline int64_t workspace_rows(const AttentionParams& p) {
    return p.cu_seqlens_q ? p.total_q : int64_t(p.batch) * p.seqlen_q;
}

// Copies a kRows x kWidth tile (rows past rows_valid, columns past cols_valid
// zero-filled) into swizzled shared memory through cp.async; the caller
// commits and waits. Whole tiles of aligned rows take the unrolled path of
// bare cp.async; tails, head dims that are not a multiple of 8 and unaligned
// strides take a rolled loop whose ragged chunks are loaded element by element,
// kept out of line of the hot path's registers.
template <class T, int kWidth, int kRows, int kThreads>
__device__ __forceinline__ void load_tile(T* smem, const Slice<const T>& g, int row_begin, int rows_valid,
                                          int cols_valid) {
    constexpr int kChunks = kWidth / 8;
    static_assert(kRows * kChunks % kThreads == 0, "tile must split evenly over the threads");
    if (g.vec_ok && rows_valid >= kRows && cols_valid == kWidth) {
        const T* src = g.row(row_begin);
#pragma unroll
        for (int it = 0; it < kRows * kChunks / kThreads; ++it) {
            const int i = it * kThreads + threadIdx.x;
            const int r = i / kChunks, c = i % kChunks;
            cp_async_16(smem + swizzle<kWidth>(r, c), src + r * g.row_stride + c * 8);
        }
        return;
    }
#pragma unroll 1
    for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
        const int r = i / kChunks, c = i % kChunks, col = c * 8;
        T* dst = smem + swizzle<kWidth>(r, c);
        if (r < rows_valid && col < cols_valid) {
            const T* src = g.row(row_begin + r) + col;
            if (g.vec_ok && col + 8 <= cols_valid) {
                cp_async_16(dst, src);
            } else {
                alignas(16) T tmp[8];
#pragma unroll
                for (int e = 0; e < 8; ++e) tmp[e] = col + e < cols_valid ? src[e] : T(0.0f);
                *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(tmp);
            }
        } else {
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
}

// Writes rows [0, rows) of a swizzled kWidth-wide shared tile to rows
// row_begin... of g (rows past rows_valid and columns past cols_valid
// skipped), `threads` threads starting at thread index `first` taking part.
template <class T, int kWidth>
__device__ __forceinline__ void store_tile(const Slice<T>& g, int row_begin, const T* smem, int rows, int rows_valid,
                                           int cols_valid, int first, int threads) {
    constexpr int kChunks = kWidth / 8;
    for (int i = int(threadIdx.x) - first; i < rows * kChunks; i += threads) {
        const int r = i / kChunks, c = i % kChunks, col = c * 8;
        if (r >= rows_valid || col >= cols_valid) continue;
        const T* src = smem + swizzle<kWidth>(r, c);
        T* dst = g.row(row_begin + r) + col;
        if (g.vec_ok && col + 8 <= cols_valid) {
            *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
        } else {
            for (int e = 0; e < 8 && col + e < cols_valid; ++e) dst[e] = src[e];
        }
    }
}

// Which keys a query row sees: col < limit(row), and the padding byte nonzero.
struct KeyMask {
    int seqlen_kv, diagonal;  // causal: col <= row + diagonal
    bool causal;
    const uint8_t* padding;   // this batch's row of the key-padding mask, or null

    __device__ __forceinline__ int limit(int row) const {
        return causal ? min(seqlen_kv, max(0, row + diagonal + 1)) : seqlen_kv;
    }
    __device__ __forceinline__ bool visible(int row, int col) const {
        return col < limit(row) && (!padding || padding[col] != 0);
    }
};

__device__ __forceinline__ KeyMask key_mask(const AttentionParams& p, int b, const SeqInfo& s) {
    const uint8_t* padding =
        p.key_padding_mask ? p.key_padding_mask + int64_t(b) * p.key_padding_mask_batch_stride : nullptr;
    return {s.seqlen_kv, s.seqlen_kv - s.seqlen_q, p.causal, padding};
}

// lse of (batch b, head h), indexed by the row within the batch.
__device__ __forceinline__ float* lse_row0(const AttentionParams& p, int b, int h, const SeqInfo& s) {
    return p.lse + int64_t(s.batch_index) * p.lse_batch_stride + int64_t(h) * p.lse_head_stride +
           (p.cu_seqlens_q ? s.q_row0 : 0);
}

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// The instantiated head dim a head_dim runs on (columns past head_dim are
// zero-filled in shared memory, never copied in global memory).
inline int padded_head_dim(int head_dim) {
    return head_dim <= 64 ? 64 : head_dim <= 96 ? 96 : head_dim <= 128 ? 128 : 256;
}

// Raises a kernel's dynamic shared memory limit where it needs more than the
// default 48 KB; cudaErrorInvalidConfiguration when the device has too little.
template <class Kernel>
cudaError_t prepare_smem(Kernel kernel, int bytes) {
    int device = 0, optin = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err != cudaSuccess) return err;
    if (bytes > optin) return cudaErrorInvalidConfiguration;
    return bytes > 48 * 1024 ? cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)
                             : cudaSuccess;
}

// Backward scratch, in (head, workspace row) order: dsum = rowsum(dO∘O) in
// float32, then (non-deterministic mode) the float32 dQ accumulator with
// padded_head_dim columns that the main kernel adds into atomically.
struct BwdWorkspace {
    float* dsum = nullptr;
    float* dq_accum = nullptr;
    size_t bytes = 0;
};

inline BwdWorkspace bwd_workspace(const AttentionParams& p) {
    const auto align = [](size_t n) { return (n + 255) / 256 * 256; };
    const size_t cells = size_t(p.heads_q) * size_t(workspace_rows(p));
    const size_t dsum_bytes = align(cells * sizeof(float));
    const size_t dq_bytes = p.deterministic ? 0 : align(cells * size_t(padded_head_dim(p.head_dim)) * sizeof(float));
    BwdWorkspace w;
    w.bytes = dsum_bytes + dq_bytes;
    if (p.workspace) {
        w.dsum = static_cast<float*>(p.workspace);
        if (!p.deterministic) w.dq_accum = reinterpret_cast<float*>(static_cast<char*>(p.workspace) + dsum_bytes);
    }
    return w;
}

// Entry points of the per-pass translation units.
cudaError_t attention_forward_sm80(const AttentionParams& p, cudaStream_t stream);
cudaError_t attention_backward_sm80(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream);
cudaError_t attention_backward_dq_sm80(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream);

}  // namespace fastnn::cuda::attn
