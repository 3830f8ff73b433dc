"""2-D convolution with PyTorch's conv2d semantics (stride, padding as ints,
pairs, 'same' or 'valid', dilation, groups), NCHW or channels-last: launcher,
then for torch tensors the custom operators fastnn::conv2d and
conv2d_backward, whose autograd formula is fastnn's own kernel. The
operators take the resolved geometry: padding as (before, after) pairs."""

from __future__ import annotations

from .. import _backend as B
from . import _torch_ops as T
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


def _geometry(weight, stride, padding, dilation, groups):
    """(stride, pad_before, pad_after, dilation, groups), validated."""
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
    return s, before, after, d, groups


def _output(x4, weight, stride, before, after, dilation):
    """(N, K, OH, OW) in x's layout; a negative size (kernel larger than the
    padded input) becomes 0 for the kernel to refuse with its message."""
    out_hw = tuple(max((x4.shape[2 + a] + before[a] + after[a] - dilation[a] * (weight.shape[2 + a] - 1) - 1)
                       // stride[a] + 1, 0) for a in range(2))
    return empty_nchw(x4, (x4.shape[0], weight.shape[0]) + out_hw)


def _conv2d(x4, weight, bias, stride, before, after, dilation, groups):
    geo = (tuple(stride), tuple(before), tuple(after), tuple(dilation), groups)
    out = _output(x4, weight, *geo[:4])
    B.launch("conv2d_forward", x4, x4, weight, bias, out, *geo)
    return out


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: x (N, C, H, W) or (C, H, W), weight
    (K, C / groups, R, S), bias (K,) or None; float32 or bfloat16 (float32
    accumulation); NCHW or channels-last x (the output follows x's layout).
    For torch tensors that require grad (or under torch.compile) this is the
    custom operator fastnn::conv2d, whose backward is fastnn's."""
    x4, added = batched(x, "x")
    B.device_of(weight, "weight")
    geo = _geometry(weight, stride, padding, dilation, groups)
    if B.needs_torch_op(x4, weight, bias):
        out = T.torch_op("conv2d")(x4, weight, bias, *geo)
    else:
        out = _conv2d(x4, weight, bias, *geo)
    return out[0] if added else out


def _grads(x, weight, wanted):
    grad_x = empty_nchw(x, tuple(x.shape)) if wanted[0] else None
    grad_w = B.empty(weight, tuple(weight.shape), name="weight") if wanted[1] else None
    grad_b = B.empty(weight, (weight.shape[0],), name="weight") if wanted[2] else None
    return grad_x, grad_w, grad_b


def _conv2d_backward(grad_out, x, weight, stride, before, after, dilation, groups, wanted):
    grads = _grads(x, weight, wanted)
    B.launch("conv2d_backward", x, x, weight, grad_out, *grads, tuple(stride), tuple(before), tuple(after),
             tuple(dilation), groups)
    return grads


def register_torch_ops(torch):
    geometry = "int[2] stride, int[2] pad_before, int[2] pad_after, int[2] dilation, int groups"

    @T.custom_op("conv2d", schema=f"(Tensor x, Tensor weight, Tensor? bias, {geometry}) -> Tensor")
    def conv2d_op(x, weight, bias, stride, pad_before, pad_after, dilation, groups):
        return _conv2d(x, weight, bias, stride, pad_before, pad_after, dilation, groups)

    @conv2d_op.register_fake
    def _(x, weight, bias, stride, pad_before, pad_after, dilation, groups):
        return _output(x, weight, stride, pad_before, pad_after, dilation)

    @T.custom_op("conv2d_backward",
                 schema=f"(Tensor grad_out, Tensor x, Tensor weight, {geometry}, bool input_grad, "
                        "bool weight_grad, bool bias_grad) "
                        "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)")
    def conv2d_backward_op(grad_out, x, weight, stride, pad_before, pad_after, dilation, groups, *wanted):
        return B.absent_as_empty(_conv2d_backward(grad_out, x, weight, stride, pad_before, pad_after, dilation,
                                                  groups, wanted), weight)

    @conv2d_backward_op.register_fake
    def _(grad_out, x, weight, stride, pad_before, pad_after, dilation, groups, *wanted):
        return B.absent_as_empty(_grads(x, weight, wanted), weight)

    def setup_context(ctx, inputs, output):
        x, weight, _, *ctx.geo = inputs
        ctx.save_for_backward(x, weight)

    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:3]
        grads = conv2d_backward_op(grad_out, x, weight, *ctx.geo, *wanted)
        return (*B.absent_as_none(grads, wanted), None, None, None, None, None)

    conv2d_op.register_autograd(backward, setup_context=setup_context)
