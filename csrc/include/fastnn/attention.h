// Fused scaled-dot-product attention, forward and backward, flash style: the
// Sq x Skv score matrix is never materialized; the forward pass keeps a
// running max and sum per query row (online softmax) and saves only the
// output and the log-sum-exp; the backward pass recomputes scores tile by tile.
//
// Contract for every path. All views are in logical (B, H, S, D) order with
// any strides (a (B, S, H, D) tensor is passed as its transposed view):
//   q, out, grad_out, dq: (B, Hq, Sq, D); k, v, dk, dv: (B, Hkv, Skv, D);
//   Hkv divides Hq (query head h reads kv head h / (Hq / Hkv));
//   lse: (B, Hq, Sq) float32.
// q/k/v/out/grad_out/dq/dk/dv share one dtype, float32 or bfloat16; all
// arithmetic is float32. mask, when mask.data != nullptr, is a (B, Hq, Sq, Skv)
// view (broadcast dimensions have stride 0) of bool (false = masked out) or of
// q's dtype (added to the scaled scores). causal keeps key j for query i when
// j <= i (top-left aligned, as torch's is_causal). Query rows whose keys are
// all masked produce zeros and zero gradients (as PyTorch); their lse is +inf.
// out_float (optional, bfloat16 attention only): a float32 view of out's
// shape; the forward also writes the output there before its rounding to
// bfloat16, and the backward takes delta = dO . O from it instead of from
// out. With O rounded to bfloat16, dP - delta on a row dominated by one key
// is off by up to half an ulp of O times |dO|, and dq and dk inherit that
// times |K| and |Q|.
#pragma once

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

struct AttentionParams {
    TensorView q, k, v;
    TensorView mask;  // optional
    TensorView out;           // written
    TensorView lse;           // written
    TensorView out_float;     // optional, written
    float scale;
    bool causal;
};

struct AttentionBackwardParams {
    TensorView q, k, v, out, grad_out, lse;
    TensorView mask;          // optional
    TensorView out_float;     // optional
    TensorView dq, dk, dv;  // written
    float scale;
    bool causal;
};

void attention_forward(const AttentionParams& p);
void attention_backward(const AttentionBackwardParams& p);

struct AttentionKernels {
    void (*forward)(const AttentionParams&);
    void (*backward)(const AttentionBackwardParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(AttentionKernels, attention_kernels)

}  // namespace fastnn
