"""Fused scaled-dot-product attention (flash style, CPU): launcher plus, for
torch tensors that require grad, an autograd function whose backward is
fastnn's own kernel. Matches torch.nn.functional.scaled_dot_product_attention
(top-left causal alignment, boolean masks True = attend, float masks added to
the scaled scores), except that dropout is not supported."""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _backend as B

_LAYOUTS = ("bhsd", "bshd")


def _empty(like, shape, dtype=None):
    if B.is_torch(like):
        torch = B.torch_module()
        return torch.empty(shape, dtype=like.dtype if dtype is None else getattr(torch, dtype), device=like.device)
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=like.dtype if dtype is None else dtype)
    raise TypeError(f"q must be a torch.Tensor or numpy.ndarray, got {type(like).__name__}")


def _to_bhsd(x, layout):
    return x if layout == "bhsd" else x.swapaxes(1, 2)


def _prepare(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, layout):
    """Validates what the kernel cannot see (layout, dropout, GQA opt-in,
    mask broadcasting) and returns (B, H, S, D) views plus the scale."""
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
    return qv, kv, vv, mask, float(scale)


def _forward(qv, kv, vv, mask, scale, is_causal, q, layout):
    out = _empty(q, q.shape)
    lse = _empty(q, (qv.shape[0], qv.shape[1], qv.shape[2]), "float32")
    args = [B.for_kernel(a) for a in (qv, kv, vv)]
    B._C.attention_forward(*args, None if mask is None else B.for_kernel(mask), _to_bhsd(out, layout), lse,
                           scale, is_causal)
    return out, lse


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, layout="bhsd"):
    """softmax(q k^T * scale + mask) v, per head, without forming the score matrix.

    q: (B, Hq, Sq, D), k and v: (B, Hkv, Skv, D) for layout="bhsd", or
    (B, S, H, D) each for layout="bshd"; any strides, no copies. float32 or
    bfloat16 (float32 accumulation). Hkv must divide Hq (enable_gqa=True when
    they differ). attn_mask broadcasts to (B, Hq, Sq, Skv): bool (True =
    attend) or q's dtype (added). is_causal keeps key j for query i when
    j <= i (top-left, as torch). Rows with every key masked give zeros and
    zero gradients, as torch. Returns q's shape, layout and dtype.
    """
    qv, kv, vv, mask, scale = _prepare(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, layout)
    if B.is_torch(q) and B.torch_module().is_grad_enabled() and any(
            B.is_torch(x) and x.requires_grad for x in (q, k, v)):
        if mask is not None and B.is_torch(mask) and mask.requires_grad:
            raise ValueError("attn_mask requires grad; fastnn's attention does not differentiate the mask")
        return _attention_autograd().apply(q, k, v, mask, scale, is_causal, layout)
    return _forward(qv, kv, vv, mask, scale, is_causal, q, layout)[0]


@functools.cache
def _attention_autograd():
    torch = B.torch_module()

    class AttentionFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, mask, scale, is_causal, layout):
            qv, kv, vv = (_to_bhsd(x.detach(), layout) for x in (q, k, v))
            out, lse = _forward(qv, kv, vv, mask, scale, is_causal, q, layout)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.mask, ctx.scale, ctx.is_causal, ctx.layout = mask, scale, is_causal, layout
            return out

        @staticmethod
        def backward(ctx, grad_out):
            q, k, v, out, lse = ctx.saved_tensors
            qv, kv, vv = (_to_bhsd(x.detach(), ctx.layout) for x in (q, k, v))
            dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
            B._C.attention_backward(qv, kv, vv, _to_bhsd(out, ctx.layout), _to_bhsd(grad_out, ctx.layout), lse,
                                    ctx.mask, *(_to_bhsd(x, ctx.layout) for x in (dq, dk, dv)), ctx.scale,
                                    ctx.is_causal)
            return dq, dk, dv, None, None, None, None

    return AttentionFunction
