// Attention forward for sm_80 and later (mma.sync), FlashAttention-2 style.
//
// Floor: 4·S_q·S_kv·D FLOPs per (batch, head) (halved when causal) against
// reading q, k, v and writing o once: at D = 128 that is ~S/2 FLOPs per byte,
// far past the tensor cores' ~300 FLOP/byte balance point for S >= 1024, so
// the kernel is compute-bound and the game is keeping mma.sync fed.
//
// One CTA of 4 warps per (q block, head, batch); each warp owns 16·kMI query
// rows for the whole kv sweep, so row statistics (max, sum) stay in registers
// and need only quad shuffles. K and V tiles alternate through one shared
// buffer each: the V load of tile n is in flight during Q·Kᵀ, the K load of
// tile n-1 during P·V (a two-stage pipeline over the two operands). The kv
// sweep runs from the last block down, so the one tile that needs masking for
// the sequence tail or the causal diagonal comes first; causal blocks wholly
// above the diagonal are never visited.
#include "attention_common.cuh"

namespace fastnn::cuda::attn {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;

// Tiles per head dim. Accumulator registers per thread are S (kBlockM·kBlockN
// /128) + O (kBlockM·D/128) + Q fragments (kBlockM·D/256, when kept in
// registers): D64 at 128x64 is 64 + 64 + 32; D96/D128 at 64x64 is 32 + 64 + 32;
// D256 keeps Q in shared memory and halves the kv tile (16 + 128): at 64x64 it
// spills. ptxas spends the rest of the 255 on address and load scheduling.
// Shared memory (Q + K + V) is 32, 36, 48 and 64 KB: inside the 99 KB an
// sm_86/89 block may use, and two CTAs (8 warps) per SM fit on A100 and H100.
template <int kD> struct FwdTile;
template <> struct FwdTile<64> { static constexpr int kBlockM = 128, kBlockN = 64; static constexpr bool kQInRegs = true; };
template <> struct FwdTile<96> { static constexpr int kBlockM = 64, kBlockN = 64; static constexpr bool kQInRegs = true; };
template <> struct FwdTile<128> { static constexpr int kBlockM = 64, kBlockN = 64; static constexpr bool kQInRegs = true; };
template <> struct FwdTile<256> { static constexpr int kBlockM = 64, kBlockN = 32; static constexpr bool kQInRegs = false; };

template <int kD>
constexpr int fwd_smem_bytes() {
    return (FwdTile<kD>::kBlockM + 2 * FwdTile<kD>::kBlockN) * kD * 2;
}

template <class T, int kD>
__global__ void __launch_bounds__(kThreads) attention_fwd_kernel(const AttentionParams p) {
    using Tile = FwdTile<kD>;
    using Mma = MmaOp<T>;
    constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN;
    constexpr int kMI = kBlockM / (16 * kWarps);  // m16 tiles per warp
    constexpr int kNI = kBlockN / 8;              // n8 tiles of S per warp
    constexpr int kKD = kD / 16;                  // k steps of Q·Kᵀ
    constexpr int kND = kD / 8;                   // n8 tiles of O per warp
    constexpr int kWarpRows = 16 * kMI;

    extern __shared__ __align__(128) unsigned char smem_raw[];
    T* sQ = reinterpret_cast<T*>(smem_raw);
    T* sK = sQ + kBlockM * kD;
    T* sV = sK + kBlockN * kD;

    const int m_block = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const SeqInfo seq = seq_info(p, b);
    const int m0 = m_block * kBlockM;
    if (m0 >= seq.seqlen_q) return;
    const int h_kv = h / (p.heads_q / p.heads_kv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    const auto q = make_slice<T>(p.q, p.q_strides, seq.batch_index, h, seq.q_row0);
    const auto k = make_slice<T>(p.k, p.k_strides, seq.batch_index, h_kv, seq.kv_row0);
    const auto v = make_slice<T>(p.v, p.v_strides, seq.batch_index, h_kv, seq.kv_row0);
    const KeyMask mask = key_mask(p, b, seq);

    int n_blocks = ceil_div(seq.seqlen_kv, kBlockN);
    if (p.causal) n_blocks = min(n_blocks, ceil_div(max(0, m0 + kBlockM + mask.diagonal), kBlockN));

    load_tile<T, kD, kBlockM, kThreads>(sQ, q, m0, seq.seqlen_q - m0, p.head_dim);
    if (n_blocks > 0) {
        const int n_last = (n_blocks - 1) * kBlockN;
        load_tile<T, kD, kBlockN, kThreads>(sK, k, n_last, seq.seqlen_kv - n_last, p.head_dim);
    }
    cp_async_commit();

    // Q fragments for every k step, loaded once (or, at D256, per use).
    constexpr bool kQInRegs = Tile::kQInRegs;
    const int warp_row0 = warp * kWarpRows;
    uint32_t q_frag[kQInRegs ? kMI : 1][kQInRegs ? kKD : 1][4];
    // Lane address patterns: A fragments (Q), B from row-major K, B from V read transposed.
    const LaneOffsets<kD> a_off(lane % 16, lane / 16);
    const LaneOffsets<kD> k_off(lane % 8 + (lane / 16) * 8, (lane / 8) % 2);
    const LaneOffsets<kD> v_off(lane % 8 + ((lane / 8) % 2) * 8, lane / 16);
    const T* sQ_warp = sQ + warp_row0 * kD;
    auto load_q_frag = [&](uint32_t (&a)[4], int mi, int kk) { ldmatrix_x4(a, sQ_warp + a_off(mi * 16, kk * 2)); };
    if constexpr (kQInRegs) {
        cp_async_wait<0>();
        __syncthreads();
#pragma unroll
        for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
            for (int kk = 0; kk < kKD; ++kk) load_q_frag(q_frag[mi][kk], mi, kk);
    }

    float o_acc[kMI][kND][4] = {};
    float row_max[kMI][2], row_sum[kMI][2];
#pragma unroll
    for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) row_max[mi][hh] = -INFINITY, row_sum[mi][hh] = 0.0f;
    const float scale_log2 = p.scale * kLog2e;

    for (int n_block = n_blocks - 1; n_block >= 0; --n_block) {
        const int n0 = n_block * kBlockN;
        cp_async_wait<0>();
        __syncthreads();  // K(n) has landed; every warp is done reading V(n+1)
        load_tile<T, kD, kBlockN, kThreads>(sV, v, n0, seq.seqlen_kv - n0, p.head_dim);
        cp_async_commit();

        float s[kMI][kNI][4] = {};
#pragma unroll
        for (int kk = 0; kk < kKD; ++kk) {
            uint32_t a[kMI][4];
#pragma unroll
            for (int mi = 0; mi < kMI; ++mi) {
                if constexpr (kQInRegs) {
#pragma unroll
                    for (int j = 0; j < 4; ++j) a[mi][j] = q_frag[mi][kk][j];
                } else {
                    load_q_frag(a[mi], mi, kk);
                }
            }
#pragma unroll
            for (int np = 0; np < kNI / 2; ++np) {
                uint32_t bk[4];
                ldmatrix_x4(bk, sK + k_off(np * 16, kk * 2));
#pragma unroll
                for (int mi = 0; mi < kMI; ++mi) {
                    Mma::run(s[mi][2 * np], a[mi], bk[0], bk[1]);
                    Mma::run(s[mi][2 * np + 1], a[mi], bk[2], bk[3]);
                }
            }
        }

        // Tail tile, causal diagonal, or padding mask: hide invisible keys.
        const bool needs_mask = n0 + kBlockN > seq.seqlen_kv || mask.padding ||
                                (p.causal && n0 + kBlockN - 1 > m0 + mask.diagonal);
        if (needs_mask) {
            // Padding bytes per column, shared by all of this lane's rows.
            bool padded[kNI][2];
#pragma unroll
            for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = n0 + ni * 8 + (lane % 4) * 2 + e;
                    padded[ni][e] = mask.padding && col < seq.seqlen_kv && mask.padding[col] == 0;
                }
#pragma unroll
            for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int limit = mask.limit(m0 + warp_row0 + mi * 16 + lane / 4 + hh * 8) - n0;
#pragma unroll
                    for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
                        for (int e = 0; e < 2; ++e)
                            if (ni * 8 + (lane % 4) * 2 + e >= limit || padded[ni][e]) s[mi][ni][2 * hh + e] = -INFINITY;
                }
        }

        // Online softmax. Each row lives in one quad (4 lanes); sums stay
        // per-lane partial until the end since the rescale factor is per row.
#pragma unroll
        for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                float mx = row_max[mi][hh];
#pragma unroll
                for (int ni = 0; ni < kNI; ++ni) mx = fmaxf(mx, fmaxf(s[mi][ni][2 * hh], s[mi][ni][2 * hh + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                // A row with no visible key so far keeps max -inf; subtracting
                // 0 instead keeps exp2(-inf - -inf) from producing NaN.
                const float max_scaled = mx == -INFINITY ? 0.0f : mx * scale_log2;
                const float rescale = fast_exp2(row_max[mi][hh] * scale_log2 - max_scaled);
                row_max[mi][hh] = mx;
                float sum = 0.0f;
#pragma unroll
                for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float& x = s[mi][ni][2 * hh + e];
                        x = fast_exp2(fmaf(x, scale_log2, -max_scaled));
                        sum += x;
                    }
                row_sum[mi][hh] = row_sum[mi][hh] * rescale + sum;
#pragma unroll
                for (int di = 0; di < kND; ++di) {
                    o_acc[mi][di][2 * hh] *= rescale;
                    o_acc[mi][di][2 * hh + 1] *= rescale;
                }
            }

        cp_async_wait<0>();
        __syncthreads();  // V(n) has landed; every warp is done reading K(n)
        if (n_block > 0) {
            const int n_prev = n0 - kBlockN;
            load_tile<T, kD, kBlockN, kThreads>(sK, k, n_prev, seq.seqlen_kv - n_prev, p.head_dim);
        }
        cp_async_commit();

#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            uint32_t a[kMI][4];
#pragma unroll
            for (int mi = 0; mi < kMI; ++mi) {
                a[mi][0] = Mma::pack(s[mi][2 * kk][0], s[mi][2 * kk][1]);
                a[mi][1] = Mma::pack(s[mi][2 * kk][2], s[mi][2 * kk][3]);
                a[mi][2] = Mma::pack(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1]);
                a[mi][3] = Mma::pack(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < kND / 2; ++dp) {
                uint32_t bv[4];
                ldmatrix_x4_trans(bv, sV + v_off(kk * 16, dp * 2));
#pragma unroll
                for (int mi = 0; mi < kMI; ++mi) {
                    Mma::run(o_acc[mi][2 * dp], a[mi], bv[0], bv[1]);
                    Mma::run(o_acc[mi][2 * dp + 1], a[mi], bv[2], bv[3]);
                }
            }
        }
    }
    // Every thread's copies have landed (when n_blocks == 0 the sweep never
    // waited) before the Q rows in shared memory become O staging rows.
    cp_async_wait<0>();
    __syncthreads();

    // Normalize; rows that saw no visible key have sum 0: output 0, lse -inf.
    float* lse = lse_row0(p, b, h, seq);
#pragma unroll
    for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            float sum = row_sum[mi][hh];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
            const int row = warp_row0 + mi * 16 + lane / 4 + hh * 8;
            if (lane % 4 == 0 && m0 + row < seq.seqlen_q)
                lse[m0 + row] = sum == 0.0f ? -INFINITY : row_max[mi][hh] * p.scale + logf(sum);
#pragma unroll
            for (int di = 0; di < kND; ++di) {
                const int col = di * 8 + (lane % 4) * 2;
                *reinterpret_cast<uint32_t*>(sQ + swizzle<kD>(row, col / 8) + col % 8) =
                    Mma::pack(o_acc[mi][di][2 * hh] * inv, o_acc[mi][di][2 * hh + 1] * inv);
            }
        }
    __syncwarp();
    const auto o = make_slice<T>(p.o, p.o_strides, seq.batch_index, h, seq.q_row0);
    store_tile<T, kD>(o, m0 + warp_row0, sQ + warp_row0 * kD, kWarpRows, seq.seqlen_q - m0 - warp_row0, p.head_dim,
                      warp * 32, 32);
}

template <class T, int kD>
cudaError_t launch_fwd(const AttentionParams& p, cudaStream_t stream) {
    constexpr int kSmem = fwd_smem_bytes<kD>();
    const cudaError_t err = prepare_smem(attention_fwd_kernel<T, kD>, kSmem);
    if (err != cudaSuccess) return err;
    const dim3 grid(ceil_div(p.seqlen_q, FwdTile<kD>::kBlockM), p.heads_q, p.batch);
    attention_fwd_kernel<T, kD><<<grid, kThreads, kSmem, stream>>>(p);
    return cudaGetLastError();
}

template <class T>
cudaError_t dispatch_head_dim(const AttentionParams& p, cudaStream_t stream) {
    if (p.head_dim <= 64) return launch_fwd<T, 64>(p, stream);
    if (p.head_dim <= 96) return launch_fwd<T, 96>(p, stream);
    if (p.head_dim <= 128) return launch_fwd<T, 128>(p, stream);
    return launch_fwd<T, 256>(p, stream);
}

}  // namespace

cudaError_t attention_forward_sm80(const AttentionParams& p, cudaStream_t stream) {
    return p.dtype == AttentionDType::bf16 ? dispatch_head_dim<__nv_bfloat16>(p, stream)
                                           : dispatch_head_dim<__half>(p, stream);
}

}  // namespace fastnn::cuda::attn
