"""fastnn's torch custom operators (torch.ops.fastnn.<name>) and how a call
reaches them.

Every op registers its kernel launcher as a custom operator, with a fake
implementation, and the differentiable ones an autograd formula: that is what
torch.compile traces. A custom-operator call costs ~20 us of torch.library's
Python wrapping on top of the launcher, and its autograd ~25 us more per
forward and backward (this Xeon VM: GELU of 16 floats, forward and backward
162 us through the operators, 66 through a torch.autograd.Function running
the same launchers and formulas, 80 for torch's own GELU). So outside
torch.compile an op that autograd must record runs as that
autograd.Function, built from the very launcher, setup_context and backward
registered with the operator, and the formula's backward operators run their
launchers directly (unless the backward itself is being differentiated,
create_graph=True, where they stay operators as under torch.compile). Same
kernels either way, so the same bits."""

from __future__ import annotations

import threading

from .._backend import torch_module

_ops: dict[str, Op] = {}
_backward_state = threading.local()


class Op:
    """fastnn::<name>: the registered custom operator, its launcher, and
    (once an autograd formula is registered) its eager autograd.Function.
    Calling it runs the operator, or the launcher inside an eager backward."""

    def __init__(self, name: str, launcher, schema: str):
        torch = torch_module()
        self.name, self.launcher = name, launcher
        self.operator = torch.library.custom_op(f"fastnn::{name}", launcher, mutates_args=(), schema=schema)
        self.eager = None
        _ops[name] = self

    def register_fake(self, fake):
        self.operator.register_fake(fake)
        return fake

    def register_autograd(self, backward, setup_context) -> None:
        self.operator.register_autograd(backward, setup_context=setup_context)
        self.eager = _eager_function(self.name, self.launcher, backward, setup_context)

    def __call__(self, *args):
        if getattr(_backward_state, "direct", False):
            return self.launcher(*args)
        return self.operator(*args)


def custom_op(name: str, schema: str):
    """Decorator: registers the decorated launcher as fastnn::<name>."""
    return lambda launcher: Op(name, launcher, schema)


def torch_op(name: str):
    """What a call on torch tensors that autograd or torch.compile must see
    runs: the eager autograd.Function's apply outside torch.compile (for ops
    with a formula), else the custom operator."""
    op = _ops[name]
    if op.eager is not None and not torch_module().compiler.is_compiling():
        return op.eager.apply
    return op.operator


def _eager_function(name: str, launcher, backward, setup_context):
    """A torch.autograd.Function of the classic form, forward(ctx, *args)
    calling setup_context itself: the form with a separate setup_context
    staticmethod cost 48 us per GELU forward here, this one 19."""
    torch = torch_module()

    def run_forward(ctx, *args):
        output = launcher(*args)
        setup_context(ctx, args, output)
        return output

    def run_backward(ctx, *grads):
        if torch.is_grad_enabled():
            return backward(ctx, *grads)
        _backward_state.direct = True
        try:
            return backward(ctx, *grads)
        finally:
            _backward_state.direct = False

    return type(f"fastnn_{name}", (torch.autograd.Function,), {
        "forward": staticmethod(run_forward),
        "backward": staticmethod(run_backward),
    })
