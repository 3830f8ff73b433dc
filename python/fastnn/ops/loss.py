"""Losses: fused softmax cross-entropy (the probabilities are never stored;
backward recomputes them from the logits and each row's saved max and
log-sum-exp) and mean squared error. Kernel launchers, then the custom
operators fastnn::cross_entropy (which also returns those float64 row
statistics) and fastnn::mse_loss with their backwards, whose autograd
formulas run fastnn's own kernels."""

from __future__ import annotations

from .. import _backend as B
from . import _torch_ops as T


def _check_torch():
    if B.torch_module() is None:
        raise TypeError("losses return torch tensors; pass torch tensors (import torch)")


def _loss_shape(reduction, per_element):
    return tuple(per_element.shape) if reduction == "none" else ()


def cross_entropy(logits, target, reduction: str = "mean", ignore_index: int = -100,
                  label_smoothing: float = 0.0):
    """Softmax cross-entropy of logits (N, C) (float32 or bfloat16, any strides)
    against int64 class indices target (N,), as torch.nn.functional.cross_entropy:
    reduction 'mean' (over rows whose target is not ignore_index), 'sum' or
    'none'; label_smoothing in [0, 1]. Targets outside [0, C) other than
    ignore_index raise ValueError. Returns a torch tensor in the logits' dtype.
    For logits that require grad (or under torch.compile) this is the custom
    operator fastnn::cross_entropy, whose backward runs cross_entropy_backward."""
    _check_torch()
    args = (reduction, int(ignore_index), float(label_smoothing))
    if B.needs_torch_op(logits):
        return T.torch_op("cross_entropy")(logits, target, *args)[0]
    return _cross_entropy(logits, target, *args)[0]


def _cross_entropy_outputs(logits, target, reduction):
    loss = B.empty(logits, _loss_shape(reduction, target), name="logits")
    stats = B.empty(logits, (*target.shape[:1], 2), "float64", name="logits")
    return loss, stats


def _cross_entropy(logits, target, reduction, ignore_index, label_smoothing):
    loss, stats = _cross_entropy_outputs(logits, target, reduction)
    B.launch("cross_entropy_forward", logits, logits, target, loss, stats, reduction, ignore_index, label_smoothing,
             name="logits")
    return loss, stats


def cross_entropy_backward(grad_loss, logits, target, stats, reduction: str = "mean", ignore_index: int = -100,
                           label_smoothing: float = 0.0, out=None):
    """dlogits from the loss gradient, the logits and the forward's row
    statistics stats (N, 2) float64: each row's max and log(sum(exp(x - max))).
    Written in one pass over the logits."""
    args = (reduction, int(ignore_index), float(label_smoothing))
    if out is None and B.needs_torch_op(grad_loss, logits):
        return T.torch_op("cross_entropy_backward")(grad_loss, logits, target, stats, *args)
    return _cross_entropy_backward(grad_loss, logits, target, stats, *args, out)


def _cross_entropy_backward(grad_loss, logits, target, stats, reduction, ignore_index, label_smoothing, out):
    out = B.output_like(logits, out, "logits")
    B.launch("cross_entropy_backward", logits, logits, target, stats, grad_loss, out, reduction, ignore_index,
             label_smoothing, name="logits")
    return out


def mse_loss(x, target, reduction: str = "mean"):
    """(x - target)^2 (reduction 'none'), or its mean or sum; float32 or
    bfloat16, any strides, as torch.nn.functional.mse_loss without
    broadcasting. For torch tensors that require grad (or under
    torch.compile) this is the custom operator fastnn::mse_loss, whose
    backward runs mse_loss_backward."""
    _check_torch()
    if B.needs_torch_op(x, target):
        return T.torch_op("mse_loss")(x, target, reduction)
    return _mse(x, target, reduction)


def _mse_output(x, reduction):
    return B.empty(x, _loss_shape(reduction, x))


def _mse(x, target, reduction):
    loss = _mse_output(x, reduction)
    B.launch("mse_forward", x, x, target, loss, reduction)
    return loss


def mse_loss_backward(grad_loss, x, target, reduction: str = "mean", out=None):
    """Gradient of mse_loss with respect to x. That of target is
    mse_loss_backward(grad_loss, target, x): the same formula with the
    arguments swapped, bit for bit the negation."""
    if out is None and B.needs_torch_op(grad_loss, x, target):
        return T.torch_op("mse_loss_backward")(grad_loss, x, target, reduction)
    return _mse_backward(grad_loss, x, target, reduction, out)


def _mse_backward(grad_loss, x, target, reduction, out):
    out = B.output_like(x, out)
    B.launch("mse_backward", x, x, target, grad_loss, out, reduction)
    return out


def register_torch_ops(torch):
    @T.custom_op("cross_entropy",
                 schema="(Tensor logits, Tensor target, str reduction, int ignore_index, "
                        "float label_smoothing) -> (Tensor loss, Tensor stats)")
    def cross_entropy_op(logits, target, reduction, ignore_index, label_smoothing):
        return _cross_entropy(logits, target, reduction, ignore_index, label_smoothing)

    @cross_entropy_op.register_fake
    def _(logits, target, reduction, ignore_index, label_smoothing):
        return _cross_entropy_outputs(logits, target, reduction)

    @T.custom_op("cross_entropy_backward",
                 schema="(Tensor grad_loss, Tensor logits, Tensor target, Tensor stats, str reduction, "
                        "int ignore_index, float label_smoothing) -> Tensor")
    def cross_entropy_backward_op(grad_loss, logits, target, stats, reduction, ignore_index, label_smoothing):
        return _cross_entropy_backward(grad_loss, logits, target, stats, reduction, ignore_index, label_smoothing,
                                       None)

    @cross_entropy_backward_op.register_fake
    def _(grad_loss, logits, target, stats, reduction, ignore_index, label_smoothing):
        return torch.empty_like(logits)

    def cross_entropy_setup(ctx, inputs, output):
        logits, target, *ctx.args = inputs
        ctx.save_for_backward(logits, target, output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)

    def cross_entropy_autograd(ctx, grad_loss, _grad_stats):
        logits, target, stats = ctx.saved_tensors
        return cross_entropy_backward_op(grad_loss, logits, target, stats, *ctx.args), None, None, None, None

    cross_entropy_op.register_autograd(cross_entropy_autograd, setup_context=cross_entropy_setup)

    @T.custom_op("mse_loss", schema="(Tensor x, Tensor target, str reduction) -> Tensor")
    def mse_op(x, target, reduction):
        return _mse(x, target, reduction)

    @mse_op.register_fake
    def _(x, target, reduction):
        return _mse_output(x, reduction)

    @T.custom_op("mse_loss_backward", schema="(Tensor grad_loss, Tensor x, Tensor target, str reduction) -> Tensor")
    def mse_backward_op(grad_loss, x, target, reduction):
        return _mse_backward(grad_loss, x, target, reduction, None)

    @mse_backward_op.register_fake
    def _(grad_loss, x, target, reduction):
        return torch.empty_like(x)

    def mse_setup(ctx, inputs, output):
        x, target, ctx.reduction = inputs
        ctx.save_for_backward(x, target)

    def mse_autograd(ctx, grad_loss):
        x, target = ctx.saved_tensors
        need_x, need_target, _ = ctx.needs_input_grad
        return (mse_backward_op(grad_loss, x, target, ctx.reduction) if need_x else None,
                mse_backward_op(grad_loss, target, x, ctx.reduction) if need_target else None, None)

    mse_op.register_autograd(mse_autograd, setup_context=mse_setup)
