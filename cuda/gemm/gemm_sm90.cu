// Hopper (sm_90a) GEMM: TMA loads into a shared-memory ring completing on
// mbarriers, warpgroup wgmma, producer/consumer warp specialization and a
// persistent tile loop.
//
// Floor: 2*M*N*K at the dense wgmma rate (H100 SXM: 989 TFLOP/s bf16/fp16,
// 494 tf32, 1979 TOP/s int8; cuBLAS measures ~740 bf16 at 4096^3). mma.sync
// tops out near 60% of that on Hopper: wgmma is the only path to it.
//
// Tiling. A CTA owns a 128x256 tile of C: two consumer warpgroups each issue
// m64n256 wgmma over their 64 rows (128 fp32 accumulators per thread), and one
// producer warpgroup, cut to 40 registers, has one thread issue the TMA loads.
// Each stage holds 128 bytes of K for all 128 A rows and 256 B rows (48 KB:
// 64 bf16, 32 tf32 or 128 int8 values), four stages deep (192 KB), so loads
// run three stages ahead of the math. 128x256 keeps the smem traffic per
// FLOP low enough for wgmma's rate: each stage feeds 2*128*256*kBK FLOPs from
// 48 KB. The CTA count is the SM count; tiles are taken round-robin in groups
// of 8 tile rows so the CTAs working at one time share A and B panels in L2.
//
// Layout. A must be K-major (row-major); B K-major (column-major, the
// nn.Linear weight) or, for 16-bit inputs, N-major (row-major), which wgmma
// reads transposed. Rows must be 16-byte aligned; other cases run on the
// sm_80 kernel. TMA writes 128-byte rows with the 128-byte swizzle (chunk c
// of row r at c ^ (r % 8)), the layout the wgmma descriptors name. K-major:
// rows along M or N, a 32-byte k-step advances the descriptor by 32 bytes.
// N-major B: rows along K in four panels 64 columns (128 bytes) wide, loaded
// by four TMA boxes; a 16-row k-step advances by 2048 bytes, the descriptor's
// leading offset steps between panels and its stride offset between 8-row
// groups of K.
// Tails: TMA fills out-of-bounds elements with zeros (K tails contribute
// nothing) and the epilogue stores are predicated.
//
// Synchronization. full[s] completes when the stage's bytes have landed
// (one producer arrival with expect_tx); empty[s] when each consumer warp has
// retired the wgmma that read it (8 arrivals). The phase bit flips each time
// the ring wraps.
#include <cuda.h>  // CUtensorMap and its enums only: the driver is reached through cudaGetDriverEntryPointByVersion
#include <cudaTypedefs.h>

#include <mutex>

#include "gemm_problem.cuh"
#include "wgmma_ops.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FASTNN_SM90A_DEVICE 1
#else
#define FASTNN_SM90A_DEVICE 0
#endif

namespace fastnn::cuda::gemm_detail {
namespace {

constexpr int kBM = 128, kBN = kWgmmaN, kStages = 4, kRowBytes = 128;
constexpr int kConsumers = 2, kWarpsPerGroup = 4;
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kStageBytesA = kBM * kRowBytes, kStageBytesB = kBN * kRowBytes;
constexpr int kStageBytes = kStageBytesA + kStageBytesB;
constexpr int kSmemBytes = kStages * kStageBytes + 1024;  // slack to align the ring to 1024 (128-byte swizzle)
constexpr int kProducerRegs = 40, kConsumerRegs = 232;
static_assert(128 * kProducerRegs + 128 * kConsumers * kConsumerRegs <= 65536, "setmaxnreg budget: one register file");
static_assert(kThreads == 32 * kWarpsPerGroup * (1 + kConsumers), "one producer and kConsumers warpgroups");
static_assert(kStageBytesA % 1024 == 0 && kStageBytes % 1024 == 0, "swizzle atoms must stay 1024-byte aligned");

__host__ __device__ constexpr int element_size(Math m) { return m == Math::s8 ? 1 : m == Math::tf32 ? 4 : 2; }

#if FASTNN_SM90A_DEVICE

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    } while (!done);
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1, int c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
        "[%5];\n" ::"r"(dst),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
        : "memory");
}

// wgmma shared-memory descriptor with the 128-byte swizzle: start address,
// leading byte offset (unused by K-major layouts, where it must read 1; the
// panel stride of MN-major ones), stride byte offset (between 8-row groups:
// 8 x 128 bytes).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t leading_bytes) {
    const uint64_t leading = leading_bytes == 0 ? 1 : leading_bytes >> 4;
    return uint64_t((addr & 0x3FFFF) >> 4) | (leading << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// Keeps the compiler from moving accumulator reads or writes across the
// asynchronous wgmma that owns the registers.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void fence_operand(int& r) { asm volatile("" : "+r"(r)::"memory"); }

#endif  // FASTNN_SM90A_DEVICE

template <Math M, bool BKMajor>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_sm90_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                     const Problem p, int a_batched, int b_batched) {
#if FASTNN_SM90A_DEVICE
    using Mma = Wgmma<M, BKMajor>;
    using Acc = typename Mma::Acc;
    constexpr int kBK = kRowBytes / element_size(M);
    constexpr int kPanelBytes = kBK * kRowBytes;  // one 64-column panel of an N-major B stage
    __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
    extern __shared__ unsigned char smem_raw[];
    const uint32_t ring = (smem_addr(smem_raw) + 1023) & ~1023u;

    const int group = threadIdx.x / 128, lane_in_group = threadIdx.x % 128;
    const int tiles_m = (p.m + kBM - 1) / kBM, tiles_n = (p.n + kBN - 1) / kBN;
    const int tiles_per_batch = tiles_m * tiles_n, tiles = tiles_per_batch * p.batch;
    const int ktiles = (p.k + kBK - 1) / kBK;

    if (threadIdx.x == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbar_init(smem_addr(&full[s]), 1);
            mbar_init(smem_addr(&empty[s]), kConsumers * kWarpsPerGroup);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_a)) : "memory");
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_b)) : "memory");
    }
    __syncthreads();

    if (group == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
        if (lane_in_group != 0) return;
        int stage = 0;
        uint32_t phase = 0;
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            const int batch = tile / tiles_per_batch;
            int tm, tn;
            tile_coords(tile % tiles_per_batch, tiles_m, tiles_n, &tm, &tn);
            for (int kt = 0; kt < ktiles; ++kt) {
                // A fresh barrier counts as having completed the phase before
                // phase 0, so the first pass over the ring does not wait.
                mbar_wait(smem_addr(&empty[stage]), phase ^ 1);
                const uint32_t bar = smem_addr(&full[stage]), dst = ring + stage * kStageBytes;
                mbar_arrive_expect_tx(bar, kStageBytes);
                tma_load(dst, &map_a, bar, kt * kBK, tm * kBM, a_batched ? batch : 0);
                if constexpr (BKMajor) {
                    tma_load(dst + kStageBytesA, &map_b, bar, kt * kBK, tn * kBN, b_batched ? batch : 0);
                } else {
                    constexpr int kPanelCols = kRowBytes / element_size(M);
#pragma unroll
                    for (int panel = 0; panel < kBN / kPanelCols; ++panel)
                        tma_load(dst + kStageBytesA + panel * kPanelBytes, &map_b, bar, tn * kBN + panel * kPanelCols,
                                 kt * kBK, b_batched ? batch : 0);
                }
                if (++stage == kStages) {
                    stage = 0;
                    phase ^= 1;
                }
            }
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
    const int consumer = group - 1, warp = lane_in_group / 32, lane = threadIdx.x % 32;
    int stage = 0;
    uint32_t phase = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int batch = tile / tiles_per_batch;
        int tm, tn;
        tile_coords(tile % tiles_per_batch, tiles_m, tiles_n, &tm, &tn);

        Acc acc[kWgmmaN / 2];
#pragma unroll
        for (int i = 0; i < kWgmmaN / 2; ++i) acc[i] = Acc(0);
        int previous = -1;
        for (int kt = 0; kt < ktiles; ++kt) {
            mbar_wait(smem_addr(&full[stage]), phase);
            const uint32_t a = ring + stage * kStageBytes + consumer * (kBM / kConsumers) * kRowBytes;
            const uint32_t b = ring + stage * kStageBytes + kStageBytesA;
#pragma unroll
            for (int i = 0; i < kWgmmaN / 2; ++i) fence_operand(acc[i]);
            asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
            for (int s = 0; s < kRowBytes / 32; ++s) {
                const uint64_t desc_b = BKMajor ? smem_desc(b + s * 32, 0) : smem_desc(b + s * 16 * kRowBytes, kPanelBytes);
                Mma::run(acc, smem_desc(a + s * 32, 0), desc_b, 1);
            }
            asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#pragma unroll
            for (int i = 0; i < kWgmmaN / 2; ++i) fence_operand(acc[i]);
            // One group stays in flight; the one before it has finished
            // reading its stage, which goes back to the producer.
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            if (previous >= 0 && lane == 0) mbar_arrive(smem_addr(&empty[previous]));
            previous = stage;
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1;
            }
        }
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
        for (int i = 0; i < kWgmmaN / 2; ++i) fence_operand(acc[i]);
        if (previous >= 0 && lane == 0) mbar_arrive(smem_addr(&empty[previous]));

        // wgmma's accumulator layout: warp w holds rows 16w..16w+15; per
        // 8-column block j, registers 4j..4j+3 are (g, 2t), (g, 2t+1),
        // (g+8, 2t), (g+8, 2t+1) with g = lane / 4, t = lane % 4.
        const int m = tm * kBM + consumer * (kBM / kConsumers) + warp * 16 + lane / 4;
        const int n0 = tn * kBN + 2 * (lane % 4);
#pragma unroll
        for (int j = 0; j < kWgmmaN / 8; ++j) {
            epilogue_pair(p, batch, m, n0 + 8 * j, acc[4 * j], acc[4 * j + 1]);
            epilogue_pair(p, batch, m + 8, n0 + 8 * j, acc[4 * j + 2], acc[4 * j + 3]);
        }
    }
#endif  // FASTNN_SM90A_DEVICE
}

// ---------------------------------------------------------------------------
// Host side.

PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void* ptr = nullptr;
        cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
        const cudaError_t e =
            cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &found);
        return e == cudaSuccess && found == cudaDriverEntryPointSuccess
                   ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr)
                   : nullptr;
    }();
    return fn;
}

CUtensorMapDataType tma_dtype(Math m) {
    switch (m) {
        case Math::bf16: return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
        case Math::f16: return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
        case Math::tf32: return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;  // bits as stored; wgmma reads them as tf32
        case Math::s8: return CU_TENSOR_MAP_DATA_TYPE_UINT8;      // bytes; zero fill is the same
    }
    return CU_TENSOR_MAP_DATA_TYPE_UINT8;
}

// Leading dimension in bytes; an operand with one row (K-major) or one k
// (MN-major) has none, so any valid one.
int64_t row_bytes(const Operand& op, int rows, int k, int size) {
    const bool k_major = op.layout == Layout::k_major;
    const int64_t ld = k_major ? op.stride_mn : op.stride_k;
    return ld != 0 ? ld * size : (int64_t(k_major ? k : rows) * size + 15) / 16 * 16;
}

// 3-D map (contiguous dim, other dim, batch) with boxes kRowBytes wide:
// K-major operands are (K, rows) with box_rows rows per box; N-major B is
// (N, K) with one stage of K rows per box.
bool encode(CUtensorMap* map, const Operand& op, int rows, int k, int batch, int box_rows, Math math) {
    const int size = element_size(math);
    const bool k_major = op.layout == Layout::k_major;
    const int64_t ld = row_bytes(op, rows, k, size);
    const int64_t inner = k_major ? k : rows, outer = k_major ? rows : k;
    const bool batched = op.batch_stride != 0;
    const cuuint64_t dims[3] = {cuuint64_t(inner), cuuint64_t(outer), cuuint64_t(batched ? batch : 1)};
    const cuuint64_t strides[2] = {cuuint64_t(ld), cuuint64_t(batched ? op.batch_stride * size : ld * outer)};
    const cuuint32_t box[3] = {cuuint32_t(kRowBytes / size), cuuint32_t(k_major ? box_rows : kRowBytes / size), 1};
    const cuuint32_t element_strides[3] = {1, 1, 1};
    return encode_tiled()(map, tma_dtype(math), 3, const_cast<void*>(op.data), dims, strides, box, element_strides,
                          CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                          CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool tma_operand(const Operand& op, int rows, int k, int size) {
    const int64_t ld = row_bytes(op, rows, k, size);
    const int64_t outer = op.layout == Layout::k_major ? rows : k;
    // TMA strides are unsigned multiples of 16 below 2^40; batches must not
    // overlap (a broadcast batch has stride 0 and gets a one-deep map).
    return op.layout != Layout::strided && op.vec16 && ld > 0 && ld < (int64_t(1) << 40) &&
           op.batch_stride >= 0 && (op.batch_stride == 0 || op.batch_stride * size >= ld * outer);
}

template <Math M, bool BKMajor>
cudaError_t launch(const Problem& p, int multiprocessors, cudaStream_t stream) {
    CUtensorMap map_a, map_b;
    if (!encode(&map_a, p.a, p.m, p.k, p.batch, kBM, M) || !encode(&map_b, p.b, p.n, p.k, p.batch, kBN, M))
        return cudaErrorInvalidValue;
    const auto kernel = gemm_sm90_kernel<M, BKMajor>;
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (e != cudaSuccess) return e;
    const int64_t tiles = int64_t((p.m + kBM - 1) / kBM) * ((p.n + kBN - 1) / kBN) * p.batch;
    const int grid = int(tiles < multiprocessors ? tiles : multiprocessors);
    kernel<<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, p, p.a.batch_stride != 0, p.b.batch_stride != 0);
    return cudaGetLastError();
}

}  // namespace

bool sm90_available() {
#if defined(FASTNN_CUDA_SM90A)
    return encode_tiled() != nullptr;
#else
    return false;
#endif
}

bool sm90_accepts(const Problem& p, Math math) {
    const int size = element_size(math);
    const int64_t tiles = int64_t((p.m + kBM - 1) / kBM) * ((p.n + kBN - 1) / kBN) * p.batch;
    const bool b_ok = p.b.layout == Layout::k_major || (p.b.layout == Layout::mn_major && size == 2);
    return p.k > 0 && tiles <= INT32_MAX && p.a.layout == Layout::k_major && b_ok && tma_operand(p.a, p.m, p.k, size) &&
           tma_operand(p.b, p.n, p.k, size);
}

cudaError_t launch_sm90(const Problem& p, Math math, int multiprocessors, cudaStream_t stream) {
    const bool bk = p.b.layout == Layout::k_major;
    switch (math) {
        case Math::bf16: return bk ? launch<Math::bf16, true>(p, multiprocessors, stream)
                                   : launch<Math::bf16, false>(p, multiprocessors, stream);
        case Math::f16: return bk ? launch<Math::f16, true>(p, multiprocessors, stream)
                                  : launch<Math::f16, false>(p, multiprocessors, stream);
        case Math::tf32: return launch<Math::tf32, true>(p, multiprocessors, stream);
        case Math::s8: return launch<Math::s8, true>(p, multiprocessors, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace fastnn::cuda::gemm_detail
