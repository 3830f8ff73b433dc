"""Softmax and log-softmax over the last dimension, in layers (shared with
the activations in _unary.py): kernel launchers (any DLPack array, out=),
then for torch tensors the custom operators fastnn::softmax / log_softmax and
their backwards, whose autograd formula runs fastnn's backward kernel on the
forward's output (as PyTorch's)."""

from __future__ import annotations

from . import _unary


def softmax(x, out=None):
    """exp(x - max) / sum(exp(x - max)) along the last dimension; float32 or
    bfloat16 (float32 arithmetic), any strides. `out` must not overlap x."""
    return _unary.forward("softmax", x, out)


def log_softmax(x, out=None):
    """(x - max) - log(sum(exp(x - max))) along the last dimension."""
    return _unary.forward("log_softmax", x, out)


def softmax_backward(grad_out, y, out=None):
    """y * (grad_out - sum(grad_out * y)) along the last dim; y = softmax(x)."""
    return _unary.backward("softmax", grad_out, y, "y", out)


def log_softmax_backward(grad_out, y, out=None):
    """grad_out - exp(y) * sum(grad_out) along the last dim; y = log_softmax(x)."""
    return _unary.backward("log_softmax", grad_out, y, "y", out)


def register_torch_ops(torch):
    for kind in ("softmax", "log_softmax"):
        _unary.register(torch, kind, saves_output=True)
