// SIMT GEMM: strict fp32 (tensor cores cannot do it), and the path for
// operands with no unit stride at all (any dtype, converted to fp32 on load).
//
// Floor: 2*M*N*K FLOPs at the fp32 FMA rate (H100 SXM ~67 TFLOP/s, A100
// 19.5). Each FMA needs its two operands from registers, so the kernel is
// bound by how many FMAs each shared-memory load feeds: a thread computes an
// 8x8 block of C from 8 A and 8 B values per k (64 FMAs per 16 loads, four
// 16-byte LDS). A 256-thread block covers 128x128 with K steps of 8; tiles are
// double-buffered in shared memory with the next tile's global loads in
// registers while the current tile is multiplied.
//
// Layout. Tiles are stored K-outer ([k][mn], fp32) so each thread's 4
// consecutive rows (or columns) are one float4. Rows are padded to 132 floats:
// a warp storing a K-major operand (8 k by 4 mn per 32 lanes) then hits 32
// distinct banks. Each thread's rows are split in two halves 64 apart, so a
// warp's float4 reads of B cover 16 distinct addresses (2 wavefronts) and of
// A 2 (broadcast).
#include "gemm_problem.cuh"

namespace fastnn::cuda::gemm_detail {
namespace {

constexpr int kTile = 128, kStepK = 8, kThreads = 256, kPad = 4;
constexpr int kPerThread = kTile * kStepK / kThreads;

template <class T>
__device__ __forceinline__ float to_f32(T x) {
    return float(x);
}
template <>
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) {
    return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_f32(__half x) {
    return __half2float(x);
}

// Which (mn, k) of the tile element e a thread loads: along the operand's
// unit stride, so a warp's loads coalesce.
__device__ __forceinline__ void element_coords(const Operand& op, int e, int* mn, int* k) {
    if (op.layout == Layout::k_major) {
        *mn = e / kStepK;
        *k = e % kStepK;
    } else {
        *mn = e % kTile;
        *k = e / kTile;
    }
}

template <class T>
__device__ __forceinline__ void load_regs(float (&r)[kPerThread], const Operand& op, const T* base, int mn0,
                                          int k0, int mn_extent, int k_extent) {
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
        int mn, k;
        element_coords(op, threadIdx.x + j * kThreads, &mn, &k);
        mn += mn0;
        k += k0;
        r[j] = mn < mn_extent && k < k_extent ? to_f32(base[int64_t(mn) * op.stride_mn + int64_t(k) * op.stride_k])
                                              : 0.0f;
    }
}

__device__ __forceinline__ void store_regs(float (*tile)[kTile + kPad], const float (&r)[kPerThread],
                                           const Operand& op) {
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
        int mn, k;
        element_coords(op, threadIdx.x + j * kThreads, &mn, &k);
        tile[k][mn] = r[j];
    }
}

template <class T>
__global__ void __launch_bounds__(kThreads) gemm_simt_kernel(const Problem p) {
    __shared__ __align__(16) float sa[2][kStepK][kTile + kPad];
    __shared__ __align__(16) float sb[2][kStepK][kTile + kPad];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.x * kTile, n0 = blockIdx.y * kTile;
    const int ktiles = (p.k + kStepK - 1) / kStepK;

    for (int batch = blockIdx.z; batch < p.batch; batch += gridDim.z) {
        const T* a = static_cast<const T*>(p.a.data) + batch * p.a.batch_stride;
        const T* b = static_cast<const T*>(p.b.data) + batch * p.b.batch_stride;
        float acc[8][8] = {};
        float ra[kPerThread], rb[kPerThread];
        if (ktiles > 0) {
            load_regs(ra, p.a, a, m0, 0, p.m, p.k);
            load_regs(rb, p.b, b, n0, 0, p.n, p.k);
            store_regs(sa[0], ra, p.a);
            store_regs(sb[0], rb, p.b);
        }
        __syncthreads();
        for (int kt = 0; kt < ktiles; ++kt) {
            const int cur = kt & 1;
            const bool more = kt + 1 < ktiles;
            if (more) {
                load_regs(ra, p.a, a, m0, (kt + 1) * kStepK, p.m, p.k);
                load_regs(rb, p.b, b, n0, (kt + 1) * kStepK, p.n, p.k);
            }
#pragma unroll
            for (int k = 0; k < kStepK; ++k) {
                float av[8], bv[8];
                *reinterpret_cast<float4*>(av) = *reinterpret_cast<const float4*>(&sa[cur][k][ty * 4]);
                *reinterpret_cast<float4*>(av + 4) = *reinterpret_cast<const float4*>(&sa[cur][k][64 + ty * 4]);
                *reinterpret_cast<float4*>(bv) = *reinterpret_cast<const float4*>(&sb[cur][k][tx * 4]);
                *reinterpret_cast<float4*>(bv + 4) = *reinterpret_cast<const float4*>(&sb[cur][k][64 + tx * 4]);
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
            // Buffer cur ^ 1 was last read in iteration kt - 1, before the
            // barrier that ended it; the barrier below publishes it.
            if (more) {
                store_regs(sa[cur ^ 1], ra, p.a);
                store_regs(sb[cur ^ 1], rb, p.b);
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
#pragma unroll
            for (int j = 0; j < 8; j += 2) {
                const int n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
                epilogue_pair(p, batch, m, n, acc[i][j], acc[i][j + 1]);
            }
        }
    }
}

template <class T>
cudaError_t launch(const Problem& p, cudaStream_t stream) {
    // M (tokens) on x, which has no 65535 limit; N up to 65535 tiles on y.
    const dim3 grid((p.m + kTile - 1) / kTile, (p.n + kTile - 1) / kTile, p.batch < 65535 ? p.batch : 65535);
    if (grid.y > 65535) return cudaErrorInvalidValue;
    gemm_simt_kernel<T><<<grid, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_simt(const Problem& p, DType input, cudaStream_t stream) {
    switch (input) {
        case DType::f32: return launch<float>(p, stream);
        case DType::bf16: return launch<__nv_bfloat16>(p, stream);
        case DType::f16: return launch<__half>(p, stream);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace fastnn::cuda::gemm_detail
