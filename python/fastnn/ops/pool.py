"""2-D pooling (max, average, adaptive average) with PyTorch's semantics:
launchers plus autograd functions whose backward is fastnn's own kernel."""

from __future__ import annotations

import functools

from .. import _backend as B
from ._spatial import batched, empty_nchw, pair, pooled_size


def _window(kernel_size, stride, padding, dilation):
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == () or stride == [] else pair(stride, "stride")
    p, d = pair(padding, "padding"), pair(dilation, "dilation")
    for name, v in (("kernel_size", k), ("stride", s), ("dilation", d)):
        if min(v) <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if min(p) < 0:
        raise ValueError(f"padding must be non-negative, got {p}")
    return k, s, p, d


def _run(kind, x, out_hw, win, ceil_mode, count_include_pad, divisor_override):
    k, s, p, d = win
    out = empty_nchw(x, (x.shape[0], x.shape[1]) + tuple(out_hw))
    indices = None
    if kind == "max":
        indices = empty_nchw(x, tuple(out.shape), B.torch_module().int64) if B.is_torch(x) else \
            empty_nchw(x, tuple(out.shape), "int64")
    B._C.pool_forward(kind, B.for_kernel(x), out, indices, k, s, p, d, ceil_mode, count_include_pad,
                      divisor_override or 0)
    return out, indices


def _pool(kind, x, out_hw_fn, win, ceil_mode=False, count_include_pad=True, divisor_override=None,
          return_indices=False):
    x4, added = batched(x, "x")
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override <= 0):
        raise ValueError(f"divisor_override must be a positive int, got {divisor_override!r}")
    out_hw = out_hw_fn(x4)
    args = (kind, win, ceil_mode, count_include_pad, divisor_override)
    if B.is_torch(x) and x.requires_grad and B.torch_module().is_grad_enabled():
        out, indices = _pool_autograd().apply(x4, out_hw, *args)
    else:
        out, indices = _run(kind, x4, out_hw, win, ceil_mode, count_include_pad, divisor_override)
    if added:
        out = out[0]
        indices = None if indices is None else indices[0]
    return (out, indices) if return_indices else out


def _windowed_hw(win, ceil_mode):
    k, s, p, d = win
    return lambda x: tuple(pooled_size(x.shape[2 + a], k[a], s[a], p[a], d[a], ceil_mode) for a in range(2))


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d: (N, C, H, W) or (C, H, W), NCHW or
    channels-last, float32 or bfloat16; NaN propagates."""
    win = _window(kernel_size, stride, padding, dilation)
    return _pool("max", x, _windowed_hw(win, ceil_mode), win, ceil_mode, return_indices=return_indices)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch.nn.functional.avg_pool2d, same layouts and dtypes as max_pool2d."""
    win = _window(kernel_size, stride, padding, 1)
    return _pool("avg", x, _windowed_hw(win, ceil_mode), win, ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool2d(x, output_size):
    """torch.nn.functional.adaptive_avg_pool2d; output_size entries may be None
    (keep the input's size)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        want = output_size
    else:
        want = pair(output_size, "output_size")

    def out_hw(x4):
        hw = tuple(x4.shape[2 + a] if want[a] is None else want[a] for a in range(2))
        pair(hw, "output_size")
        if min(hw) <= 0:
            raise ValueError(f"output_size must be positive, got {output_size!r}")
        return hw

    return _pool("adaptive_avg", x, out_hw, ((1, 1), (1, 1), (0, 0), (1, 1)))


@functools.cache
def _pool_autograd():
    torch = B.torch_module()

    class PoolFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, out_hw, kind, win, ceil_mode, count_include_pad, divisor_override):
            out, indices = _run(kind, x.detach(), out_hw, win, ceil_mode, count_include_pad, divisor_override)
            ctx.args = (kind, win, ceil_mode, count_include_pad, divisor_override)
            ctx.x_shape, ctx.x_channels_last = tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last) \
                and not x.is_contiguous()
            if indices is not None:
                ctx.save_for_backward(indices)
                ctx.mark_non_differentiable(indices)
            return out, indices

        @staticmethod
        def backward(ctx, grad_out, _grad_indices):
            kind, (k, s, p, d), ceil_mode, count_include_pad, divisor_override = ctx.args
            fmt = torch.channels_last if ctx.x_channels_last else torch.contiguous_format
            grad_in = torch.empty(ctx.x_shape, dtype=grad_out.dtype, memory_format=fmt)
            indices = ctx.saved_tensors[0] if kind == "max" else None
            B._C.pool_backward(kind, grad_out, indices, grad_in, k, s, p, d, ceil_mode, count_include_pad,
                               divisor_override or 0)
            return grad_in, None, None, None, None, None, None

    return PoolFunction
