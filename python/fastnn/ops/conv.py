"""2-D convolution with PyTorch's conv2d semantics (stride, padding as ints,
pairs, 'same' or 'valid', dilation, groups), NCHW or channels-last: launcher
plus an autograd function whose backward is fastnn's own kernel."""

from __future__ import annotations

import functools

from .. import _backend as B
from ._spatial import batched, empty_nchw, pair


def _padding(padding, kernel, dilation, stride):
    """(pad_before, pad_after) pairs; 'same' pads asymmetrically like torch
    (the extra row/column at the bottom/right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' requires stride 1, got stride {stride}")
            total = [dilation[a] * (kernel[a] - 1) for a in range(2)]
            before = tuple(t // 2 for t in total)
            return before, tuple(t - b for t, b in zip(total, before))
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    p = pair(padding, "padding")
    if min(p) < 0:
        raise ValueError(f"padding must be >= 0, got {p}")
    return p, p


def _geometry(x4, weight, stride, padding, dilation, groups):
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    s, d = pair(stride, "stride"), pair(dilation, "dilation")
    for name, v in (("stride", s), ("dilation", d)):
        if min(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if len(weight.shape) != 4:
        raise ValueError(f"weight must be (K, C / groups, R, S), got shape {tuple(weight.shape)}")
    before, after = _padding(padding, tuple(weight.shape[2:]), d, s)
    out_hw = tuple((x4.shape[2 + a] + before[a] + after[a] - d[a] * (weight.shape[2 + a] - 1) - 1) // s[a] + 1
                   for a in range(2))
    return (s, before, after, d, groups), out_hw


def _forward(x4, weight, bias, geo, out_hw):
    out = empty_nchw(x4, (x4.shape[0], weight.shape[0]) + tuple(max(v, 0) for v in out_hw))
    B._C.conv2d_forward(B.for_kernel(x4), B.for_kernel(weight), None if bias is None else B.for_kernel(bias), out,
                        *geo)
    return out


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: x (N, C, H, W) or (C, H, W), weight
    (K, C / groups, R, S), bias (K,) or None; float32 or bfloat16 (float32
    accumulation); NCHW or channels-last x (the output follows x's layout)."""
    x4, added = batched(x, "x")
    B.device_of(weight, "weight")
    geo, out_hw = _geometry(x4, weight, stride, padding, dilation, groups)
    if B.is_torch(x) and B.torch_module().is_grad_enabled() and any(
            B.is_torch(t) and t.requires_grad for t in (x, weight, bias) if t is not None):
        out = _conv_autograd().apply(x4, weight, bias, geo, out_hw)
    else:
        out = _forward(x4, weight, bias, geo, out_hw)
    return out[0] if added else out


@functools.cache
def _conv_autograd():
    torch = B.torch_module()

    class Conv2dFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, geo, out_hw):
            ctx.save_for_backward(x, weight)
            ctx.geo, ctx.has_bias = geo, bias is not None
            return _forward(x.detach(), weight.detach(), None if bias is None else bias.detach(), geo, out_hw)

        @staticmethod
        def backward(ctx, grad_out):
            x, weight = ctx.saved_tensors
            need_x, need_w, need_b = ctx.needs_input_grad[:3]
            grad_x = empty_nchw(x, tuple(x.shape)) if need_x else None
            grad_w = torch.empty(weight.shape, dtype=weight.dtype) if need_w else None
            grad_b = torch.empty(weight.shape[0], dtype=weight.dtype) if need_b and ctx.has_bias else None
            B._C.conv2d_backward(x.detach(), weight.detach(), grad_out, grad_x, grad_w, grad_b, *ctx.geo)
            return grad_x, grad_w, grad_b, None, None

    return Conv2dFunction
