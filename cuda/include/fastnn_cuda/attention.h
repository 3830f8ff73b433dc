// Fused scaled-dot-product attention on CUDA, forward and backward, flash
// style: the S_q x S_kv score matrix never reaches device memory. The forward
// pass keeps a running max and sum per query row (online softmax) and saves
// the output and the log-sum-exp; the backward pass recomputes the scores
// tile by tile from q, k and the saved log-sum-exp.
//
// Layout. Every q/k/v-shaped tensor is addressed as
//   ptr + b * batch_stride + h * head_stride + row * row_stride + d
// (strides in elements, the head dim contiguous), so (B, S, H, D) and
// (B, H, S, D) tensors are both read in place. With cu_seqlens_q/k (varlen)
// the batch is packed: batch b owns rows [cu_seqlens[b], cu_seqlens[b+1]) of
// a (total, H, D) tensor and batch_stride is ignored; max_seqlen_q/k bound the
// per-batch lengths and size the grid.
//
// Semantics. Query i of a batch attends to key j when j < S_kv, and, with
// causal, j <= i + S_kv - S_q (aligned to the bottom-right corner, as torch's
// flash backend and causal_lower_right), and, with a key-padding mask,
// key_padding_mask[b, j] != 0. Query head h reads kv head h / (H_q / H_kv).
// A query row with no key it may attend to gets a zero output, lse = -inf and
// zero gradients. lse is float32, natural log, of the scaled scores.
//
// Launchers enqueue on the caller's stream and never synchronize. They return
// cudaErrorInvalidValue for parameters outside the contract (the binding has
// already refused those with a message) and cudaErrorInvalidConfiguration
// when the device lacks the shared memory a head dim needs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace fastnn::cuda {

enum class AttentionDType : uint8_t { f16, bf16 };

// One operand's strides in elements; the head dim is contiguous.
struct AttentionStrides {
    int64_t batch = 0, head = 0, row = 0;
};

struct AttentionParams {
    // q, o, do_, dq: (B, S_q, H_q, D) logically; k, v, dk, dv: (B, S_kv, H_kv, D).
    const void* q = nullptr;
    const void* k = nullptr;
    const void* v = nullptr;
    void* o = nullptr;        // forward output; read by backward
    float* lse = nullptr;     // forward output; read by backward
    const void* do_ = nullptr;  // backward: gradient of o
    void* dq = nullptr;       // backward outputs
    void* dk = nullptr;
    void* dv = nullptr;
    AttentionStrides q_strides, k_strides, v_strides, o_strides, do_strides, dq_strides, dk_strides, dv_strides;
    // lse element (b, h, row) is lse[b * lse_batch_stride + h * lse_head_stride
    // + cu_seqlens_q[b] (varlen only) + row]; (B, H_q, S_q) or, varlen, (H_q, total_q).
    int64_t lse_batch_stride = 0, lse_head_stride = 0;

    int batch = 0, heads_q = 0, heads_kv = 0;
    int seqlen_q = 0, seqlen_kv = 0;  // per batch; with varlen, the maxima
    int head_dim = 0;                 // 1..256
    float scale = 0.0f;               // usually 1/sqrt(head_dim)
    bool causal = false;
    AttentionDType dtype = AttentionDType::bf16;

    // Optional (B, S_kv) key-padding mask, nonzero = attend; bytes, any batch stride.
    const uint8_t* key_padding_mask = nullptr;
    int64_t key_padding_mask_batch_stride = 0;

    // Optional varlen batch: both or neither, int32, B + 1 entries each, on the device.
    const int32_t* cu_seqlens_q = nullptr;
    const int32_t* cu_seqlens_kv = nullptr;
    int total_q = 0;  // rows of the packed q (cu_seqlens_q[B]); needed for the workspace layout

    // Backward: deterministic gives bit-identical gradients run to run (dQ
    // from a separate pass over the kv blocks instead of float32 atomics).
    bool deterministic = false;
    // Backward scratch of attention_backward_workspace_size() bytes, 256-byte aligned.
    void* workspace = nullptr;
};

// Bytes of device scratch attention_backward needs for p (0 for the forward).
size_t attention_backward_workspace_size(const AttentionParams& p);

cudaError_t attention_forward(const AttentionParams& p, cudaStream_t stream);
cudaError_t attention_backward(const AttentionParams& p, cudaStream_t stream);

}  // namespace fastnn::cuda
