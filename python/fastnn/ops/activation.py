"""Activation ops, in layers (shared with softmax in _unary.py): the kernel
launchers (any DLPack array, out=), then for torch tensors one custom
operator per activation and per backward (torch.ops.fastnn.<kind> /
<kind>_backward) with a fake implementation and an autograd formula, so
autograd and torch.compile(fullgraph=True) see opaque ops."""

from __future__ import annotations

from . import _unary


def relu(x, out=None):
    """max(x, 0) elementwise, NaN propagated; float32 or bfloat16, any strides.

    `out` may be x itself (in place). A torch tensor that requires grad, or any
    torch tensor while torch.compile traces, goes through the custom operator
    fastnn::relu, whose backward runs relu_backward.
    """
    return _unary.forward("relu", x, out)


def relu_backward(grad_out, y, out=None):
    """grad_out where y > 0 (or y is NaN), else 0; y is relu's output."""
    return _backward("relu", grad_out, y, out)


def gelu(x, approximate: str = "none", out=None):
    """GELU, x * Phi(x), as torch.nn.functional.gelu: approximate="none" (erf)
    or "tanh" (x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))). float32 or
    bfloat16, any strides; `out` may be x itself."""
    return _unary.forward(_gelu_kind(approximate), x, out)


def gelu_backward(grad_out, x, approximate: str = "none", out=None):
    """Gradient of gelu with respect to its input x."""
    return _backward(_gelu_kind(approximate), grad_out, x, out)


def silu(x, out=None):
    """x * sigmoid(x); float32 or bfloat16, any strides; `out` may be x itself."""
    return _unary.forward("silu", x, out)


def silu_backward(grad_out, x, out=None):
    """Gradient of silu with respect to its input x."""
    return _backward("silu", grad_out, x, out)


def sigmoid(x, out=None):
    """1 / (1 + exp(-x)); float32 or bfloat16, any strides; `out` may be x itself."""
    return _unary.forward("sigmoid", x, out)


def sigmoid_backward(grad_out, y, out=None):
    """grad_out * (1 - y) * y; y is sigmoid's output."""
    return _backward("sigmoid", grad_out, y, out)


def tanh(x, out=None):
    """tanh(x); float32 or bfloat16, any strides; `out` may be x itself."""
    return _unary.forward("tanh", x, out)


def tanh_backward(grad_out, y, out=None):
    """grad_out * (1 - y * y); y is tanh's output."""
    return _backward("tanh", grad_out, y, out)


def _gelu_kind(approximate):
    if approximate == "none":
        return "gelu"
    if approximate == "tanh":
        return "gelu_tanh"
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


# What each backward kernel reads: the forward's output or its input.
_SAVES_OUTPUT = {"relu": True, "sigmoid": True, "tanh": True, "gelu": False, "gelu_tanh": False, "silu": False}


def _saved_name(kind: str) -> str:
    return "y" if _SAVES_OUTPUT[kind] else "x"


def _backward(kind: str, grad_out, saved, out):
    return _unary.backward(kind, grad_out, saved, _saved_name(kind), out)


def register_torch_ops(torch):
    for kind, saves_output in _SAVES_OUTPUT.items():
        _unary.register(torch, kind, saves_output)
