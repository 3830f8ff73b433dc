"""Activation ops, in layers: the kernel launchers (any DLPack array, out=),
then for torch tensors the custom operators fastnn::relu / relu_backward with
fake (meta) implementations and an autograd formula, so autograd and
torch.compile(fullgraph=True) see one opaque op."""

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
        getattr(module, name)(*args, B.current_stream(first))
    return out


def relu(x, out=None):
    """max(x, 0) elementwise, NaN propagated; float32 or bfloat16, any strides.

    `out` may be x itself (in place). A torch tensor that requires grad, or any
    torch tensor while torch.compile traces, goes through the custom operator
    fastnn::relu, whose backward runs relu_backward.
    """
    if out is None and B.needs_torch_op(x):
        return B.torch_module().ops.fastnn.relu(x)
    return _launch("relu_forward", (x,), ("x",), out)


def relu_backward(grad_out, y, out=None):
    """grad_out where y > 0 (or y is NaN), else 0; y is relu's output."""
    if out is None and B.needs_torch_op(grad_out):
        return B.torch_module().ops.fastnn.relu_backward(grad_out, y)
    return _launch("relu_backward", (grad_out, y), ("grad_out", "y"), out)


def register_torch_ops(torch):
    # Schemas are spelled out: this module's annotations are strings.
    @torch.library.custom_op("fastnn::relu", mutates_args=(), schema="(Tensor x) -> Tensor")
    def relu_op(x):
        return _launch("relu_forward", (x,), ("x",), None)

    @relu_op.register_fake
    def _(x):
        return torch.empty_like(x)

    @torch.library.custom_op("fastnn::relu_backward", mutates_args=(),
                             schema="(Tensor grad_out, Tensor y) -> Tensor")
    def relu_backward_op(grad_out, y):
        return _launch("relu_backward", (grad_out, y), ("grad_out", "y"), None)

    @relu_backward_op.register_fake
    def _(grad_out, y):
        return torch.empty_like(grad_out)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return relu_backward_op(grad, y)

    relu_op.register_autograd(backward, setup_context=setup_context)
