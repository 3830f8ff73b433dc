"""Losses: fused softmax cross-entropy (the probabilities are never stored;
backward recomputes them from the logits and each row's saved max and
log-sum-exp)
and mean squared error, each with an autograd function for torch tensors
that require grad."""

from __future__ import annotations

import functools

from .. import _backend as B
from .. import _C


def _torch():
    torch = B.torch_module()
    if torch is None:
        raise TypeError("losses return torch tensors; pass torch tensors (import torch)")
    return torch


def _check_cpu(x, name):
    if B.kernels_for(x, name) is not _C:
        raise RuntimeError("fastnn's losses have no CUDA kernel yet; move the arrays to the CPU")


def _loss_shape(reduction, per_element):
    return tuple(per_element.shape) if reduction == "none" else ()


def cross_entropy(logits, target, reduction: str = "mean", ignore_index: int = -100,
                  label_smoothing: float = 0.0):
    """Softmax cross-entropy of logits (N, C) (float32 or bfloat16, any strides)
    against int64 class indices target (N,), as torch.nn.functional.cross_entropy:
    reduction 'mean' (over rows whose target is not ignore_index), 'sum' or
    'none'; label_smoothing in [0, 1]. Targets outside [0, C) other than
    ignore_index raise ValueError. Returns a torch tensor in the logits' dtype."""
    torch = _torch()
    _check_cpu(logits, "logits")
    if logits.requires_grad and torch.is_grad_enabled():
        return _cross_entropy_autograd().apply(logits, target, reduction, ignore_index, label_smoothing)
    return _cross_entropy_forward(torch, logits, target, reduction, ignore_index, label_smoothing)[0]


def _cross_entropy_forward(torch, logits, target, reduction, ignore_index, label_smoothing):
    loss = torch.empty(_loss_shape(reduction, target), dtype=logits.dtype)
    stats = torch.empty((target.shape[0], 2), dtype=torch.float64)
    _C.cross_entropy_forward(B.for_kernel(logits), target, loss, stats, reduction, int(ignore_index),
                             float(label_smoothing))
    return loss, stats


def cross_entropy_backward(grad_loss, logits, target, stats, reduction: str = "mean", ignore_index: int = -100,
                           label_smoothing: float = 0.0, out=None):
    """dlogits from the loss gradient, the logits and the forward's row
    statistics stats (N, 2) float64: each row's max and log(sum(exp(x - max))).
    Written in one pass over the logits."""
    if out is None:
        out = B.empty_like(logits, "logits")
    else:
        B.check_out(out)
    _C.cross_entropy_backward(B.for_kernel(logits), target, stats, grad_loss, out, reduction, int(ignore_index),
                              float(label_smoothing))
    return out


def mse_loss(x, target, reduction: str = "mean"):
    """(x - target)^2 (reduction 'none'), or its mean or sum; float32 or
    bfloat16, any strides, as torch.nn.functional.mse_loss without broadcasting."""
    torch = _torch()
    _check_cpu(x, "x")
    if (x.requires_grad or target.requires_grad) and torch.is_grad_enabled():
        return _mse_autograd().apply(x, target, reduction)
    return _mse_forward(torch, x, target, reduction)


def _mse_forward(torch, x, target, reduction):
    loss = torch.empty(_loss_shape(reduction, x), dtype=x.dtype)
    _C.mse_forward(B.for_kernel(x), B.for_kernel(target), loss, reduction)
    return loss


def mse_loss_backward(grad_loss, x, target, reduction: str = "mean", out=None):
    """Gradient of mse_loss with respect to x (that of target is its negation)."""
    if out is None:
        out = B.empty_like(x, "x")
    else:
        B.check_out(out)
    _C.mse_backward(B.for_kernel(x), B.for_kernel(target), grad_loss, out, reduction)
    return out


@functools.cache
def _cross_entropy_autograd():
    torch = B.torch_module()

    class CrossEntropyFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, target, reduction, ignore_index, label_smoothing):
            loss, stats = _cross_entropy_forward(torch, logits, target, reduction, ignore_index, label_smoothing)
            ctx.save_for_backward(logits, target, stats)
            ctx.args = (reduction, ignore_index, label_smoothing)
            return loss

        @staticmethod
        def backward(ctx, grad_loss):
            logits, target, stats = ctx.saved_tensors
            grad = cross_entropy_backward(grad_loss, logits, target, stats, *ctx.args)
            return grad, None, None, None, None

    return CrossEntropyFunction


@functools.cache
def _mse_autograd():
    torch = B.torch_module()

    class MseLossFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, target, reduction):
            ctx.save_for_backward(x, target)
            ctx.reduction = reduction
            return _mse_forward(torch, x, target, reduction)

        @staticmethod
        def backward(ctx, grad_loss):
            x, target = ctx.saved_tensors
            grad = mse_loss_backward(grad_loss, x, target, ctx.reduction)
            return (grad if ctx.needs_input_grad[0] else None,
                    -grad if ctx.needs_input_grad[1] else None, None)

    return MseLossFunction
