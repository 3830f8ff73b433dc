"""MultiheadAttention: torch.nn's class with the need_weights=False path on
fastnn's kernels (in-projection and out-projection GEMMs, fused attention).

Each head's queries, keys and values are strided views of the projection
outputs, which the attention kernel reads in place ("bshd" layout); the
attention output comes back as (N, L, H, D) rows, the out-projection's
input. What the fused kernel cannot do is refused, never approximated:
- need_weights=True (the default of torch's forward): ValueError at forward;
  the kernel never forms the attention weights. Call with
  need_weights=False, as torch.nn.Transformer's layers do.
- dropout > 0: the kernel has no attention dropout. Training forward raises;
  eval works. convert() leaves such layers as torch so a model keeps
  training.
- add_bias_kv, add_zero_attn: refused at construction (and by convert).
- a float attn_mask that requires grad (a learned bias): the attention op
  raises; the kernel does not differentiate the mask.
A query whose every key is masked attends to nothing (zeros before the
out-projection), as in torch. Outputs for batch_first=False are (L, N, E)
views of batch-major memory (torch's batch_first outputs are such views too).
"""

from __future__ import annotations

import functools
import operator

import torch

from .. import ops
from . import functional as F
from ._twin import Twin


def _additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


def _merged_mask(attn_mask, key_padding_mask, is_causal, n, h, l, s, dtype):
    """(fastnn mask broadcastable to (N, H, L, S), is_causal) from torch's
    MultiheadAttention arguments: boolean masks are True where attention is
    NOT allowed, float masks are added. is_causal is torch's hint that
    attn_mask is the causal mask; without a key padding mask the kernel's own
    causal masking replaces it, as in torch."""
    if is_causal and attn_mask is None:
        raise ValueError("is_causal=True needs attn_mask (torch's MultiheadAttention reads is_causal as a hint "
                         "that attn_mask is causal)")
    if is_causal and key_padding_mask is None:
        return None, True
    parts = []
    if attn_mask is not None:
        if tuple(attn_mask.shape) == (l, s):
            parts.append(attn_mask)
        elif tuple(attn_mask.shape) == (n * h, l, s):
            parts.append(attn_mask.view(n, h, l, s))
        else:
            raise ValueError(f"attn_mask must be (L, S) = {(l, s)} or (N * num_heads, L, S) = {(n * h, l, s)}, "
                             f"got {tuple(attn_mask.shape)}")
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (n, s):
            raise ValueError(f"key_padding_mask must be (N, S) = {(n, s)} (or (S,) unbatched), got "
                             f"{tuple(key_padding_mask.shape)}")
        parts.append(key_padding_mask.view(n, 1, 1, s))
    for name, p in zip(("attn_mask", "key_padding_mask"), parts):
        if p.dtype != torch.bool and not p.is_floating_point():
            raise TypeError(f"{name} must be bool or floating point, got {p.dtype}")
    if not parts:
        return None, False
    if all(p.dtype == torch.bool for p in parts):
        return ~functools.reduce(operator.or_, parts), False
    return functools.reduce(operator.add, (_additive(p, dtype) for p in parts)), False


class MultiheadAttention(Twin, torch.nn.MultiheadAttention):
    @staticmethod
    def config_reason(module) -> str | None:
        if module.bias_k is not None:
            return "add_bias_kv=True: fastnn's fused attention takes no extra key/value bias rows"
        if module.add_zero_attn:
            return "add_zero_attn=True: fastnn's fused attention takes no extra zero key/value rows"
        return None

    @classmethod
    def unsupported_reason(cls, module) -> str | None:
        reason = super().unsupported_reason(module)
        if reason is None and module.dropout > 0:
            return f"dropout={module.dropout}: fastnn's fused attention has no dropout, so the layer could not train"
        return reason

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        """torch.nn.MultiheadAttention.forward with need_weights=False: returns
        (attn_output, None)."""
        if need_weights:
            raise ValueError("need_weights=True: fastnn's fused attention never forms the attention weights; call "
                             "with need_weights=False (same output, weights None)")
        if self.training and self.dropout > 0:
            raise ValueError(f"dropout={self.dropout} in training: fastnn's fused attention has no dropout "
                             "(construct with dropout=0.0, or call eval())")
        if query.dim() not in (2, 3):
            raise ValueError(f"query must be (L, N, E), (N, L, E) with batch_first, or unbatched (L, E); got shape "
                             f"{tuple(query.shape)}")
        batched = query.dim() == 3
        for name, t, width in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if t.dim() != query.dim() or t.shape[-1] != width:
                raise ValueError(f"{name} must have query's {query.dim()} dims and {width} features, got shape "
                                 f"{tuple(t.shape)}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"key and value must agree in all but the feature dim, got {tuple(key.shape)} and "
                             f"{tuple(value.shape)}")
        seq_first = batched and not self.batch_first
        if batched and query.shape[1 if seq_first else 0] != key.shape[1 if seq_first else 0]:
            raise ValueError(f"query and key must have the same batch size, got shapes {tuple(query.shape)} and "
                             f"{tuple(key.shape)}")
        if not batched:
            self_attention = query is key and key is value
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if self_attention:
                key = value = query
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)

        q, k, v = self._project_in(query, key, value, seq_first)
        n, l, h, d = q.shape
        mask, causal = _merged_mask(attn_mask, key_padding_mask, is_causal, n, h, l, k.shape[1], q.dtype)
        attn = ops.scaled_dot_product_attention(q, k, v, mask, is_causal=causal, layout="bshd")
        out = F.linear(attn.flatten(-2), self.out_proj.weight, self.out_proj.bias)
        if seq_first:
            out = out.transpose(0, 1)
        return (out if batched else out[0]), None

    def _project_in(self, query, key, value, seq_first):
        """q (N, L, H, D), k and v (N, S, H, D): views of the projections,
        computed in the inputs' own layout (no transposed copies)."""
        heads = (self.num_heads, self.head_dim)

        def per_head(t):
            return t.transpose(0, 1) if seq_first else t

        if self._qkv_same_embed_dim and query is key and key is value:
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias).unflatten(-1, (3, *heads))
            return tuple(per_head(t) for t in qkv.unbind(-3))
        if self._qkv_same_embed_dim:
            weights = self.in_proj_weight.chunk(3)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        return tuple(per_head(F.linear(x, w, b).unflatten(-1, heads))
                     for x, w, b in zip((query, key, value), weights, biases))
