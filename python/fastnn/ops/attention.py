"""Fused scaled-dot-product attention (flash style): launcher, then for
torch tensors the custom operators fastnn::scaled_dot_product_attention
(which also returns each query row's float32 log-sum-exp and, for bfloat16,
the float32 output before its rounding) and its backward, whose autograd
formula is fastnn's own kernel. Matches
torch.nn.functional.scaled_dot_product_attention (top-left causal alignment,
boolean masks True = attend, float masks added to the scaled scores), except
that dropout is not supported."""

from __future__ import annotations

import math

import numpy as np

from .. import _backend as B
from . import _torch_ops as T

_LAYOUTS = ("bhsd", "bshd")


def _to_bhsd(x, layout):
    return x if layout == "bhsd" else x.swapaxes(1, 2)


def _prepare(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, layout):
    """Validates what the kernel cannot see (layout, dropout, GQA opt-in,
    mask broadcasting) and returns the mask broadcast to (B, Hq, Sq, Skv)
    (a view) and the scale."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'bhsd' or 'bshd', got {layout!r}")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (fastnn's attention has no dropout), got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise ValueError("attn_mask must be None when is_causal=True (as in torch)")
    shape_name = "(B, H, S, D)" if layout == "bhsd" else "(B, S, H, D)"
    for name, x in (("q", q), ("k", k), ("v", v)):
        B.device_of(x, name)
        if len(x.shape) != 4:
            raise ValueError(f"{name} must have 4 dimensions {shape_name}, got {tuple(x.shape)}")
    qv, kv, vv = (_to_bhsd(x, layout) for x in (q, k, v))
    if qv.shape[1] != kv.shape[1] and not enable_gqa:
        raise ValueError(f"k has {kv.shape[1]} heads and q has {qv.shape[1]}; pass enable_gqa=True for "
                         "grouped-query attention")
    if scale is None:
        scale = 1.0 / math.sqrt(qv.shape[3]) if qv.shape[3] else 1.0
    mask = None
    if attn_mask is not None:
        target = (qv.shape[0], qv.shape[1], qv.shape[2], kv.shape[2])
        try:
            mask = attn_mask.expand(target) if B.is_torch(attn_mask) else np.broadcast_to(attn_mask, target)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
                             f"(B, Hq, Sq, Skv) = {target}") from exc
    return mask, float(scale)


def _outputs(q, layout, keep_float=False):
    """out in q's shape (and layout), lse float32 (B, H, Sq), and with
    keep_float (bfloat16 under autograd) out_float, float32 in q's shape:
    the output before its rounding, from which the backward takes delta =
    dO . O (with the rounded output, rows dominated by one key got dq and dk
    errors of half an ulp of out times |K| or |Q|); else None."""
    b, h, sq, _ = _to_bhsd(q, layout).shape
    out_float = B.empty(q, tuple(q.shape), "float32", name="q") if keep_float else None
    return B.empty(q, tuple(q.shape), name="q"), B.empty(q, (b, h, sq), "float32", name="q"), out_float


def _attention(q, k, v, mask, scale, is_causal, layout, keep_float=False):
    out, lse, out_float = _outputs(q, layout, keep_float)
    qv, kv, vv, ov = (_to_bhsd(x, layout) for x in (q, k, v, out))
    fv = None if out_float is None else _to_bhsd(out_float, layout)
    B.launch("attention_forward", q, qv, kv, vv, mask, ov, lse, fv, scale, is_causal, name="q")
    return out, lse, out_float


def _grads(q, k, v):
    return tuple(B.empty(q, tuple(x.shape), name="q") for x in (q, k, v))


def _attention_backward(grad_out, q, k, v, out, lse, mask, out_float, scale, is_causal, layout):
    dq, dk, dv = _grads(q, k, v)
    fv = None if out_float is None else _to_bhsd(out_float, layout)
    B.launch("attention_backward", q, *(_to_bhsd(x, layout) for x in (q, k, v, out, grad_out)), lse, mask, fv,
             *(_to_bhsd(x, layout) for x in (dq, dk, dv)), scale, is_causal, name="q")
    return dq, dk, dv


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, layout="bhsd"):
    """softmax(q k^T * scale + mask) v, per head, without forming the score matrix.

    q: (B, Hq, Sq, D), k and v: (B, Hkv, Skv, D) for layout="bhsd", or
    (B, S, H, D) each for layout="bshd"; any strides, no copies. float32 or
    bfloat16 (float32 accumulation). Hkv must divide Hq (enable_gqa=True when
    they differ). attn_mask broadcasts to (B, Hq, Sq, Skv): bool (True =
    attend) or q's dtype (added). is_causal keeps key j for query i when
    j <= i (top-left, as torch). Rows with every key masked give zeros and
    zero gradients, as torch. Returns q's shape, layout and dtype. For torch
    tensors that require grad (or under torch.compile) this is the custom
    operator fastnn::scaled_dot_product_attention, whose backward is fastnn's.
    """
    mask, scale = _prepare(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, layout)
    if B.needs_torch_op(q, k, v):
        if B.is_torch(mask) and mask.requires_grad:
            raise ValueError("attn_mask requires grad; fastnn's attention does not differentiate the mask")
        return T.torch_op("scaled_dot_product_attention")(q, k, v, mask, scale, bool(is_causal), layout)[0]
    return _attention(q, k, v, mask, scale, is_causal, layout)[0]


def register_torch_ops(torch):
    # A custom operator returns the same number of tensors every time:
    # out_float is a zero-element placeholder for float32 attention
    # (B.absent_as_empty), and the backward gets None for it again.
    def keeps_float(q):
        return q.dtype == torch.bfloat16

    @T.custom_op("scaled_dot_product_attention",
                 schema="(Tensor q, Tensor k, Tensor v, Tensor? attn_mask, float scale, bool is_causal, "
                        "str layout) -> (Tensor out, Tensor lse, Tensor out_float)")
    def attention_op(q, k, v, attn_mask, scale, is_causal, layout):
        out, lse, out_float = _attention(q, k, v, attn_mask, scale, is_causal, layout, keep_float=keeps_float(q))
        return (out, lse, *B.absent_as_empty((out_float,), lse))

    @attention_op.register_fake
    def _(q, k, v, attn_mask, scale, is_causal, layout):
        out, lse, out_float = _outputs(q, layout, keeps_float(q))
        return (out, lse, *B.absent_as_empty((out_float,), lse))

    @T.custom_op("scaled_dot_product_attention_backward",
                 schema="(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
                        "Tensor? attn_mask, Tensor? out_float, float scale, bool is_causal, "
                        "str layout) -> (Tensor dq, Tensor dk, Tensor dv)")
    def attention_backward_op(grad_out, q, k, v, out, lse, attn_mask, out_float, scale, is_causal, layout):
        return _attention_backward(grad_out, q, k, v, out, lse, attn_mask, out_float, scale, is_causal, layout)

    @attention_backward_op.register_fake
    def _(grad_out, q, k, v, out, lse, attn_mask, out_float, scale, is_causal, layout):
        return _grads(q, k, v)

    def setup_context(ctx, inputs, output):
        q, k, v, mask, ctx.scale, ctx.is_causal, ctx.layout = inputs
        out, lse, out_float = output
        ctx.save_for_backward(q, k, v, mask, out, lse, out_float)
        ctx.mark_non_differentiable(lse, out_float)
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_out, _grad_lse, _grad_out_float):
        q, k, v, mask, out, lse, out_float = ctx.saved_tensors
        grads = attention_backward_op(grad_out, q, k, v, out, lse, mask, out_float if keeps_float(q) else None,
                                      ctx.scale, ctx.is_causal, ctx.layout)
        return (*B.absent_as_none(grads, ctx.needs_input_grad[:3]), None, None, None, None)

    attention_op.register_autograd(backward, setup_context=setup_context)
