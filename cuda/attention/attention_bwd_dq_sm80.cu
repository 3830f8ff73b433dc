// Deterministic dQ for the attention backward: one CTA of 4 warps per
// (q block, query head, batch) owns its dQ rows and loops over the kv blocks,
// so no two CTAs add into the same element and the sum order is fixed. It
// recomputes S = Q·Kᵀ and dP = dO·Vᵀ (the main backward kernel computed them
// too): 3 products per tile instead of the atomic path's one, the price of
// bit-identical gradients. Each warp owns 16 query rows; dS stays in registers
// and feeds dS·K as the A operand, as P feeds P·V in the forward. K and V
// tiles are double-buffered: tile n+1 loads while tile n is used.
#include "attention_common.cuh"

namespace fastnn::cuda::attn {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kBlockM = 64;

// Registers per thread: S and dP (kBlockN/2 each) + dQ (D/2). D256 takes a
// 16-key tile to stay within 255 (at 32 it spills). Shared memory: Q and dO
// (2 x 64 x D x 2 B) plus two stages of K and V: 48, 72, 96 and 96 KB for
// D = 64, 96, 128, 256.
template <int kD> __host__ __device__ constexpr int dq_block_n() { return kD == 256 ? 16 : 64; }
template <int kD> constexpr int dq_smem_bytes() { return (2 * kBlockM + 4 * dq_block_n<kD>()) * kD * 2; }

template <class T, int kD>
__global__ void __launch_bounds__(kThreads) attention_bwd_dq_kernel(const AttentionParams p, const float* dsum) {
    using Mma = MmaOp<T>;
    constexpr int kBlockN = dq_block_n<kD>();
    constexpr int kNI = kBlockN / 8, kKD = kD / 16, kND = kD / 8;

    extern __shared__ __align__(128) unsigned char smem_raw[];
    T* sQ = reinterpret_cast<T*>(smem_raw);
    T* sdO = sQ + kBlockM * kD;
    T* sKV = sdO + kBlockM * kD;  // stage s: K at sKV + 2s·kBlockN·kD, V after it

    const int m_block = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const SeqInfo seq = seq_info(p, b);
    const int m0 = m_block * kBlockM;
    if (m0 >= seq.seqlen_q) return;
    const int h_kv = h / (p.heads_q / p.heads_kv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int warp_row0 = warp * 16;

    const auto q = make_slice<T>(p.q, p.q_strides, seq.batch_index, h, seq.q_row0);
    const auto dO = make_slice<T>(p.do_, p.do_strides, seq.batch_index, h, seq.q_row0);
    const auto k = make_slice<T>(p.k, p.k_strides, seq.batch_index, h_kv, seq.kv_row0);
    const auto v = make_slice<T>(p.v, p.v_strides, seq.batch_index, h_kv, seq.kv_row0);
    const KeyMask mask = key_mask(p, b, seq);

    int n_blocks = ceil_div(seq.seqlen_kv, kBlockN);
    if (p.causal) n_blocks = min(n_blocks, ceil_div(max(0, m0 + kBlockM + mask.diagonal), kBlockN));

    auto load_kv = [&](int stage, int n_block) {
        const int n0 = n_block * kBlockN;
        T* sK = sKV + 2 * stage * kBlockN * kD;
        load_tile<T, kD, kBlockN, kThreads>(sK, k, n0, seq.seqlen_kv - n0, p.head_dim);
        load_tile<T, kD, kBlockN, kThreads>(sK + kBlockN * kD, v, n0, seq.seqlen_kv - n0, p.head_dim);
    };
    load_tile<T, kD, kBlockM, kThreads>(sQ, q, m0, seq.seqlen_q - m0, p.head_dim);
    load_tile<T, kD, kBlockM, kThreads>(sdO, dO, m0, seq.seqlen_q - m0, p.head_dim);
    if (n_blocks > 0) load_kv(0, 0);
    cp_async_commit();

    // This lane's two rows: lse·log2(e) (+inf where P must be 0) and dsum.
    const float* lse = lse_row0(p, b, h, seq);
    const float* dsum_h = dsum + h * workspace_rows(p) + workspace_row(p, b, seq);
    float lse2[2], row_dsum[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        const int row = m0 + warp_row0 + lane / 4 + hh * 8;
        const float l = row < seq.seqlen_q ? lse[row] : INFINITY;
        lse2[hh] = l == -INFINITY ? INFINITY : l * kLog2e;
        row_dsum[hh] = row < seq.seqlen_q ? dsum_h[row] : 0.0f;
    }

    const LaneOffsets<kD> a_off(lane % 16, lane / 16);
    const LaneOffsets<kD> b_off(lane % 8 + (lane / 16) * 8, (lane / 8) % 2);
    const LaneOffsets<kD> bt_off(lane % 8 + ((lane / 8) % 2) * 8, lane / 16);
    const T* sQ_warp = sQ + warp_row0 * kD;
    const T* sdO_warp = sdO + warp_row0 * kD;
    const float scale_log2 = p.scale * kLog2e;
    float dq[kND][4] = {};

    for (int n_block = 0; n_block < n_blocks; ++n_block) {
        const int n0 = n_block * kBlockN;
        const T* sK = sKV + 2 * (n_block % 2) * kBlockN * kD;
        const T* sV = sK + kBlockN * kD;
        if (n_block + 1 < n_blocks) {
            load_kv((n_block + 1) % 2, n_block + 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        float s[kNI][4] = {}, dp[kNI][4] = {};
#pragma unroll
        for (int kk = 0; kk < kKD; ++kk) {
            uint32_t aq[4], ao[4];
            ldmatrix_x4(aq, sQ_warp + a_off(0, kk * 2));
            ldmatrix_x4(ao, sdO_warp + a_off(0, kk * 2));
#pragma unroll
            for (int np = 0; np < kNI / 2; ++np) {
                uint32_t bk[4], bv[4];
                ldmatrix_x4(bk, sK + b_off(np * 16, kk * 2));
                ldmatrix_x4(bv, sV + b_off(np * 16, kk * 2));
                Mma::run(s[2 * np], aq, bk[0], bk[1]);
                Mma::run(s[2 * np + 1], aq, bk[2], bk[3]);
                Mma::run(dp[2 * np], ao, bv[0], bv[1]);
                Mma::run(dp[2 * np + 1], ao, bv[2], bv[3]);
            }
        }

        // dS = P∘(dP - dsum), P = exp(scale·S - lse); invisible keys give 0.
        const bool needs_mask = n0 + kBlockN > seq.seqlen_kv || mask.padding ||
                                (p.causal && n0 + kBlockN - 1 > m0 + mask.diagonal);
#pragma unroll
        for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = m0 + warp_row0 + lane / 4 + (e / 2) * 8;
                const int col = n0 + ni * 8 + (lane % 4) * 2 + e % 2;
                float pv = fast_exp2(fmaf(s[ni][e], scale_log2, -lse2[e / 2]));
                if (needs_mask && !mask.visible(row, col)) pv = 0.0f;
                s[ni][e] = pv * (dp[ni][e] - row_dsum[e / 2]);
            }

        // dQ += dS·K.
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            const uint32_t a[4] = {Mma::pack(s[2 * kk][0], s[2 * kk][1]), Mma::pack(s[2 * kk][2], s[2 * kk][3]),
                                   Mma::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   Mma::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dp2 = 0; dp2 < kND / 2; ++dp2) {
                uint32_t bk[4];
                ldmatrix_x4_trans(bk, sK + bt_off(kk * 16, dp2 * 2));
                Mma::run(dq[2 * dp2], a, bk[0], bk[1]);
                Mma::run(dq[2 * dp2 + 1], a, bk[2], bk[3]);
            }
        }
        __syncthreads();  // this stage is reloaded two tiles on
    }
    cp_async_wait<0>();
    __syncthreads();  // with no kv block, the Q copies were never waited for

    // Stage scale·dQ in this warp's Q rows, then store.
#pragma unroll
    for (int di = 0; di < kND; ++di)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int row = warp_row0 + lane / 4 + hh * 8, col = di * 8 + (lane % 4) * 2;
            *reinterpret_cast<uint32_t*>(sQ + swizzle<kD>(row, col / 8) + col % 8) =
                Mma::pack(dq[di][2 * hh] * p.scale, dq[di][2 * hh + 1] * p.scale);
        }
    __syncwarp();
    const auto dq_out = make_slice<T>(p.dq, p.dq_strides, seq.batch_index, h, seq.q_row0);
    store_tile<T, kD>(dq_out, m0 + warp_row0, sQ_warp, 16, seq.seqlen_q - m0 - warp_row0, p.head_dim, warp * 32, 32);
}

template <class T, int kD>
cudaError_t launch_dq(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream) {
    constexpr int kSmem = dq_smem_bytes<kD>();
    const cudaError_t err = prepare_smem(attention_bwd_dq_kernel<T, kD>, kSmem);
    if (err != cudaSuccess) return err;
    const dim3 grid(ceil_div(p.seqlen_q, kBlockM), p.heads_q, p.batch);
    attention_bwd_dq_kernel<T, kD><<<grid, kThreads, kSmem, stream>>>(p, w.dsum);
    return cudaGetLastError();
}

template <class T>
cudaError_t dispatch_head_dim(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream) {
    if (p.head_dim <= 64) return launch_dq<T, 64>(p, w, stream);
    if (p.head_dim <= 96) return launch_dq<T, 96>(p, w, stream);
    if (p.head_dim <= 128) return launch_dq<T, 128>(p, w, stream);
    return launch_dq<T, 256>(p, w, stream);
}

}  // namespace

cudaError_t attention_backward_dq_sm80(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream) {
    return p.dtype == AttentionDType::bf16 ? dispatch_head_dim<__nv_bfloat16>(p, w, stream)
                                           : dispatch_head_dim<__half>(p, w, stream);
}

}  // namespace fastnn::cuda::attn
