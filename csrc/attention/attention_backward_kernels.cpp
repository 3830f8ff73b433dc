// Attention backward, compiled once per ISA. Floor: 10 Sq Skv D FLOPs (five
// products: the recomputed scores, dP, dV, dK, dQ; causal: about half).
//
// A prepass converts, per head, Q and dO into float rows (Sq x Dp, D padded
// to the vector width with zeros) and transposed (D x Sq), K and V into rows,
// and computes delta_i = sum_d dO_id O_id (for bfloat16, O from the
// forward's float copy when given). Then one task = one (batch, kv head,
// split), walking its key blocks; for each key block and every query block
// of every query head in the group (GQA: all of them feed one dK, dV):
//   St  = K_blk Qt,  Pt = exp(scale St + mask - lse)   (keys x queries)
//   dPt = V_blk dOt, dSt = Pt (dPt - delta)
//   dV_blk += Pt dO,  dK_blk += dSt Q,  dQ_split += dSt^T K_blk
// dK and dV are private to the task. dQ is summed per split in its own
// float buffer and the splits are added in a fixed order at the end, so the
// result is deterministic for a given thread count. Splits exist only when
// there are fewer (batch, kv head) pairs than threads.
#include "attention_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::attention {
namespace {

// Rows of Q, dO and O transposed together (one register block).
constexpr int64_t kTransposeRows = 16;

// delta_i = sum_d dO_id O_id for the columns of Ot and dOt (D rows of ld),
// summed in exactly the order tile::gemm sums dP_ij = sum_d dO_id V_jd, so
// that dP - delta in float carries the same chunking on both sides. (Where
// the output row equals a value row, a single unmasked key, P is 1 and the
// float64 pair below gives dP - delta = 0 exactly.)
void row_dots(const float* Ot, const float* dOt, int64_t D, int64_t ld, int64_t n, float* delta) {
    for (int64_t c = 0; c < n; c += W) {
        VecF32 total = VecF32::zero();
        for (int64_t d0 = 0; d0 < D; d0 += tile::kChunk) {
            VecF32 acc = VecF32::zero();
            for (int64_t d = d0; d < std::min(D, d0 + tile::kChunk); ++d)
                acc = tile::fused_madd(VecF32::load(Ot + d * ld + c), VecF32::load(dOt + d * ld + c), acc);
            total = d0 == 0 ? acc : acc + total;
        }
        total.store(delta + c);
    }
}

// sum_d a_d b_d with exact products and float64 sums.
double dot_f64(const float* a, const float* b, int64_t n) {
    double s[4] = {};
    int64_t d = 0;
    for (; d + 4 <= n; d += 4)
        for (int t = 0; t < 4; ++t) s[t] += double(a[d + t]) * double(b[d + t]);
    for (; d < n; ++d) s[0] += double(a[d]) * double(b[d]);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

// Probabilities above this take dP - delta from float64 dot products. dS =
// P (dP - delta) cancels, so dS keeps dP's rounding error times P: summed in
// float chunks, dP was up to ~2 ulp of its partial sums off, and on rows
// with a few keys (causal rows near the start, peaked masks) the dq and dk
// errors then exceeded twice PyTorch's on about 1 draw in 300 of a 17 x 23
// problem. A row has fewer than 16 such keys, so the exact dots cost at most
// 16 D multiply-adds per query row per head.
constexpr float kExactDpWeight = 1.0f / 16;

// dP_ji - delta_i for the query lanes of `prob` above kExactDpWeight,
// `diff` (the float values) elsewhere. v: value row j; dO: the query rows of
// the lanes, ld floats apart.
VecF32 exact_heavy_lanes(VecF32 diff, const float* prob, const float* v, const float* dO, int64_t ld,
                         const double* delta_exact, int64_t D) {
    float lanes[W];
    diff.store(lanes);
    for (int l = 0; l < W; ++l)
        if (prob[l] > kExactDpWeight)
            lanes[l] = static_cast<float>(dot_f64(v, dO + l * ld, D) - delta_exact[l]);
    return VecF32::load(lanes);
}

template <class T>
void backward_typed(const AttentionBackwardParams& p) {
    const int64_t B = p.q.shape[0], Hq = p.q.shape[1], Sq = p.q.shape[2], D = p.q.shape[3];
    const int64_t Hkv = p.k.shape[1], Skv = p.k.shape[2];
    const int64_t group = Hq / Hkv;
    const int64_t Dp = tile::round_up(D, W), SqP = tile::round_up(Sq, W);
    const int64_t nkb = (Skv + kBlockK - 1) / kBlockK;
    const int64_t units = B * Hkv;
    const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(nkb, (num_threads() + units - 1) / units));
    if (B * Hkv * Skv == 0 && B * Hq * Sq == 0) return;

    // Per query head: Q rows, dO rows, Qt, dOt, delta, lse (padded with +inf),
    // delta in float64 (2 floats each; every offset here is even, so the
    // doubles are aligned).
    const int64_t q_head = 2 * Sq * Dp + 2 * D * SqP + 4 * SqP;
    const int64_t kv_head = 2 * Skv * Dp;
    const int64_t dq_head = Sq * Dp;
    float* q_side = attention_workspace(B * Hq * q_head + B * Hkv * kv_head + splits * B * Hq * dq_head);
    float* kv_side = q_side + B * Hq * q_head;
    float* dq_part = kv_side + B * Hkv * kv_head;

    const T* q = static_cast<const T*>(p.q.data);
    const T* k = static_cast<const T*>(p.k.data);
    const T* v = static_cast<const T*>(p.v.data);
    const T* o = static_cast<const T*>(p.out.data);
    const T* go = static_cast<const T*>(p.grad_out.data);
    const float* o_float = static_cast<const float*>(p.out_float.data);
    const float* lse = static_cast<const float*>(p.lse.data);

    // One item per query head; the first head of each group also brings in
    // its key/value head, so the items weigh the same (with the K/V heads as
    // separate items, one thread took all the heavy ones and the other
    // waited).
    parallel_for(B * Hq, 1, [&](int64_t h0, int64_t h1) {
        const Scratch out_rows(kTransposeRows * Dp + D * SqP);
        float* Orows = out_rows.get();
        float* Ot = Orows + kTransposeRows * Dp;
        for (int64_t head = h0; head < h1; ++head) {
            const int64_t b = head / Hq, h = head % Hq;
            float* Qr = q_side + head * q_head;
            float* dOr = Qr + Sq * Dp;
            float* Qt = dOr + Sq * Dp;
            float* dOt = Qt + D * SqP;
            float* delta = dOt + D * SqP;
            float* lse_pad = delta + SqP;
            double* delta_exact = reinterpret_cast<double*>(lse_pad + SqP);
            std::fill(Qt, Qt + 2 * D * SqP, 0.0f);
            std::fill_n(Ot, D * SqP, 0.0f);
            for (int64_t i0 = 0; i0 < Sq; i0 += kTransposeRows) {
                const int rows = static_cast<int>(std::min<int64_t>(kTransposeRows, Sq - i0));
                for (int64_t i = i0; i < i0 + rows; ++i) {
                    load_row(p.q, q, b, h, i, D, Qr + i * Dp, Dp);
                    load_row(p.grad_out, go, b, h, i, D, dOr + i * Dp, Dp);
                    if (o_float) load_row(p.out_float, o_float, b, h, i, D, Orows + (i - i0) * Dp, Dp);
                    else load_row(p.out, o, b, h, i, D, Orows + (i - i0) * Dp, Dp);
                    lse_pad[i] = lse[b * p.lse.strides[0] + h * p.lse.strides[1] + i * p.lse.strides[2]];
                    delta_exact[i] = dot_f64(Orows + (i - i0) * Dp, dOr + i * Dp, D);
                }
                transpose(Qr + i0 * Dp, Dp, rows, D, Qt + i0, SqP);
                transpose(dOr + i0 * Dp, Dp, rows, D, dOt + i0, SqP);
                transpose(Orows, Dp, rows, D, Ot + i0, SqP);
            }
            row_dots(Ot, dOt, D, SqP, SqP, delta);
            for (int64_t i = Sq; i < SqP; ++i) lse_pad[i] = kInf;
            for (int64_t s = 0; s < splits; ++s) std::fill_n(dq_part + (s * B * Hq + head) * dq_head, dq_head, 0.0f);
            if (h % group == 0) {
                const int64_t kh = b * Hkv + h / group;
                float* Kr = kv_side + kh * kv_head;
                float* Vr = Kr + Skv * Dp;
                for (int64_t j = 0; j < Skv; ++j) {
                    load_row(p.k, k, b, h / group, j, D, Kr + j * Dp, Dp);
                    load_row(p.v, v, b, h / group, j, D, Vr + j * Dp, Dp);
                }
            }
        }
    });

    T* dk = static_cast<T*>(p.dk.data);
    T* dv = static_cast<T*>(p.dv.data);
    for_each_task(units * splits, [&](auto next) {
        const Scratch scratch(2 * kBlockK * kBlockQ + 2 * kBlockK * Dp);
        float* St = scratch.get();            // kBlockK x kBlockQ: scores, then probabilities
        float* dSt = St + kBlockK * kBlockQ;  // kBlockK x kBlockQ: dP, then dS
        float* dK = dSt + kBlockK * kBlockQ;  // kBlockK x Dp
        float* dV = dK + kBlockK * Dp;        // kBlockK x Dp
        for (int64_t task = next(); task < units * splits; task = next()) {
            const int64_t unit = task / splits, split = task % splits;
            const int64_t b = unit / Hkv, hk = unit % Hkv;
            const float* Kr = kv_side + unit * kv_head;
            const float* Vr = Kr + Skv * Dp;
            for (int64_t kb = split; kb < nkb; kb += splits) {
                const int64_t j0 = kb * kBlockK;
                const int cols = static_cast<int>(std::min<int64_t>(kBlockK, Skv - j0));
                std::fill_n(dK, 2 * kBlockK * Dp, 0.0f);
                for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
                    const int64_t head = b * Hq + h;
                    const float* Qr = q_side + head * q_head;
                    const float* dOr = Qr + Sq * Dp;
                    const float* Qt = dOr + Sq * Dp;
                    const float* dOt = Qt + D * SqP;
                    const float* delta = dOt + D * SqP;
                    const float* lse_pad = delta + SqP;
                    const double* delta_exact = reinterpret_cast<const double*>(lse_pad + SqP);
                    float* dQ = dq_part + (split * B * Hq + head) * dq_head;
                    const ScoreEpilogue epilogue(p.mask, p.causal, b, h);
                    // Causal: queries before j0 see none of this block.
                    for (int64_t i0 = p.causal ? j0 / kBlockQ * kBlockQ : 0; i0 < Sq; i0 += kBlockQ) {
                        const int rows = static_cast<int>(std::min<int64_t>(kBlockQ, Sq - i0));
                        const int npad = static_cast<int>(tile::round_up(rows, W));
                        tile::gemm(cols, npad, D, Kr + j0 * Dp, Dp, 1, Qt + i0, SqP, St, kBlockQ, false, p.scale,
                                   tile::kLongChunk);
                        epilogue.apply(St, kBlockQ, j0, cols, i0, rows, npad);
                        tile::gemm(cols, npad, D, Vr + j0 * Dp, Dp, 1, dOt + i0, SqP, dSt, kBlockQ, false);
                        const VecF32 heavy = VecF32::broadcast(kExactDpWeight);
                        for (int j = 0; j < cols; ++j)
                            for (int c = 0; c < npad; c += W) {
                                float* s = St + j * kBlockQ + c;
                                float* ds = dSt + j * kBlockQ + c;
                                const VecF32 prob = simd::softmax_exp(VecF32::load(s) - VecF32::load(lse_pad + i0 + c));
                                prob.store(s);
                                VecF32 diff = VecF32::load(ds) - VecF32::load(delta + i0 + c);
                                // Padded query lanes have probability 0.
                                if (simd::any(simd::cmp_lt(heavy, prob)))
                                    diff = exact_heavy_lanes(diff, s, Vr + (j0 + j) * Dp, dOr + (i0 + c) * Dp, Dp,
                                                             delta_exact + i0 + c, D);
                                (prob * diff).store(ds);
                            }
                        tile::gemm(cols, Dp, rows, St, kBlockQ, 1, dOr + i0 * Dp, Dp, dV, Dp, true);
                        tile::gemm(cols, Dp, rows, dSt, kBlockQ, 1, Qr + i0 * Dp, Dp, dK, Dp, true);
                        tile::gemm(rows, Dp, cols, dSt, 1, kBlockQ, Kr + j0 * Dp, Dp, dQ + i0 * Dp, Dp, true);
                    }
                }
                for (int j = 0; j < cols; ++j) {
                    store_row(dK + j * Dp, p.scale, D, p.dk, dk, b, hk, j0 + j);
                    store_row(dV + j * Dp, 1.0f, D, p.dv, dv, b, hk, j0 + j);
                }
            }
        }
    });

    T* dq = static_cast<T*>(p.dq.data);
    parallel_for(B * Hq, 1, [&](int64_t h0, int64_t h1) {
        for (int64_t head = h0; head < h1; ++head) {
            const int64_t b = head / Hq, h = head % Hq;
            float* first = dq_part + head * dq_head;
            for (int64_t i = 0; i < Sq; ++i) {
                float* row = first + i * Dp;
                for (int64_t s = 1; s < splits; ++s) {
                    const float* part = dq_part + (s * B * Hq + head) * dq_head + i * Dp;
                    for (int64_t d = 0; d < Dp; d += W) (VecF32::load(row + d) + VecF32::load(part + d)).store(row + d);
                }
                store_row(row, p.scale, D, p.dq, dq, b, h, i);
            }
        }
    });
}

}  // namespace

void attention_backward_kernel(const AttentionBackwardParams& p) {
    if (p.q.dtype == DType::bf16) backward_typed<bf16>(p);
    else backward_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::attention
