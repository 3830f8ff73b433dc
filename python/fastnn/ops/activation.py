"""Activation ops, in layers: the kernel launchers (any DLPack array, out=),
then for torch tensors one custom operator per activation and per backward
(torch.ops.fastnn.<kind> / <kind>_backward) with a fake implementation and an
autograd formula, so autograd and torch.compile(fullgraph=True) see opaque
ops."""

from __future__ import annotations

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

    `out` may be x itself (in place). A torch tensor that requires grad, or any
    torch tensor while torch.compile traces, goes through the custom operator
    fastnn::relu, whose backward runs relu_backward.
    """
    return _forward("relu", x, out)


def relu_backward(grad_out, y, out=None):
    """grad_out where y > 0 (or y is NaN), else 0; y is relu's output."""
    return _backward("relu", grad_out, y, out)


def gelu(x, approximate: str = "none", out=None):
    """GELU, x * Phi(x), as torch.nn.functional.gelu: approximate="none" (erf)
    or "tanh" (x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))). float32 or
    bfloat16, any strides; `out` may be x itself."""
    return _forward(_gelu_kind(approximate), x, out)


def gelu_backward(grad_out, x, approximate: str = "none", out=None):
    """Gradient of gelu with respect to its input x."""
    return _backward(_gelu_kind(approximate), grad_out, x, out)


def silu(x, out=None):
    """x * sigmoid(x); float32 or bfloat16, any strides; `out` may be x itself."""
    return _forward("silu", x, out)


def silu_backward(grad_out, x, out=None):
    """Gradient of silu with respect to its input x."""
    return _backward("silu", grad_out, x, out)


def sigmoid(x, out=None):
    """1 / (1 + exp(-x)); float32 or bfloat16, any strides; `out` may be x itself."""
    return _forward("sigmoid", x, out)


def sigmoid_backward(grad_out, y, out=None):
    """grad_out * (1 - y) * y; y is sigmoid's output."""
    return _backward("sigmoid", grad_out, y, out)


def tanh(x, out=None):
    """tanh(x); float32 or bfloat16, any strides; `out` may be x itself."""
    return _forward("tanh", x, out)


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


def _forward(kind: str, x, out):
    if out is None and B.needs_torch_op(x):
        return getattr(B.torch_module().ops.fastnn, kind)(x)
    return _launch(kind + "_forward", (x,), ("x",), out)


def _backward(kind: str, grad_out, saved, out):
    if out is None and B.needs_torch_op(grad_out):
        return getattr(B.torch_module().ops.fastnn, kind + "_backward")(grad_out, saved)
    return _launch(kind + "_backward", (grad_out, saved), ("grad_out", _saved_name(kind)), out)


def register_torch_ops(torch):
    for kind in _SAVES_OUTPUT:
        _register(torch, kind)


def _register(torch, kind: str):
    saved_name, saves_output = _saved_name(kind), _SAVES_OUTPUT[kind]

    # Schemas are spelled out: this module's annotations are strings.
    @torch.library.custom_op(f"fastnn::{kind}", mutates_args=(), schema="(Tensor x) -> Tensor")
    def forward_op(x):
        return _launch(kind + "_forward", (x,), ("x",), None)

    @forward_op.register_fake
    def _(x):
        return torch.empty_like(x)

    @torch.library.custom_op(f"fastnn::{kind}_backward", mutates_args=(),
                             schema=f"(Tensor grad_out, Tensor {saved_name}) -> Tensor")
    def backward_op(grad_out, saved):
        return _launch(kind + "_backward", (grad_out, saved), ("grad_out", saved_name), None)

    @backward_op.register_fake
    def _(grad_out, saved):
        return torch.empty_like(grad_out)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output if saves_output else inputs[0])

    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        return backward_op(grad, saved)

    forward_op.register_autograd(backward, setup_context=setup_context)
