"""Softmax and log-softmax over the last dimension: launchers plus, for torch
tensors that require grad, an autograd function whose backward is fastnn's
kernel (it reads the forward's output, as PyTorch's)."""

from __future__ import annotations

import functools

from .. import _backend as B
from .._C import log_softmax_backward as _log_softmax_backward
from .._C import log_softmax_forward as _log_softmax_forward
from .._C import softmax_backward as _softmax_backward
from .._C import softmax_forward as _softmax_forward


def _run(kernel, inputs: tuple, out, name: str):
    first = inputs[0]
    if B.kernels_for(first, name) is not B._C:
        raise RuntimeError("softmax has no CUDA kernel yet; move the arrays to the CPU")
    if out is None:
        out = B.empty_like(first, name)
    else:
        B.check_out(out)
    kernel(*[B.for_kernel(a) for a in inputs], out)
    return out


def _needs_grad(x) -> bool:
    return B.is_torch(x) and x.requires_grad and B.torch_module().is_grad_enabled()


def softmax(x, out=None):
    """exp(x - max) / sum(exp(x - max)) along the last dimension; float32 or
    bfloat16 (float32 arithmetic), any strides. `out` must not overlap x."""
    if out is None and _needs_grad(x):
        return _autograd(False).apply(x)
    return _run(_softmax_forward, (x,), out, "x")


def log_softmax(x, out=None):
    """(x - max) - log(sum(exp(x - max))) along the last dimension."""
    if out is None and _needs_grad(x):
        return _autograd(True).apply(x)
    return _run(_log_softmax_forward, (x,), out, "x")


def softmax_backward(grad_out, y, out=None):
    """y * (grad_out - sum(grad_out * y)) along the last dim; y = softmax(x)."""
    return _run(_softmax_backward, (grad_out, y), out, "grad_out")


def log_softmax_backward(grad_out, y, out=None):
    """grad_out - exp(y) * sum(grad_out) along the last dim; y = log_softmax(x)."""
    return _run(_log_softmax_backward, (grad_out, y), out, "grad_out")


@functools.cache
def _autograd(log: bool):
    torch = B.torch_module()
    forward, backward = (_log_softmax_forward, _log_softmax_backward) if log else (_softmax_forward,
                                                                                  _softmax_backward)

    class SoftmaxFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = _run(forward, (x,), None, "x")
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad_out):
            (y,) = ctx.saved_tensors
            return _run(backward, (grad_out, y), None, "grad_out")

    SoftmaxFunction.__name__ = SoftmaxFunction.__qualname__ = "LogSoftmaxFunction" if log else "SoftmaxFunction"
    return SoftmaxFunction
