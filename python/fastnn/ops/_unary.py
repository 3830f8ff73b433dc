"""The layers shared by ops of one input x whose backward kernel reads
grad_out and one saved tensor, either x or the forward's output y
(activations, softmax, log-softmax): the launchers, the routing of torch
tensors through the custom operators fastnn::<kind> and <kind>_backward, and
their registration with fake implementations and the autograd formula.

Kernel names: <kind>_forward(x, out) and <kind>_backward(grad_out, saved, out)."""

from __future__ import annotations

from .. import _backend as B
from . import _torch_ops as T


def launch(kernel: str, inputs: tuple, names: tuple, out):
    out = B.output_like(inputs[0], out, names[0])
    B.launch(kernel, inputs[0], *inputs, out, name=names[0])
    return out


def forward(kind: str, x, out):
    if out is None and B.needs_torch_op(x):
        return T.torch_op(kind)(x)
    return launch(kind + "_forward", (x,), ("x",), out)


def backward(kind: str, grad_out, saved, saved_name: str, out):
    if out is None and B.needs_torch_op(grad_out, saved):
        return T.torch_op(kind + "_backward")(grad_out, saved)
    return launch(kind + "_backward", (grad_out, saved), ("grad_out", saved_name), out)


def register(torch, kind: str, saves_output: bool) -> None:
    """fastnn::<kind>(Tensor x) and fastnn::<kind>_backward(Tensor grad_out,
    Tensor y or x); the backward reads y when saves_output, else x."""
    saved_name = "y" if saves_output else "x"

    # Schemas are spelled out: the ops modules' annotations are strings.
    @T.custom_op(kind, schema="(Tensor x) -> Tensor")
    def forward_op(x):
        return launch(kind + "_forward", (x,), ("x",), None)

    @forward_op.register_fake
    def _(x):
        return torch.empty_like(x)

    @T.custom_op(f"{kind}_backward", schema=f"(Tensor grad_out, Tensor {saved_name}) -> Tensor")
    def backward_op(grad_out, saved):
        return launch(kind + "_backward", (grad_out, saved), ("grad_out", saved_name), None)

    @backward_op.register_fake
    def _(grad_out, saved):
        return torch.empty_like(grad_out)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output if saves_output else inputs[0])

    def autograd_backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        return backward_op(grad, saved)

    forward_op.register_autograd(autograd_backward, setup_context=setup_context)
