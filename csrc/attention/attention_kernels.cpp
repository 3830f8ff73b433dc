// Attention forward, compiled once per ISA. Floor: 4 Sq Skv D FLOPs (two
// products; causal: about half), and O(S D) bytes, so compute-bound for any
// practical length.
//
// One task = one (batch, query head, block of 64 queries). The block of Q is
// transposed once into Qt (D x 64), then for each block of 64 keys:
//   St = K_blk Qt           scores, keys as rows, queries as columns
//   online softmax down the columns (vector max / exp / add, no shuffles)
//   Ot = alpha * Ot + V_blk^T St   (Ot: D x 64, the output transposed)
// Both products are tile::gemm with K and V read in place by broadcasts (no
// transposes of K or V); bfloat16 or strided-D inputs are first converted
// into a float workspace of the same O(S D) size. The output is transposed
// back and divided by the row sums once per task; lse = max + log(sum).
#include "attention_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::attention {
namespace {

// K and V of every (batch, kv head) as float rows of D with unit stride:
// the inputs themselves when they already are, else a converted copy.
template <class T>
struct KeyValueRows {
    const float* k = nullptr;
    const float* v = nullptr;
    int64_t k_row = 0, v_row = 0;         // stride between keys
    int64_t k_head[2] = {}, v_head[2] = {};  // strides of batch and head

    KeyValueRows(const TensorView& kt, const TensorView& vt) {
        const int64_t B = kt.shape[0], H = kt.shape[1], S = kt.shape[2], D = kt.shape[3];
        const bool direct = std::is_same_v<T, float> && (kt.strides[3] == 1 || D == 1) && (vt.strides[3] == 1 || D == 1);
        if (direct) {
            k = static_cast<const float*>(kt.data);
            v = static_cast<const float*>(vt.data);
            k_row = kt.strides[2], v_row = vt.strides[2];
            k_head[0] = kt.strides[0], k_head[1] = kt.strides[1];
            v_head[0] = vt.strides[0], v_head[1] = vt.strides[1];
            return;
        }
        float* kw = attention_workspace(2 * B * H * S * D);
        float* vw = kw + B * H * S * D;
        const T* ks = static_cast<const T*>(kt.data);
        const T* vs = static_cast<const T*>(vt.data);
        parallel_for(B * H, 1, [&](int64_t h0, int64_t h1) {
            for (int64_t bh = h0; bh < h1; ++bh) {
                const int64_t b = bh / H, h = bh % H;
                for (int64_t s = 0; s < S; ++s)
                    for (int64_t d = 0; d < D; ++d) {
                        kw[(bh * S + s) * D + d] = load_float(ks, offset4(kt, b, h, s, d));
                        vw[(bh * S + s) * D + d] = load_float(vs, offset4(vt, b, h, s, d));
                    }
            }
        });
        k = kw, v = vw;
        k_row = v_row = D;
        k_head[0] = v_head[0] = H * S * D;
        k_head[1] = v_head[1] = S * D;
    }
};

template <class T>
void forward_typed(const AttentionParams& p) {
    const int64_t B = p.q.shape[0], Hq = p.q.shape[1], Sq = p.q.shape[2], D = p.q.shape[3];
    const int64_t Hkv = p.k.shape[1], Skv = p.k.shape[2];
    const int64_t group = Hq / Hkv;
    const int64_t nqb = (Sq + kBlockQ - 1) / kBlockQ;
    if (B * Hq * Sq == 0) return;
    const KeyValueRows<T> kv(p.k, p.v);
    const T* q = static_cast<const T*>(p.q.data);
    T* out = static_cast<T*>(p.out.data);
    float* lse = static_cast<float*>(p.lse.data);

    for_each_task(B * Hq * nqb, [&](auto next) {
        const Scratch scratch(3 * D * kBlockQ + kBlockK * kBlockQ + 3 * kBlockQ);
        float* Qt = scratch.get();             // D x kBlockQ
        float* Ot = Qt + D * kBlockQ;          // D x kBlockQ
        float* rows_buf = Ot + D * kBlockQ;    // kBlockQ x D: the block's Q rows, then its output rows
        float* St = rows_buf + D * kBlockQ;    // kBlockK x kBlockQ
        float* row_max = St + kBlockK * kBlockQ;
        float* row_sum = row_max + kBlockQ;
        float* alpha = row_sum + kBlockQ;
        for (int64_t task = next(); task < B * Hq * nqb; task = next()) {
            // A head's query blocks from the last: causal blocks cost more
            // along the sequence, so the cheapest are left for the end.
            const int64_t b = task / (Hq * nqb), h = task / nqb % Hq, i0 = (nqb - 1 - task % nqb) * kBlockQ;
            const int64_t hk = h / group;
            const int rows = static_cast<int>(std::min<int64_t>(kBlockQ, Sq - i0));
            const int npad = static_cast<int>(tile::round_up(rows, W));
            const float* K = kv.k + b * kv.k_head[0] + hk * kv.k_head[1];
            const float* V = kv.v + b * kv.v_head[0] + hk * kv.v_head[1];
            const ScoreEpilogue epilogue(p.mask, p.causal, b, h);

            for (int64_t d = 0; d < D; ++d)
                for (int i = rows; i < npad; ++i) Qt[d * kBlockQ + i] = 0.0f;
            for (int i = 0; i < rows; ++i) load_row(p.q, q, b, h, i0 + i, D, rows_buf + i * D, D);
            transpose(rows_buf, D, rows, D, Qt, kBlockQ);
            for (int i = 0; i < npad; ++i) row_max[i] = kNegInf, row_sum[i] = 0.0f;

            const int64_t kv_end = p.causal ? std::min<int64_t>(Skv, i0 + rows) : Skv;
            for (int64_t j0 = 0; j0 < kv_end; j0 += kBlockK) {
                const int cols = static_cast<int>(std::min<int64_t>(kBlockK, kv_end - j0));
                tile::gemm(cols, npad, D, K + j0 * kv.k_row, kv.k_row, 1, Qt, kBlockQ, St, kBlockQ, false, p.scale,
                           tile::kLongChunk);
                epilogue.apply(St, kBlockQ, j0, cols, i0, rows, npad);
                for (int c = 0; c < npad; c += W) {
                    const VecF32 old_max = VecF32::load(row_max + c);
                    // Four independent chains of vmaxps (latency 4): one chain
                    // down 64 keys took 12% of this function's samples.
                    VecF32 maxes[4] = {old_max, old_max, old_max, old_max};
                    const int whole = cols / 4 * 4;
                    for (int j = 0; j < whole; j += 4)
                        for (int u = 0; u < 4; ++u) maxes[u] = simd::max(maxes[u], VecF32::load(St + (j + u) * kBlockQ + c));
                    for (int j = whole; j < cols; ++j) maxes[0] = simd::max(maxes[0], VecF32::load(St + j * kBlockQ + c));
                    const VecF32 new_max = simd::max(simd::max(maxes[0], maxes[1]), simd::max(maxes[2], maxes[3]));
                    // A column with no unmasked key yet keeps max -inf; it
                    // subtracts 0 instead, so exp(-inf - 0) = 0, not NaN.
                    const VecF32 neg_inf = VecF32::broadcast(kNegInf);
                    const VecF32 shift = simd::select(simd::cmp_le(new_max, neg_inf), VecF32::zero(), new_max);
                    const VecF32 a = simd::softmax_exp(old_max - shift);
                    // Four interleaved partial sums: the row sum scales every
                    // output of the row, so its rounding error matters more
                    // than any single product's.
                    // Unrolled by four so that each partial sum is a register
                    // (sum[j & 3] with a variable j lived on the stack, each
                    // add a store-to-load round trip).
                    VecF32 sum[4] = {VecF32::zero(), VecF32::zero(), VecF32::zero(), VecF32::zero()};
                    auto exp_into = [&](int j, VecF32& partial) {
                        const VecF32 e = simd::softmax_exp(VecF32::load(St + j * kBlockQ + c) - shift);
                        e.store(St + j * kBlockQ + c);
                        partial = partial + e;
                    };
                    for (int j = 0; j < whole; j += 4)
                        for (int u = 0; u < 4; ++u) exp_into(j + u, sum[u]);
                    for (int j = whole; j < cols; ++j) exp_into(j, sum[j & 3]);
                    const VecF32 block_sum = (sum[0] + sum[1]) + (sum[2] + sum[3]);
                    simd::fmadd(VecF32::load(row_sum + c), a, block_sum).store(row_sum + c);
                    new_max.store(row_max + c);
                    a.store(alpha + c);
                }
                if (j0 > 0)
                    for (int64_t d = 0; d < D; ++d)
                        for (int c = 0; c < npad; c += W)
                            (VecF32::load(Ot + d * kBlockQ + c) * VecF32::load(alpha + c)).store(Ot + d * kBlockQ + c);
                tile::gemm(D, npad, cols, V + j0 * kv.v_row, 1, kv.v_row, St, kBlockQ, Ot, kBlockQ, j0 > 0, 1.0f,
                           tile::kLongChunk);
            }

            if (kv_end > 0) transpose(Ot, kBlockQ, D, rows, rows_buf, D);
            else std::fill_n(rows_buf, rows * D, 0.0f);
            for (int i = 0; i < rows; ++i) {
                const float l = row_sum[i];
                const float inv = l > 0.0f ? 1.0f / l : 0.0f;
                lse[b * p.lse.strides[0] + h * p.lse.strides[1] + (i0 + i) * p.lse.strides[2]] =
                    l > 0.0f ? row_max[i] + std::log(l) : kInf;
                store_row(rows_buf + i * D, inv, D, p.out, out, b, h, i0 + i);
                if (p.out_float.data)
                    store_row(rows_buf + i * D, inv, D, p.out_float, static_cast<float*>(p.out_float.data), b, h,
                              i0 + i);
            }
        }
    });
}

}  // namespace

void attention_forward_kernel(const AttentionParams& p) {
    if (p.q.dtype == DType::bf16) forward_typed<bf16>(p);
    else forward_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::attention

namespace fastnn::FASTNN_ISA_NAMESPACE {

const AttentionKernels attention_kernels = {attention::attention_forward_kernel,
                                            attention::attention_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
