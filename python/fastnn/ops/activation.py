"""Activation ops: kernel launchers plus, for torch tensors that require grad,
an autograd function whose backward is fastnn's own kernel."""

from __future__ import annotations

import functools

from .. import _backend as B


def _launch(name: str, inputs: tuple, names: tuple, out):
    first = inputs[0]
    module = B.kernels_for(first, names[0])
    if out is None:
        out = B.empty_like(first, names[0])
    else:
        B.check_out(out)
    args = [B.for_kernel(a) for a in inputs] + [out]
    if module is B._C:
        getattr(module, name)(*args)
    else:
        getattr(module, name)(*args, B.current_stream(first))
    return out


def relu(x, out=None):
    """max(x, 0) elementwise, NaN propagated; float32 or bfloat16, any strides.

    `out` may be x itself (in place). For a torch tensor that requires grad the
    result carries a grad_fn whose backward runs relu_backward.
    """
    if out is None and B.is_torch(x) and x.requires_grad and B.torch_module().is_grad_enabled():
        return _relu_autograd().apply(x)
    return _launch("relu_forward", (x,), ("x",), out)


def relu_backward(grad_out, y, out=None):
    """grad_out where y > 0 (or y is NaN), else 0; y is relu's output."""
    return _launch("relu_backward", (grad_out, y), ("grad_out", "y"), out)


@functools.cache
def _relu_autograd():
    torch = B.torch_module()

    class ReLUFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = _launch("relu_forward", (x,), ("x",), None)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad_out):
            (y,) = ctx.saved_tensors
            return relu_backward(grad_out, y)

    return ReLUFunction
