// The attention launchers of the contract in fastnn_cuda/attention.h: a last
// check of what the kernels rely on (the binding has already refused bad input
// with messages), then the kernels for the device. Every GPU from sm_80 on runs
// the mma.sync kernels; sm_90a-specific kernels are not written yet.
#include "attention_common.cuh"

namespace fastnn::cuda {
namespace {

bool valid(const AttentionParams& p) {
    const bool varlen = p.cu_seqlens_q || p.cu_seqlens_kv;
    return p.batch >= 0 && p.heads_q >= 0 && p.heads_kv > 0 && p.heads_q % p.heads_kv == 0 &&
           p.seqlen_q >= 0 && p.seqlen_kv >= 0 && p.head_dim >= 1 && p.head_dim <= 256 && p.scale > 0.0f &&
           p.batch <= 65535 && p.heads_q <= 65535 && (!varlen || (p.cu_seqlens_q && p.cu_seqlens_kv));
}

bool empty(const AttentionParams& p) { return p.batch == 0 || p.heads_q == 0; }

}  // namespace

size_t attention_backward_workspace_size(const AttentionParams& p) {
    return valid(p) ? attn::bwd_workspace(p).bytes : 0;
}

cudaError_t attention_forward(const AttentionParams& p, cudaStream_t stream) {
    if (!valid(p)) return cudaErrorInvalidValue;
    if (empty(p) || p.seqlen_q == 0) return cudaSuccess;
    return attn::attention_forward_sm80(p, stream);
}

cudaError_t attention_backward(const AttentionParams& p, cudaStream_t stream) {
    if (!valid(p)) return cudaErrorInvalidValue;
    if (empty(p)) return cudaSuccess;
    const attn::BwdWorkspace w = attn::bwd_workspace(p);
    if (!w.dsum) return cudaErrorInvalidValue;
    return attn::attention_backward_sm80(p, w, stream);
}

}  // namespace fastnn::cuda
