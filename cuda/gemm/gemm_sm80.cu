// Tensor-core GEMM for sm_80 and newer: mma.sync, ldmatrix, cp.async.
//
// Floor: 2*M*N*K FLOPs at the dense mma.sync rate (A100 bf16 312 TFLOP/s,
// tf32 156, int8 624 TOP/s); bytes (M*K + K*N + M*N) * size are far below
// that for any shape worth a tensor core. On H100 this is the fallback path
// (mma.sync reaches about 60% of wgmma's rate there).
//
// Tiling. A block computes a 128x128 tile of C with 8 warps (2 x 4), each
// warp 64x32: 4 x 4 mma tiles, so each A fragment is used 4 times and each B
// fragment 4 times per k-step. One pipeline stage holds 128 bytes of K for
// every row of the A and B tiles: 64 bf16/fp16, 32 tf32 or 128 int8 values,
// so one stage is (128 + 128) * 128 B = 32 KB whatever the dtype, and 4
// stages (128 KB) keep three tiles of loads in flight behind the math.
//
// Shared memory. Every tile row is 128 bytes = 8 chunks of 16 B, chunk c of
// row r stored at chunk c ^ (r % 8): the 8 row addresses of one ldmatrix
// (8 consecutive rows, one chunk column) then hit 8 different 16-byte bank
// groups, and cp.async writes of 8 consecutive chunks of one row stay
// conflict-free. K-major operands store rows of the tile along M (or N);
// MN-major operands store rows along K, in panels 128 bytes wide, read with
// ldmatrix.trans (16-bit) or scalar loads (tf32, int8: ldmatrix transposes
// only 16-bit elements).
//
// Tails. Loads are predicated per 16-byte chunk; cp.async's src-size zero
// fills the part past M, N or K, so K tails contribute exact zeros. Operands
// whose rows are not 16-byte aligned are loaded element by element instead
// (correct, slower). The epilogue is predicated per element.
#include "gemm_problem.cuh"

namespace fastnn::cuda::gemm_detail {
namespace {

constexpr int kRowBytes = 128;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// One mma.sync per math kind: every shape consumes 32 bytes of K per operand
// row, so the fragment layouts below are shared (in 32-bit words).
template <Math M> struct Mma;
template <> struct Mma<Math::bf16> {
    using Raw = uint16_t;
    using Acc = float;
    __device__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    __device__ static uint32_t prepare(uint32_t x) { return x; }
};
template <> struct Mma<Math::f16> {
    using Raw = uint16_t;
    using Acc = float;
    __device__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    __device__ static uint32_t prepare(uint32_t x) { return x; }
};
template <> struct Mma<Math::tf32> {
    using Raw = uint32_t;
    using Acc = float;
    __device__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    // Round to nearest (the tensor core would otherwise truncate the low 13
    // mantissa bits, a biased error that grows with K).
    __device__ static uint32_t prepare(uint32_t x) {
        uint32_t r;
        asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
        return r;
    }
};
template <> struct Mma<Math::s8> {
    using Raw = uint8_t;
    using Acc = int;
    // No .satfinite: int32 sums wrap, and the binding's K limit keeps every
    // true sum inside int32, so the result is exact.
    __device__ static void run(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    __device__ static uint32_t prepare(uint32_t x) { return x; }
};

template <Math M, int kBM_, int kBN_, int kWarpsM_, int kWarpsN_, int kStages_>
struct Config {
    using Op = Mma<M>;
    using Raw = typename Op::Raw;
    using Acc = typename Op::Acc;
    static constexpr int kBM = kBM_, kBN = kBN_, kWarpsM = kWarpsM_, kWarpsN = kWarpsN_, kStages = kStages_;
    static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
    static constexpr int kSize = sizeof(Raw);
    static constexpr int kChunkElems = 16 / kSize;
    static constexpr int kBK = kRowBytes / kSize;          // K elements per stage
    static constexpr int kSteps = kRowBytes / 32;          // mma k-steps per stage
    static constexpr int kWarpTileM = kBM / kWarpsM, kWarpTileN = kBN / kWarpsN;
    static constexpr int kMmaM = kWarpTileM / 16, kMmaN = kWarpTileN / 8;
    static constexpr int kStageBytes = (kBM + kBN) * kRowBytes;
    static constexpr int kSmemBytes = kStages * kStageBytes;
    static_assert(kMmaN % 2 == 0, "B fragments are loaded two n-tiles at a time");
    static_assert((kBM * 8) % kThreads == 0 && (kBN * 8) % kThreads == 0, "whole chunks per thread");
};

// Byte offset of the 16-byte chunk (row, chunk) of a swizzled tile.
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
    return row * kRowBytes + ((chunk ^ (row & 7)) << 4);
}

// Byte offset of element (k, mn) in an MN-major tile: rows along K, panels of
// 128 bytes along MN.
template <class C>
__device__ __forceinline__ uint32_t mn_major_offset(int k, int mn) {
    const int chunk = mn / C::kChunkElems;
    return (chunk >> 3) * (C::kBK * kRowBytes) + swizzled(k, chunk & 7) + (mn % C::kChunkElems) * C::kSize;
}

// Loads one stage of one operand: rows [mn0, mn0 + kRows) x K [k0, k0 + kBK).
template <class C, bool KMajor, int kRows>
__device__ __forceinline__ void load_tile(unsigned char* tile, const Operand& op, const unsigned char* base,
                                          int mn0, int k0, int mn_extent, int k_extent) {
    using Raw = typename C::Raw;
    constexpr int kChunksPerRow = KMajor ? 8 : kRows * C::kSize / 16;
#pragma unroll
    for (int j = 0; j < kRows * 8 / C::kThreads; ++j) {
        const int i = threadIdx.x + j * C::kThreads;
        const int row = i / kChunksPerRow, chunk = i % kChunksPerRow;
        const int mn = mn0 + (KMajor ? row : chunk * C::kChunkElems);
        const int k = k0 + (KMajor ? chunk * C::kChunkElems : row);
        const uint32_t dst = KMajor ? swizzled(row, chunk)
                                    : (chunk >> 3) * (C::kBK * kRowBytes) + swizzled(row, chunk & 7);
        const int inside = KMajor ? (mn < mn_extent ? k_extent - k : 0) : (k < k_extent ? mn_extent - mn : 0);
        const int64_t offset = int64_t(mn) * op.stride_mn + int64_t(k) * op.stride_k;
        if (op.vec16) {
            const int bytes = inside <= 0 ? 0 : (inside >= C::kChunkElems ? 16 : inside * C::kSize);
            cp_async_16(smem_addr(tile + dst), bytes > 0 ? base + offset * C::kSize : base, bytes);
        } else {
            // Rows not 16-byte aligned: element loads through registers.
            const int64_t step = KMajor ? op.stride_k : op.stride_mn;
            union {
                uint4 v;
                Raw e[C::kChunkElems];
            } chunk_data;
#pragma unroll
            for (int e = 0; e < C::kChunkElems; ++e)
                chunk_data.e[e] = e < inside ? reinterpret_cast<const Raw*>(base)[offset + e * step] : Raw(0);
            *reinterpret_cast<uint4*>(tile + dst) = chunk_data.v;
        }
    }
}

// A (16 x 32 bytes) fragment of m-tile rows [m, m + 16) at k-step s.
template <class C, bool KMajor>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const unsigned char* tile, int m, int s) {
    const int lane = threadIdx.x & 31;
    if constexpr (KMajor) {
        ldmatrix_x4(a, smem_addr(tile + swizzled(m + (lane & 15), 2 * s + (lane >> 4))));
    } else if constexpr (C::kSize == 2) {
        const int k = s * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4_trans(a, smem_addr(tile + mn_major_offset<C>(k, m + ((lane >> 3) & 1) * 8)));
    } else {
        const int g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int row = m + g + (r & 1) * 8;
            if constexpr (C::kSize == 4) {
                const int k = s * 8 + t + (r >> 1) * 4;
                a[r] = *reinterpret_cast<const uint32_t*>(tile + mn_major_offset<C>(k, row));
            } else {
                const int k = s * 32 + t * 4 + (r >> 1) * 16;
                uint32_t w = 0;
#pragma unroll
                for (int q = 0; q < 4; ++q) w |= uint32_t(tile[mn_major_offset<C>(k + q, row)]) << (8 * q);
                a[r] = w;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) a[r] = C::Op::prepare(a[r]);
}

// Two (32 bytes x 8) B fragments, n-tiles [n, n + 8) and [n + 8, n + 16).
template <class C, bool KMajor>
__device__ __forceinline__ void load_b(uint32_t (&b0)[2], uint32_t (&b1)[2], const unsigned char* tile, int n,
                                       int s) {
    const int lane = threadIdx.x & 31;
    uint32_t r[4];
    if constexpr (KMajor) {
        ldmatrix_x4(r, smem_addr(tile + swizzled(n + (lane & 7) + ((lane >> 4) << 3), 2 * s + ((lane >> 3) & 1))));
    } else if constexpr (C::kSize == 2) {
        const int k = s * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
        ldmatrix_x4_trans(r, smem_addr(tile + mn_major_offset<C>(k, n + (lane >> 4) * 8)));
    } else {
        const int g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int col = n + g + (q >> 1) * 8;
            if constexpr (C::kSize == 4) {
                r[q] = *reinterpret_cast<const uint32_t*>(tile + mn_major_offset<C>(s * 8 + t + (q & 1) * 4, col));
            } else {
                const int k = s * 32 + t * 4 + (q & 1) * 16;
                uint32_t w = 0;
#pragma unroll
                for (int e = 0; e < 4; ++e) w |= uint32_t(tile[mn_major_offset<C>(k + e, col)]) << (8 * e);
                r[q] = w;
            }
        }
    }
    b0[0] = C::Op::prepare(r[0]);
    b0[1] = C::Op::prepare(r[1]);
    b1[0] = C::Op::prepare(r[2]);
    b1[1] = C::Op::prepare(r[3]);
}

template <class C, bool AK, bool BK>
__global__ void __launch_bounds__(C::kThreads, 1) gemm_sm80_kernel(const Problem p) {
    using Acc = typename C::Acc;
    extern __shared__ __align__(128) unsigned char smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warp_m = (warp % C::kWarpsM) * C::kWarpTileM, warp_n = (warp / C::kWarpsM) * C::kWarpTileN;
    const int tiles_m = (p.m + C::kBM - 1) / C::kBM, tiles_n = (p.n + C::kBN - 1) / C::kBN;
    int tm, tn;
    tile_coords(blockIdx.x, tiles_m, tiles_n, &tm, &tn);
    const int m0 = tm * C::kBM, n0 = tn * C::kBN;
    const int ktiles = (p.k + C::kBK - 1) / C::kBK;

    for (int batch = blockIdx.y; batch < p.batch; batch += gridDim.y) {
        const auto* a_base = static_cast<const unsigned char*>(p.a.data) + batch * p.a.batch_stride * C::kSize;
        const auto* b_base = static_cast<const unsigned char*>(p.b.data) + batch * p.b.batch_stride * C::kSize;
        auto load_stage = [&](int stage, int kt) {
            unsigned char* s = smem + stage * C::kStageBytes;
            load_tile<C, AK, C::kBM>(s, p.a, a_base, m0, kt * C::kBK, p.m, p.k);
            load_tile<C, BK, C::kBN>(s + C::kBM * kRowBytes, p.b, b_base, n0, kt * C::kBK, p.n, p.k);
        };

        Acc acc[C::kMmaM][C::kMmaN][4];
#pragma unroll
        for (int i = 0; i < C::kMmaM; ++i)
#pragma unroll
            for (int j = 0; j < C::kMmaN; ++j)
#pragma unroll
                for (int r = 0; r < 4; ++r) acc[i][j][r] = Acc(0);

#pragma unroll
        for (int s = 0; s < C::kStages - 1; ++s) {
            if (s < ktiles) load_stage(s, s);
            cp_async_commit();
        }
        for (int kt = 0; kt < ktiles; ++kt) {
            // Tile kt has landed once at most kStages - 2 younger groups are pending.
            cp_async_wait<C::kStages - 2>();
            __syncthreads();
            // The stage refilled here was last read in iteration kt - 1, which
            // every warp has finished (the barrier above).
            const int next = kt + C::kStages - 1;
            if (next < ktiles) load_stage(next % C::kStages, next);
            cp_async_commit();

            const unsigned char* sa = smem + (kt % C::kStages) * C::kStageBytes;
            const unsigned char* sb = sa + C::kBM * kRowBytes;
#pragma unroll
            for (int s = 0; s < C::kSteps; ++s) {
                uint32_t af[C::kMmaM][4], bf[C::kMmaN][2];
#pragma unroll
                for (int i = 0; i < C::kMmaM; ++i) load_a<C, AK>(af[i], sa, warp_m + i * 16, s);
#pragma unroll
                for (int j = 0; j < C::kMmaN; j += 2) load_b<C, BK>(bf[j], bf[j + 1], sb, warp_n + j * 8, s);
#pragma unroll
                for (int i = 0; i < C::kMmaM; ++i)
#pragma unroll
                    for (int j = 0; j < C::kMmaN; ++j) C::Op::run(acc[i][j], af[i], bf[j]);
            }
        }
        cp_async_wait<0>();

        const int g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int i = 0; i < C::kMmaM; ++i)
#pragma unroll
            for (int j = 0; j < C::kMmaN; ++j) {
                const int m = m0 + warp_m + i * 16 + g, n = n0 + warp_n + j * 8 + 2 * t;
                epilogue_pair(p, batch, m, n, acc[i][j][0], acc[i][j][1]);
                epilogue_pair(p, batch, m + 8, n, acc[i][j][2], acc[i][j][3]);
            }
        // The next batch's prologue overwrites stages other warps may still read.
        __syncthreads();
    }
}

template <class C, bool AK, bool BK>
cudaError_t launch(const Problem& p, cudaStream_t stream) {
    const auto kernel = gemm_sm80_kernel<C, AK, BK>;
    cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
    if (status != cudaSuccess) return status;
    const int64_t tiles = int64_t((p.m + C::kBM - 1) / C::kBM) * ((p.n + C::kBN - 1) / C::kBN);
    if (tiles > INT32_MAX) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.batch < 65535 ? p.batch : 65535));
    kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(p);
    return cudaGetLastError();
}

template <Math M>
cudaError_t launch_math(const Problem& p, cudaStream_t stream) {
    using C = Config<M, 128, 128, 2, 4, 4>;
    const bool ak = p.a.layout == Layout::k_major, bk = p.b.layout == Layout::k_major;
    if (ak && bk) return launch<C, true, true>(p, stream);
    if (ak) return launch<C, true, false>(p, stream);
    if (bk) return launch<C, false, true>(p, stream);
    return launch<C, false, false>(p, stream);
}

}  // namespace

cudaError_t launch_sm80(const Problem& p, Math math, cudaStream_t stream) {
    if (p.a.layout == Layout::strided || p.b.layout == Layout::strided) return cudaErrorInvalidValue;
    switch (math) {
        case Math::bf16: return launch_math<Math::bf16>(p, stream);
        case Math::f16: return launch_math<Math::f16>(p, stream);
        case Math::tf32: return launch_math<Math::tf32>(p, stream);
        case Math::s8: return launch_math<Math::s8>(p, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace fastnn::cuda::gemm_detail
