// Attention backward for sm_80 and later (mma.sync), FlashAttention-2 style.
//
// Floor: 5 matrix products of 2·S_q·S_kv·D FLOPs each per (batch, head)
// (S = Q·Kᵀ and dP = dO·Vᵀ recomputed; dV = Pᵀ·dO, dK = dSᵀ·Q, dQ = dS·K),
// 2.5x the forward's work (halved when causal), against reading q, k, v, o,
// dO and writing dq, dk, dv once: compute-bound like the forward.
//
// Passes: (1) dsum = rowsum(dO∘O) per query row, zeroing the dQ accumulator;
// (2) one CTA of 8 warps per (kv block, kv head, batch) sweeps every q block
// of every query head of its group, recomputing Sᵀ and dPᵀ tile by tile, with
// dK and dV accumulated in registers for the whole sweep (so grouped heads sum
// in a fixed order: deterministic) and dQ added into a float32 accumulator
// with atomics; (3) dQ scaled and rounded to the input dtype. In deterministic
// mode (2) skips dQ and a separate kernel (attention_bwd_dq_sm80.cu) owns each
// q block and loops over the kv blocks instead.
//
// Pᵀ and dSᵀ go through shared memory because the three products that use
// them want different warp layouts: Sᵀ/dPᵀ and dK/dV split the kv rows over 4
// warps and the columns over 2, dQ splits the q rows over 4. Head-dim columns
// are dealt to the two column warps in alternating 16-column pairs, so that a
// warp's chunk index splits into a lane part and a compile-time part.
#include "attention_common.cuh"

namespace fastnn::cuda::attn {
namespace {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kBlockM = 64, kBlockN = 64;

// dK + dV accumulators are 16 kv rows x D/2 columns per warp each: D/4 floats
// per thread per operand (64 at D256); Sᵀ and dPᵀ are 16 x 32 per warp (16
// each). Shared memory: K, V, Q, dO tiles (4 x 64 x D x 2 B) + Pᵀ, dSᵀ (16 KB)
// + lse, dsum rows: 48.5, 64.5, 80.5 and 144.5 KB for D = 64, 96, 128, 256
// (D256 needs an sm_80/sm_90 class 164+ KB SM).
template <int kD>
constexpr int bwd_smem_bytes() {
    return (2 * kBlockN + 2 * kBlockM) * kD * 2 + 2 * kBlockN * kBlockM * 2 + 2 * kBlockM * 4;
}

template <class T, int kD>
__global__ void __launch_bounds__(kThreads) attention_bwd_kernel(const AttentionParams p, const float* dsum,
                                                                  float* dq_accum) {
    using Mma = MmaOp<T>;
    constexpr int kKD = kD / 16;       // k steps over the head dim
    constexpr int kDT = kD / 16;       // n8 tiles of dK/dV (and dQ) columns per warp

    extern __shared__ __align__(128) unsigned char smem_raw[];
    T* sK = reinterpret_cast<T*>(smem_raw);
    T* sV = sK + kBlockN * kD;
    T* sQ = sV + kBlockN * kD;
    T* sdO = sQ + kBlockM * kD;
    T* sPt = sdO + kBlockM * kD;    // Pᵀ, kBlockN x kBlockM
    T* sdSt = sPt + kBlockN * kBlockM;  // dSᵀ
    float* sLse2 = reinterpret_cast<float*>(sdSt + kBlockN * kBlockM);  // lse·log2(e), +inf for empty rows
    float* sDsum = sLse2 + kBlockM;

    const int n_block = blockIdx.x, h_kv = blockIdx.y, b = blockIdx.z;
    const SeqInfo seq = seq_info(p, b);
    const int n0 = n_block * kBlockN;
    if (n0 >= seq.seqlen_kv) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wr = warp % 4, wc = warp / 4;  // row band of 16, column half

    const auto k = make_slice<T>(p.k, p.k_strides, seq.batch_index, h_kv, seq.kv_row0);
    const auto v = make_slice<T>(p.v, p.v_strides, seq.batch_index, h_kv, seq.kv_row0);
    const KeyMask mask = key_mask(p, b, seq);
    load_tile<T, kD, kBlockN, kThreads>(sK, k, n0, seq.seqlen_kv - n0, p.head_dim);
    load_tile<T, kD, kBlockN, kThreads>(sV, v, n0, seq.seqlen_kv - n0, p.head_dim);
    cp_async_commit();

    // Lane address patterns (see LaneOffsets): A fragments, B from row-major
    // tiles, B from tiles read transposed (16-column pair 2j + wc at chunk0 =
    // 4j), A from the transposed dSᵀ (q rows wr*16.. at chunk0 = 0).
    const LaneOffsets<kD> a_off(lane % 16, lane / 16);
    const LaneOffsets<kD> b_off(lane % 8 + (lane / 16) * 8, (lane / 8) % 2);
    const LaneOffsets<kD, 4> bt_off(lane % 8 + ((lane / 8) % 2) * 8, 2 * wc + lane / 16);
    const LaneOffsets<kBlockM> a_off_m(lane % 16, lane / 16);
    const LaneOffsets<kBlockM, 8> at_off_m(lane % 8 + (lane / 16) * 8, 2 * wr + (lane / 8) % 2);

    float dk[kDT][4] = {}, dv[kDT][4] = {};
    const float scale_log2 = p.scale * kLog2e;
    const int group = p.heads_q / p.heads_kv;
    // Causal: the first query that sees key n0 is n0 - diagonal.
    const int first_q = p.causal ? max(0, n0 - mask.diagonal) : 0;
    const int m_blocks = ceil_div(seq.seqlen_q, kBlockM);
    const bool tile_tail = n0 + kBlockN > seq.seqlen_kv;
    const int64_t ws_row0 = workspace_row(p, b, seq), ws_rows = workspace_rows(p);

    for (int h = h_kv * group; h < (h_kv + 1) * group; ++h) {
        const auto q = make_slice<T>(p.q, p.q_strides, seq.batch_index, h, seq.q_row0);
        const auto dO = make_slice<T>(p.do_, p.do_strides, seq.batch_index, h, seq.q_row0);
        const float* lse = lse_row0(p, b, h, seq);
        const float* dsum_h = dsum + h * ws_rows + ws_row0;
        float* dq_h = dq_accum ? dq_accum + (h * ws_rows + ws_row0) * kD : nullptr;

        for (int m_block = first_q / kBlockM; m_block < m_blocks; ++m_block) {
            const int m0 = m_block * kBlockM;
            __syncthreads();  // the previous q block's tiles are no longer read
            load_tile<T, kD, kBlockM, kThreads>(sQ, q, m0, seq.seqlen_q - m0, p.head_dim);
            load_tile<T, kD, kBlockM, kThreads>(sdO, dO, m0, seq.seqlen_q - m0, p.head_dim);
            cp_async_commit();
            if (threadIdx.x < kBlockM) {
                const int row = m0 + threadIdx.x;
                const float l = row < seq.seqlen_q ? lse[row] : INFINITY;
                // exp2(s - inf) = 0 makes the P of empty and out-of-range rows 0.
                sLse2[threadIdx.x] = l == -INFINITY ? INFINITY : l * kLog2e;
                sDsum[threadIdx.x] = row < seq.seqlen_q ? dsum_h[row] : 0.0f;
            }
            cp_async_wait<0>();
            __syncthreads();

            // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: kv rows wr*16.., q columns wc*32..
            float st[4][4] = {}, dpt[4][4] = {};
#pragma unroll
            for (int kk = 0; kk < kKD; ++kk) {
                uint32_t ak[4], av[4];
                ldmatrix_x4(ak, sK + a_off(wr * 16, kk * 2));
                ldmatrix_x4(av, sV + a_off(wr * 16, kk * 2));
#pragma unroll
                for (int mp = 0; mp < 2; ++mp) {
                    uint32_t bq[4], bo[4];
                    ldmatrix_x4(bq, sQ + b_off(wc * 32 + mp * 16, kk * 2));
                    ldmatrix_x4(bo, sdO + b_off(wc * 32 + mp * 16, kk * 2));
                    Mma::run(st[2 * mp], ak, bq[0], bq[1]);
                    Mma::run(st[2 * mp + 1], ak, bq[2], bq[3]);
                    Mma::run(dpt[2 * mp], av, bo[0], bo[1]);
                    Mma::run(dpt[2 * mp + 1], av, bo[2], bo[3]);
                }
            }

            // Pᵀ = exp(scale·Sᵀ - lse), dSᵀ = Pᵀ∘(dPᵀ - dsum); invisible pairs get 0.
            const bool needs_mask =
                tile_tail || mask.padding || (p.causal && n0 + kBlockN - 1 > m0 + mask.diagonal);
#pragma unroll
            for (int t = 0; t < 4; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = wr * 16 + lane / 4 + (e / 2) * 8;
                    const int qi = wc * 32 + t * 8 + (lane % 4) * 2 + e % 2;
                    float pv = fast_exp2(fmaf(st[t][e], scale_log2, -sLse2[qi]));
                    if (needs_mask && !mask.visible(m0 + qi, n0 + key)) pv = 0.0f;
                    st[t][e] = pv;
                    dpt[t][e] = pv * (dpt[t][e] - sDsum[qi]);
                }
#pragma unroll
            for (int t = 0; t < 4; ++t)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int key = wr * 16 + lane / 4 + hh * 8, col = wc * 32 + t * 8 + (lane % 4) * 2;
                    const int at = swizzle<kBlockM>(key, col / 8) + col % 8;
                    *reinterpret_cast<uint32_t*>(sPt + at) = Mma::pack(st[t][2 * hh], st[t][2 * hh + 1]);
                    *reinterpret_cast<uint32_t*>(sdSt + at) = Mma::pack(dpt[t][2 * hh], dpt[t][2 * hh + 1]);
                }
            __syncthreads();

            // dV += Pᵀ·dO and dK += dSᵀ·Q: kv rows wr*16.., column pairs 2j + wc.
#pragma unroll
            for (int kk = 0; kk < kBlockM / 16; ++kk) {
                uint32_t ap[4], ads[4];
                ldmatrix_x4(ap, sPt + a_off_m(wr * 16, kk * 2));
                ldmatrix_x4(ads, sdSt + a_off_m(wr * 16, kk * 2));
#pragma unroll
                for (int dp = 0; dp < kDT / 2; ++dp) {
                    uint32_t bo[4], bq[4];
                    ldmatrix_x4_trans(bo, sdO + bt_off(kk * 16, dp * 4));
                    ldmatrix_x4_trans(bq, sQ + bt_off(kk * 16, dp * 4));
                    Mma::run(dv[2 * dp], ap, bo[0], bo[1]);
                    Mma::run(dv[2 * dp + 1], ap, bo[2], bo[3]);
                    Mma::run(dk[2 * dp], ads, bq[0], bq[1]);
                    Mma::run(dk[2 * dp + 1], ads, bq[2], bq[3]);
                }
            }

            // dQ += dS·K into the float32 accumulator: q rows wr*16.., column
            // pairs 2j + wc, one pair at a time to keep registers for dK and dV.
            // At D256 the dS fragments are reloaded per column pair: holding
            // them (16 registers) next to dK and dV spills on sm_90a.
            if (dq_h) {
                constexpr bool kReloadDs = kD > 128;
                uint32_t ads[kBlockN / 16][4];
                if constexpr (!kReloadDs) {
#pragma unroll
                    for (int kk = 0; kk < kBlockN / 16; ++kk) ldmatrix_x4_trans(ads[kk], sdSt + at_off_m(kk * 16, 0));
                }
#pragma unroll
                for (int dc = 0; dc < kDT / 2; ++dc) {
                    float acc[2][4] = {};
#pragma unroll
                    for (int kk = 0; kk < kBlockN / 16; ++kk) {
                        if constexpr (kReloadDs) ldmatrix_x4_trans(ads[kk], sdSt + at_off_m(kk * 16, 0));
                        uint32_t bk[4];
                        ldmatrix_x4_trans(bk, sK + bt_off(kk * 16, dc * 4));
                        Mma::run(acc[0], ads[kk], bk[0], bk[1]);
                        Mma::run(acc[1], ads[kk], bk[2], bk[3]);
                    }
#pragma unroll
                    for (int hh = 0; hh < 2; ++hh) {
                        const int row = m0 + wr * 16 + lane / 4 + hh * 8;
                        if (row >= seq.seqlen_q) continue;
                        float* dst = dq_h + int64_t(row) * kD + (2 * dc + wc) * 16 + (lane % 4) * 2;
#pragma unroll
                        for (int j = 0; j < 2; ++j) {
                            atomicAdd(dst + j * 8, acc[j][2 * hh]);
                            atomicAdd(dst + j * 8 + 1, acc[j][2 * hh + 1]);
                        }
                    }
                }
            }
        }
    }

    // Stage dK (scaled: S was scaled before the softmax) and dV through the K
    // and V tiles for coalesced stores.
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int di = 0; di < kDT; ++di)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int row = wr * 16 + lane / 4 + hh * 8, col = (di / 2 * 2 + wc) * 16 + (di % 2) * 8 + (lane % 4) * 2;
            const int at = swizzle<kD>(row, col / 8) + col % 8;
            *reinterpret_cast<uint32_t*>(sK + at) = Mma::pack(dk[di][2 * hh] * p.scale, dk[di][2 * hh + 1] * p.scale);
            *reinterpret_cast<uint32_t*>(sV + at) = Mma::pack(dv[di][2 * hh], dv[di][2 * hh + 1]);
        }
    __syncthreads();
    const auto dk_out = make_slice<T>(p.dk, p.dk_strides, seq.batch_index, h_kv, seq.kv_row0);
    const auto dv_out = make_slice<T>(p.dv, p.dv_strides, seq.batch_index, h_kv, seq.kv_row0);
    store_tile<T, kD>(dk_out, n0, sK, kBlockN, seq.seqlen_kv - n0, p.head_dim, 0, kThreads);
    store_tile<T, kD>(dv_out, n0, sV, kBlockN, seq.seqlen_kv - n0, p.head_dim, 0, kThreads);
}

// One warp per query row: dsum = Σ_d dO·O in float32, and the row of the dQ
// accumulator zeroed. Memory-bound; rows are short, so lanes stride the row.
template <class T>
__global__ void __launch_bounds__(256) attention_bwd_preprocess_kernel(const AttentionParams p, float* dsum,
                                                                      float* dq_accum, int dq_cols) {
    using Mma = MmaOp<T>;
    const int h = blockIdx.y, b = blockIdx.z;
    const int row = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    const SeqInfo seq = seq_info(p, b);
    if (row >= seq.seqlen_q) return;
    const auto o = make_slice<T>(static_cast<const void*>(p.o), p.o_strides, seq.batch_index, h, seq.q_row0);
    const auto dO = make_slice<T>(p.do_, p.do_strides, seq.batch_index, h, seq.q_row0);
    const T* o_row = o.row(row);
    const T* do_row = dO.row(row);
    float acc = 0.0f;
    for (int d = lane; d < p.head_dim; d += 32) acc += Mma::to_float(o_row[d]) * Mma::to_float(do_row[d]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    const int64_t ws = h * workspace_rows(p) + workspace_row(p, b, seq) + row;
    if (lane == 0) dsum[ws] = acc;
    if (dq_accum)
        for (int d = lane; d < dq_cols; d += 32) dq_accum[ws * dq_cols + d] = 0.0f;
}

// dq = scale · dq_accum, rounded to the input dtype; one warp per query row.
template <class T>
__global__ void __launch_bounds__(256) attention_bwd_convert_dq_kernel(const AttentionParams p,
                                                                      const float* dq_accum, int dq_cols) {
    using Mma = MmaOp<T>;
    const int h = blockIdx.y, b = blockIdx.z;
    const int row = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    const SeqInfo seq = seq_info(p, b);
    if (row >= seq.seqlen_q) return;
    const auto dq = make_slice<T>(p.dq, p.dq_strides, seq.batch_index, h, seq.q_row0);
    const float* src = dq_accum + (h * workspace_rows(p) + workspace_row(p, b, seq) + row) * dq_cols;
    T* dst = dq.row(row);
    for (int d = lane; d < p.head_dim; d += 32) dst[d] = Mma::from_float(src[d] * p.scale);
}

template <class T, int kD>
cudaError_t launch_bwd(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream) {
    // Zero-length sequences launch nothing over them: with S_q = 0, dK and dV
    // are still written (as zeros) by the main kernel; with S_kv = 0, dQ by the
    // convert or deterministic dQ kernel.
    const dim3 rows_grid(ceil_div(p.seqlen_q, 8), p.heads_q, p.batch);
    cudaError_t err = cudaSuccess;
    if (p.seqlen_q > 0) {
        attention_bwd_preprocess_kernel<T><<<rows_grid, 256, 0, stream>>>(p, w.dsum, w.dq_accum, kD);
        if ((err = cudaGetLastError()) != cudaSuccess) return err;
    }

    constexpr int kSmem = bwd_smem_bytes<kD>();
    err = prepare_smem(attention_bwd_kernel<T, kD>, kSmem);
    if (err != cudaSuccess) return err;
    if (p.seqlen_kv > 0) {
        const dim3 grid(ceil_div(p.seqlen_kv, kBlockN), p.heads_kv, p.batch);
        attention_bwd_kernel<T, kD><<<grid, kThreads, kSmem, stream>>>(p, w.dsum, w.dq_accum);
        if ((err = cudaGetLastError()) != cudaSuccess) return err;
    }
    if (p.seqlen_q == 0) return cudaSuccess;
    if (p.deterministic) return attention_backward_dq_sm80(p, w, stream);
    attention_bwd_convert_dq_kernel<T><<<rows_grid, 256, 0, stream>>>(p, w.dq_accum, kD);
    return cudaGetLastError();
}

template <class T>
cudaError_t dispatch_head_dim(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream) {
    if (p.head_dim <= 64) return launch_bwd<T, 64>(p, w, stream);
    if (p.head_dim <= 96) return launch_bwd<T, 96>(p, w, stream);
    if (p.head_dim <= 128) return launch_bwd<T, 128>(p, w, stream);
    return launch_bwd<T, 256>(p, w, stream);
}

}  // namespace

cudaError_t attention_backward_sm80(const AttentionParams& p, const BwdWorkspace& w, cudaStream_t stream) {
    return p.dtype == AttentionDType::bf16 ? dispatch_head_dim<__nv_bfloat16>(p, w, stream)
                                           : dispatch_head_dim<__half>(p, w, stream);
}

}  // namespace fastnn::cuda::attn
