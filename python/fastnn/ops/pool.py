"""2-D pooling (max, average, adaptive average) with PyTorch's semantics:
launchers, then for torch tensors the custom operators fastnn::max_pool2d
(which also returns the int64 argmax indices its backward reads),
avg_pool2d and adaptive_avg_pool2d with their backwards, whose autograd
formulas are fastnn's own kernels. The backwards take the input's size and
layout instead of the input itself, so pooling saves no activation."""

from __future__ import annotations

from .. import _backend as B
from . import _torch_ops as T
from ._spatial import batched, empty_nchw, is_channels_last, pair, pooled_size

# What the adaptive kernel ignores: it derives its windows from the sizes.
_NO_WINDOW = ((1, 1), (1, 1), (0, 0), (1, 1))


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


def _windowed_hw(x4, k, s, p, d, ceil_mode):
    """The output size; one that is not positive becomes 0 for the kernel to
    refuse with its message."""
    return tuple(max(pooled_size(x4.shape[2 + a], k[a], s[a], p[a], d[a], ceil_mode), 0) for a in range(2))


def _outputs(kind, x4, out_hw, with_indices=True):
    shape = (x4.shape[0], x4.shape[1]) + tuple(out_hw)
    channels_last = is_channels_last(x4)
    out = empty_nchw(x4, shape, channels_last=channels_last)
    indices = empty_nchw(x4, shape, "int64", channels_last) if kind == "max" and with_indices else None
    return out, indices


def _pool(kind, x4, out_hw, window, ceil_mode, count_include_pad, divisor_override, with_indices=True):
    out, indices = _outputs(kind, x4, out_hw, with_indices)
    B.launch("pool_forward", x4, kind, x4, out, indices, *(tuple(v) for v in window), ceil_mode, count_include_pad,
             divisor_override)
    return out, indices


def _grad_in(grad_out, input_size, channels_last):
    return empty_nchw(grad_out, tuple(input_size), channels_last=channels_last)


def _pool_backward(kind, grad_out, indices, input_size, channels_last, window, ceil_mode, count_include_pad,
                   divisor_override):
    grad_in = _grad_in(grad_out, input_size, channels_last)
    B.launch("pool_backward", grad_out, kind, grad_out, indices, grad_in, *(tuple(v) for v in window), ceil_mode,
             count_include_pad, divisor_override, name="grad_out")
    return grad_in


def _unbatched(out, added):
    return out[0] if added else out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d: (N, C, H, W) or (C, H, W), NCHW or
    channels-last, float32 or bfloat16; NaN propagates."""
    window = _window(kernel_size, stride, padding, dilation)
    x4, added = batched(x, "x")
    if B.needs_torch_op(x4):
        out, indices = T.torch_op("max_pool2d")(x4, *window, bool(ceil_mode))
    else:
        # Without autograd the indices are only for the caller: not asked
        # for, the kernel skips them (N8 C64 112x112 channels-last, k3 s2:
        # a third of the forward's time).
        out, indices = _pool("max", x4, _windowed_hw(x4, *window, ceil_mode), window, ceil_mode, True, 0,
                             bool(return_indices))
    if not return_indices:
        return _unbatched(out, added)
    return _unbatched(out, added), _unbatched(indices, added)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch.nn.functional.avg_pool2d, same layouts and dtypes as max_pool2d."""
    k, s, p, _ = _window(kernel_size, stride, padding, 1)
    x4, added = batched(x, "x")
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override <= 0):
        raise ValueError(f"divisor_override must be a positive int, got {divisor_override!r}")
    args = (bool(ceil_mode), bool(count_include_pad), divisor_override or 0)
    if B.needs_torch_op(x4):
        out = T.torch_op("avg_pool2d")(x4, k, s, p, *args)
    else:
        out = _pool("avg", x4, _windowed_hw(x4, k, s, p, (1, 1), ceil_mode), (k, s, p, (1, 1)), *args)[0]
    return _unbatched(out, added)


def adaptive_avg_pool2d(x, output_size):
    """torch.nn.functional.adaptive_avg_pool2d; output_size entries may be None
    (keep the input's size)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        want = output_size
    else:
        want = pair(output_size, "output_size")
    x4, added = batched(x, "x")
    hw = tuple(x4.shape[2 + a] if want[a] is None else want[a] for a in range(2))
    pair(hw, "output_size")
    if min(hw) <= 0:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    if B.needs_torch_op(x4):
        out = T.torch_op("adaptive_avg_pool2d")(x4, hw)
    else:
        out = _pool("adaptive_avg", x4, hw, _NO_WINDOW, False, True, 0)[0]
    return _unbatched(out, added)


def register_torch_ops(torch):
    _register_max(torch)
    _register_avg(torch)
    _register_adaptive_avg(torch)


def _input_layout(ctx, x4):
    ctx.input_size, ctx.channels_last = tuple(x4.shape), is_channels_last(x4)


def _register_max(torch):
    window = "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation"

    @T.custom_op("max_pool2d", schema=f"(Tensor x, {window}, bool ceil_mode) -> (Tensor out, Tensor indices)")
    def forward_op(x, kernel_size, stride, padding, dilation, ceil_mode):
        win = (kernel_size, stride, padding, dilation)
        return _pool("max", x, _windowed_hw(x, *win, ceil_mode), win, ceil_mode, True, 0)

    @forward_op.register_fake
    def _(x, kernel_size, stride, padding, dilation, ceil_mode):
        return _outputs("max", x, _windowed_hw(x, kernel_size, stride, padding, dilation, ceil_mode))

    @T.custom_op("max_pool2d_backward",
                 schema=f"(Tensor grad_out, Tensor indices, SymInt[4] input_size, bool channels_last, "
                        f"{window}, bool ceil_mode) -> Tensor")
    def backward_op(grad_out, indices, input_size, channels_last, kernel_size, stride, padding, dilation,
                    ceil_mode):
        return _pool_backward("max", grad_out, indices, input_size, channels_last,
                              (kernel_size, stride, padding, dilation), ceil_mode, True, 0)

    @backward_op.register_fake
    def _(grad_out, indices, input_size, channels_last, kernel_size, stride, padding, dilation, ceil_mode):
        return _grad_in(grad_out, input_size, channels_last)

    def setup_context(ctx, inputs, output):
        x, *ctx.args = inputs
        _input_layout(ctx, x)
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])
        # Else autograd fills a zero int64 gradient the size of the output for
        # the indices before every backward (the other ops' statistics alike).
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_out, _grad_indices):
        (indices,) = ctx.saved_tensors
        return backward_op(grad_out, indices, ctx.input_size, ctx.channels_last, *ctx.args), *(None,) * 5

    forward_op.register_autograd(backward, setup_context=setup_context)


def _register_avg(torch):
    options = "int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, bool count_include_pad, " \
              "int divisor_override"

    @T.custom_op("avg_pool2d", schema=f"(Tensor x, {options}) -> Tensor")
    def forward_op(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        win = (kernel_size, stride, padding, (1, 1))
        return _pool("avg", x, _windowed_hw(x, *win, ceil_mode), win, ceil_mode, count_include_pad,
                     divisor_override)[0]

    @forward_op.register_fake
    def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return _outputs("avg", x, _windowed_hw(x, kernel_size, stride, padding, (1, 1), ceil_mode))[0]

    @T.custom_op("avg_pool2d_backward",
                 schema=f"(Tensor grad_out, SymInt[4] input_size, bool channels_last, {options}) "
                        "-> Tensor")
    def backward_op(grad_out, input_size, channels_last, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override):
        return _pool_backward("avg", grad_out, None, input_size, channels_last, (kernel_size, stride, padding, (1, 1)),
                              ceil_mode, count_include_pad, divisor_override)

    @backward_op.register_fake
    def _(grad_out, input_size, channels_last, *options):
        return _grad_in(grad_out, input_size, channels_last)

    def setup_context(ctx, inputs, output):
        x, *ctx.args = inputs
        _input_layout(ctx, x)

    def backward(ctx, grad_out):
        return backward_op(grad_out, ctx.input_size, ctx.channels_last, *ctx.args), *(None,) * 6

    forward_op.register_autograd(backward, setup_context=setup_context)


def _register_adaptive_avg(torch):
    @T.custom_op("adaptive_avg_pool2d", schema="(Tensor x, int[2] output_size) -> Tensor")
    def forward_op(x, output_size):
        return _pool("adaptive_avg", x, output_size, _NO_WINDOW, False, True, 0)[0]

    @forward_op.register_fake
    def _(x, output_size):
        return _outputs("adaptive_avg", x, output_size)[0]

    @T.custom_op("adaptive_avg_pool2d_backward",
                 schema="(Tensor grad_out, SymInt[4] input_size, bool channels_last) -> Tensor")
    def backward_op(grad_out, input_size, channels_last):
        return _pool_backward("adaptive_avg", grad_out, None, input_size, channels_last, _NO_WINDOW, False, True, 0)

    @backward_op.register_fake
    def _(grad_out, input_size, channels_last):
        return _grad_in(grad_out, input_size, channels_last)

    def setup_context(ctx, inputs, output):
        _input_layout(ctx, inputs[0])

    def backward(ctx, grad_out):
        return backward_op(grad_out, ctx.input_size, ctx.channels_last), None

    forward_op.register_autograd(backward, setup_context=setup_context)
