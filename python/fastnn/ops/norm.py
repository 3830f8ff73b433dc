"""LayerNorm and RMSNorm over the last dimension: kernel launchers plus, for
torch tensors that require grad, autograd functions whose backward runs
fastnn's own kernels. Semantics follow torch.nn.functional.layer_norm and
rms_norm with normalized_shape = (x.shape[-1],)."""

from __future__ import annotations

import functools

import numpy as np

from .. import _backend as B
from .. import _C

# torch.nn.functional.rms_norm's default eps: the machine epsilon of x's dtype.
_RMS_DEFAULT_EPS = {"float32": 2.0**-23, "bfloat16": 2.0**-7}


def _check_normalized_shape(x, normalized_shape) -> None:
    if normalized_shape is None:
        return
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    last = tuple(getattr(x, "shape", (None,))[-1:])
    if shape != last:
        raise ValueError(
            f"normalized_shape must be the last dim of x {last} (fastnn normalizes over the last dim only), "
            f"got {shape}")


def _stats_like(x):
    """float32 with x's leading shape, in x's framework."""
    if B.is_torch(x):
        return B.torch_module().empty(x.shape[:-1], dtype=B.torch_module().float32, device=x.device)
    return np.empty(tuple(x.shape[:-1]), dtype=np.float32)


def _wants_autograd(*tensors) -> bool:
    torch = B.torch_module()
    return (torch is not None and torch.is_grad_enabled()
            and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors))


def _layer_norm_forward(x, weight, bias, eps, out):
    y = B.empty_like(x, "x") if out is None else out
    if out is not None:
        B.check_out(out)
    mean, rstd = _stats_like(x), _stats_like(x)
    _C.layer_norm_forward(B.for_kernel(x), B.for_kernel(weight), B.for_kernel(bias), eps, y, mean, rstd)
    return y, mean, rstd


def _rms_norm_forward(x, weight, eps, out):
    y = B.empty_like(x, "x") if out is None else out
    if out is not None:
        B.check_out(out)
    rstd = _stats_like(x)
    _C.rms_norm_forward(B.for_kernel(x), B.for_kernel(weight), eps, y, rstd)
    return y, rstd


def layer_norm(x, normalized_shape=None, weight=None, bias=None, eps: float = 1e-5, *, out=None,
               return_stats: bool = False):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim of x.

    x: (..., N) float32 or bfloat16, any strides. weight, bias: (N,) or None,
    float32 or x's dtype. Returns y in x's dtype, or (y, mean, rstd) with
    return_stats (float32, x's leading shape), which layer_norm_backward takes.
    out may be x itself. For torch tensors that require grad the result carries
    a grad_fn whose backward runs layer_norm_backward.
    """
    _check_normalized_shape(x, normalized_shape)
    if out is None and _wants_autograd(x, weight, bias):
        y, mean, rstd = _layer_norm_autograd().apply(x, weight, bias, eps)
    else:
        y, mean, rstd = _layer_norm_forward(x, weight, bias, eps, out)
    return (y, mean, rstd) if return_stats else y


def layer_norm_backward(grad_out, x, mean, rstd, weight=None, bias=None, *, out=None,
                        weight_grad: bool = True, bias_grad: bool = True):
    """Gradients of layer_norm: (grad_x, grad_weight, grad_bias).

    mean and rstd are the statistics layer_norm returned for x. grad_weight is
    computed when weight is given and weight_grad; grad_bias when bias is given
    (only its dtype is read) and bias_grad; otherwise they are None. The sums
    over rows are the same for any thread count.
    """
    grad_x = B.empty_like(x, "x") if out is None else out
    if out is not None:
        B.check_out(out)
    grad_weight = B.empty_like(weight, "weight") if weight is not None and weight_grad else None
    grad_bias = B.empty_like(bias, "bias") if bias is not None and bias_grad else None
    _C.layer_norm_backward(B.for_kernel(grad_out), B.for_kernel(x), mean, rstd, B.for_kernel(weight), grad_x,
                           grad_weight, grad_bias)
    return grad_x, grad_weight, grad_bias


def rms_norm(x, normalized_shape=None, weight=None, eps: float | None = None, *, out=None,
             return_stats: bool = False):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim of x.

    eps=None means the machine epsilon of x's dtype (as torch). Returns y in
    x's dtype, or (y, rstd) with return_stats. out may be x itself.
    """
    _check_normalized_shape(x, normalized_shape)
    if eps is None:
        eps = _RMS_DEFAULT_EPS.get(str(x.dtype).replace("torch.", ""), 0.0)
    if out is None and _wants_autograd(x, weight):
        y, rstd = _rms_norm_autograd().apply(x, weight, eps)
    else:
        y, rstd = _rms_norm_forward(x, weight, eps, out)
    return (y, rstd) if return_stats else y


def rms_norm_backward(grad_out, x, rstd, weight=None, *, out=None, weight_grad: bool = True):
    """Gradients of rms_norm: (grad_x, grad_weight); grad_weight is None
    without weight or with weight_grad=False."""
    grad_x = B.empty_like(x, "x") if out is None else out
    if out is not None:
        B.check_out(out)
    grad_weight = B.empty_like(weight, "weight") if weight is not None and weight_grad else None
    _C.rms_norm_backward(B.for_kernel(grad_out), B.for_kernel(x), rstd, B.for_kernel(weight), grad_x, grad_weight)
    return grad_x, grad_weight


@functools.cache
def _layer_norm_autograd():
    torch = B.torch_module()

    class LayerNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, eps):
            y, mean, rstd = _layer_norm_forward(x, weight, bias, eps, None)
            ctx.save_for_backward(x, weight, bias, mean, rstd)
            ctx.mark_non_differentiable(mean, rstd)
            return y, mean, rstd

        @staticmethod
        def backward(ctx, grad_y, _grad_mean, _grad_rstd):
            x, weight, bias, mean, rstd = ctx.saved_tensors
            _, need_w, need_b, _ = ctx.needs_input_grad
            grad_x, grad_w, grad_b = layer_norm_backward(grad_y, x, mean, rstd, weight, bias,
                                                         weight_grad=need_w, bias_grad=need_b)
            return grad_x, grad_w, grad_b, None

    return LayerNormFunction


@functools.cache
def _rms_norm_autograd():
    torch = B.torch_module()

    class RMSNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, eps):
            y, rstd = _rms_norm_forward(x, weight, eps, None)
            ctx.save_for_backward(x, weight, rstd)
            ctx.mark_non_differentiable(rstd)
            return y, rstd

        @staticmethod
        def backward(ctx, grad_y, _grad_rstd):
            x, weight, rstd = ctx.saved_tensors
            grad_x, grad_w = rms_norm_backward(grad_y, x, rstd, weight, weight_grad=ctx.needs_input_grad[1])
            return grad_x, grad_w, None

    return RMSNormFunction
