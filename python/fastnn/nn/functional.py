"""torch.nn.functional's signatures on fastnn's kernels.

Each function takes the arguments of its torch.nn.functional namesake, in
the same order, and computes with fastnn's op (python/fastnn/ops), which
carries the autograd formula. What the kernel cannot do (cross_entropy's
class weights, attention dropout, ...) raises ValueError naming the
argument; nothing falls back to torch. fastnn.nn's layers call these.

In-place variants (inplace=True) write into the input only when it does
not require grad and torch.compile is not tracing; otherwise the result is a
new tensor with the same values and the input is left as is.
"""

from __future__ import annotations

import math

import torch

from .. import ops
from ..ops import adaptive_avg_pool2d, avg_pool2d, conv2d, gelu, linear, max_pool2d

__all__ = [
    "linear", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "layer_norm", "rms_norm", "relu",
    "gelu", "silu", "dropout", "cross_entropy", "scaled_dot_product_attention",
]


def _writes_in_place(x: torch.Tensor) -> bool:
    # fastnn's out= writes are invisible to autograd, so a tensor that
    # requires grad (even under no_grad) is never an out= target.
    return not torch.compiler.is_compiling() and not x.requires_grad


def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """torch.nn.functional.relu on fastnn's kernel."""
    return ops.relu(input, out=input) if inplace and _writes_in_place(input) else ops.relu(input)


def silu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """torch.nn.functional.silu on fastnn's kernel."""
    return ops.silu(input, out=input) if inplace and _writes_in_place(input) else ops.silu(input)


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """torch.nn.functional.dropout on fastnn's Philox kernel. Each call draws
    its seed from torch's default generator, so torch.manual_seed makes runs
    reproducible (the masks differ from torch's own). Not training, or
    p == 0, returns input itself, as torch."""
    if inplace and training and _writes_in_place(input):
        return ops.dropout(input, p, training, out=input)
    return ops.dropout(input, p, training)


def _flatten_normalized(input, normalized_shape, params):
    """input (..., *normalized_shape) as (..., prod) and the parameters as
    (prod,): normalizing over the trailing dims is normalizing over their
    flattening, so fastnn's last-dim kernels compute any normalized_shape.
    Views whenever torch.reshape can make them."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or tuple(input.shape[input.dim() - len(shape):]) != shape:
        raise ValueError(f"normalized_shape {shape} must be the trailing dims of input, whose shape is "
                         f"{tuple(input.shape)}")
    if len(shape) == 1:
        return input, params
    for name, p in params.items():
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(f"{name} must have shape normalized_shape {shape}, got {tuple(p.shape)}")
    flat = input.reshape(*input.shape[:input.dim() - len(shape)], math.prod(shape))
    return flat, {name: None if p is None else p.reshape(-1) for name, p in params.items()}


def _unflatten(y: torch.Tensor, shape) -> torch.Tensor:
    """y in the input's shape, a view only where the shapes differ: a module
    that returns a view of its own output trips FSDP2's hooks (and in-place
    ops on such a view would bypass them)."""
    return y if y.shape == shape else y.view(shape)


def layer_norm(input: torch.Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """torch.nn.functional.layer_norm on fastnn's kernel, over any number of
    trailing dims."""
    flat, p = _flatten_normalized(input, normalized_shape, {"weight": weight, "bias": bias})
    return _unflatten(ops.layer_norm(flat, None, p["weight"], p["bias"], eps), input.shape)


def rms_norm(input: torch.Tensor, normalized_shape, weight=None, eps: float | None = None) -> torch.Tensor:
    """torch.nn.functional.rms_norm on fastnn's kernel. eps=None is, as in
    torch, the machine epsilon of the type the statistics are computed in:
    float32's, for bfloat16 input too (not bfloat16's 2^-7)."""
    flat, p = _flatten_normalized(input, normalized_shape, {"weight": weight})
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    return _unflatten(ops.rms_norm(flat, None, p["weight"], eps), input.shape)


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight=None, size_average=None,
                  ignore_index: int = -100, reduce=None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """torch.nn.functional.cross_entropy with class-index targets on fastnn's
    fused kernel: input (N, C), (C,) or (N, C, d1, ...) with target (N,), ()
    or (N, d1, ...) of int64. Spatial inputs are passed to the kernel as
    (N * d1 * ..., C) rows, which copies the logits once when N > 1 (the
    classes are not the innermost dim). Class weights and class-probability
    targets are not supported (ValueError)."""
    if weight is not None:
        raise ValueError("weight: fastnn's cross_entropy has no per-class weights")
    if target.is_floating_point():
        raise ValueError(f"target is {target.dtype}: fastnn's cross_entropy takes class indices (int64), not "
                         "class probabilities")
    if size_average is not None or reduce is not None:  # torch's deprecated spelling of reduction
        reduction = "none" if reduce is False else "sum" if size_average is False else "mean"
    if input.dim() == 2:
        return ops.cross_entropy(input, target, reduction, ignore_index, label_smoothing)
    if input.dim() == 1:
        if target.dim() != 0:
            raise ValueError(f"target must be a scalar for unbatched input (C,), got shape {tuple(target.shape)}")
        loss = ops.cross_entropy(input[None], target[None], reduction, ignore_index, label_smoothing)
        return loss[0] if reduction == "none" else loss
    if input.dim() == 0:
        raise ValueError("input must be (N, C), (C,) or (N, C, d1, ...), got a scalar")
    spatial = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != spatial:
        raise ValueError(f"target must have shape {spatial} for input {tuple(input.shape)}, got "
                         f"{tuple(target.shape)}")
    rows = input.movedim(1, -1).reshape(-1, input.shape[1])
    loss = ops.cross_entropy(rows, target.reshape(-1), reduction, ignore_index, label_smoothing)
    return loss.view(spatial) if reduction == "none" else loss


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention on fastnn's fused
    kernel: query (N, H, L, E), key and value (N, Hkv, S, E), or the same
    without the leading dims ((H, L, E), (L, E)). value's head dim must be
    E. dropout_p must be 0 (the kernel has no dropout): pass
    `dropout_p=p if training else 0.0` only with p == 0."""
    rank = query.dim()
    if not 2 <= rank <= 4:
        raise ValueError(f"query must be (N, H, L, E), (H, L, E) or (L, E), got shape {tuple(query.shape)}")
    for name, t in (("key", key), ("value", value)):
        if t.dim() != rank:
            raise ValueError(f"{name} must have query's {rank} dims, got shape {tuple(t.shape)}")
    # Leading unit dims keep every broadcast right-aligned (masks, GQA's
    # head dim -3), so a lower-rank call is the 4-D one on views.
    lead = (1,) * (4 - rank)
    q, k, v = (t.view(lead + tuple(t.shape)) for t in (query, key, value))
    out = ops.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return out.view(query.shape)
