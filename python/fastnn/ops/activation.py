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
        B.cuda_function(module, name)(*args, B.current_stream(first))
    return out


def relu(x, out=None):
    """max(x, 0) elementwise, NaN propagated; float32 or bfloat16, any strides.

    `out` may be x itself (in place). For a torch tensor that requires grad the
    result carries a grad_fn whose backward runs relu_backward.
    """
    return _forward("relu", x, out)


def relu_backward(grad_out, y, out=None):
    """grad_out where y > 0 (or y is NaN), else 0; y is relu's output."""
    return _launch("relu_backward", (grad_out, y), ("grad_out", "y"), out)


def gelu(x, approximate: str = "none", out=None):
    """GELU, x * Phi(x), as torch.nn.functional.gelu: approximate="none" (erf)
    or "tanh" (x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))). float32 or
    bfloat16, any strides; `out` may be x itself."""
    return _forward(_gelu_kind(approximate), x, out)


def gelu_backward(grad_out, x, approximate: str = "none", out=None):
    """Gradient of gelu with respect to its input x."""
    return _launch(_gelu_kind(approximate) + "_backward", (grad_out, x), ("grad_out", "x"), out)


def silu(x, out=None):
    """x * sigmoid(x); float32 or bfloat16, any strides; `out` may be x itself."""
    return _forward("silu", x, out)


def silu_backward(grad_out, x, out=None):
    """Gradient of silu with respect to its input x."""
    return _launch("silu_backward", (grad_out, x), ("grad_out", "x"), out)


def sigmoid(x, out=None):
    """1 / (1 + exp(-x)); float32 or bfloat16, any strides; `out` may be x itself."""
    return _forward("sigmoid", x, out)


def sigmoid_backward(grad_out, y, out=None):
    """grad_out * (1 - y) * y; y is sigmoid's output."""
    return _launch("sigmoid_backward", (grad_out, y), ("grad_out", "y"), out)


def tanh(x, out=None):
    """tanh(x); float32 or bfloat16, any strides; `out` may be x itself."""
    return _forward("tanh", x, out)


def tanh_backward(grad_out, y, out=None):
    """grad_out * (1 - y * y); y is tanh's output."""
    return _launch("tanh_backward", (grad_out, y), ("grad_out", "y"), out)


def _gelu_kind(approximate):
    if approximate == "none":
        return "gelu"
    if approximate == "tanh":
        return "gelu_tanh"
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


# What each backward kernel reads: the forward's output or its input.
_SAVES_OUTPUT = {"relu": True, "sigmoid": True, "tanh": True, "gelu": False, "gelu_tanh": False, "silu": False}


def _forward(kind: str, x, out):
    if out is None and B.is_torch(x) and x.requires_grad and B.torch_module().is_grad_enabled():
        return _autograd(kind).apply(x)
    return _launch(kind + "_forward", (x,), ("x",), out)


@functools.cache
def _autograd(kind: str):
    torch = B.torch_module()
    saves_output = _SAVES_OUTPUT[kind]
    forward_name, backward_name = kind + "_forward", kind + "_backward"
    saved_name = "y" if saves_output else "x"

    class ActivationFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = _launch(forward_name, (x,), ("x",), None)
            ctx.save_for_backward(y if saves_output else x)
            return y

        @staticmethod
        def backward(ctx, grad_out):
            (saved,) = ctx.saved_tensors
            return _launch(backward_name, (grad_out, saved), ("grad_out", saved_name), None)

    ActivationFunction.__name__ = ActivationFunction.__qualname__ = f"{kind.title().replace('_', '')}Function"
    return ActivationFunction
