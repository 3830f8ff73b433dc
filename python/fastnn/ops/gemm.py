"""GEMM and Linear: kernel launchers plus, for torch tensors that require
grad, an autograd function whose backward is fastnn's own GEMMs.

Transposes are views: `fastnn.matmul(a.T, b)` reads a's memory in place (the
kernel packs from any strides), so there is never a `.contiguous()` here."""

from __future__ import annotations

import functools

import numpy as np

from .. import _C
from .. import _backend as B

def _empty(like, shape, dtype=None):
    """An uninitialized array of `shape` from like's framework (and dtype)."""
    if B.is_torch(like):
        return B.torch_module().empty(shape, dtype=dtype or like.dtype, device=like.device)
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=dtype or like.dtype)
    raise TypeError(f"cannot allocate an output like a {type(like).__name__}; pass out=")


def matmul(a, b, *, out=None, alpha: float = 1.0, beta: float = 0.0, bias=None, activation: str | None = None):
    """activation(alpha * a @ b + beta * out + bias), one fused pass.

    a (M, K) or (batch, M, K); b (K, N) or (batch, K, N); batch sizes equal or
    1 (broadcast, also through a stride-0 view). float32, or bfloat16 with a
    bfloat16 or float32 `out`; accumulation is float32. Any strides: pass
    transposes as views (`x.T`, `x.mT`), never copies. `bias` is (N,).
    activation: None, "relu", "gelu" (erf), "gelu_tanh" or "silu", as
    torch.nn.functional. beta != 0 needs out=; beta == 0 never reads out.
    No autograd (use fastnn.linear for a trainable layer).
    """
    for name, x in (("a", a), ("b", b)):
        if getattr(x, "requires_grad", False) and B.torch_module().is_grad_enabled():
            raise TypeError(f"{name} requires grad, and fastnn.matmul has no autograd: use fastnn.linear, "
                            "or detach it")
    if out is None:
        if beta != 0.0:
            raise ValueError("beta != 0 reads out, so it needs out=")
        for name, x in (("a", a), ("b", b)):
            if getattr(x, "ndim", None) not in (2, 3):
                if not hasattr(x, "shape"):
                    raise TypeError(f"{name} must be an array (torch.Tensor, numpy.ndarray, ...), "
                                    f"got {type(x).__name__}")
                raise ValueError(f"{name} must be 2-D (rows, cols) or 3-D (batch, rows, cols), "
                                 f"got shape {tuple(x.shape)}")
        if a.ndim == 3 or b.ndim == 3:
            batch = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
            out = _empty(a, (batch, a.shape[-2], b.shape[-1]))
        else:
            out = _empty(a, (a.shape[0], b.shape[1]))
    else:
        B.check_out(out)
    _C.gemm(a, b, out, bias, alpha, beta, activation)
    return out


def _flat_rows(x, name):
    """x (..., features) as a (rows, features) view (a copy only when the
    leading dims cannot be merged, as torch.reshape)."""
    if x.ndim == 2:
        return x
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got a scalar")
    return x.reshape(-1, x.shape[-1])


def _check_weight(weight):
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")


def _linear_forward(x, weight, bias):
    _check_weight(weight)
    x2 = _flat_rows(x, "x")
    y = _empty(x, (x2.shape[0], weight.shape[0]))
    _C.linear(x2, weight, bias, y)
    return y if x.ndim == 2 else y.reshape(*x.shape[:-1], weight.shape[0])


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, as torch.nn.functional.linear.

    x (..., in_features), weight (out_features, in_features), bias
    (out_features,) or None; float32 or bfloat16. For torch tensors that
    require grad the result carries a grad_fn whose backward runs
    linear_backward.
    """
    if B.is_torch(x) and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)) \
            and B.torch_module().is_grad_enabled():
        return _linear_autograd().apply(x, weight, bias)
    return _linear_forward(x, weight, bias)


def linear_backward(grad_out, x, weight, *, input_grad: bool = True, weight_grad: bool = True,
                    bias_grad: bool = True):
    """Gradients of y = x @ weight.T + bias: (grad_x, grad_weight, grad_bias),
    None where not asked for.

    grad_x = grad_out @ weight, grad_weight = grad_out.T @ x, grad_bias =
    grad_out summed over all rows; grad_out (..., out_features) like y.
    """
    _check_weight(weight)
    g2, x2 = _flat_rows(grad_out, "grad_out"), _flat_rows(x, "x")
    grad_x = _empty(g2, (g2.shape[0], weight.shape[1])) if input_grad else None
    grad_w = _empty(g2, tuple(weight.shape)) if weight_grad else None
    grad_b = _empty(g2, (g2.shape[1],)) if bias_grad else None
    _C.linear_backward(g2, x2, weight, grad_x, grad_w, grad_b)
    if grad_x is not None and x.ndim != 2:
        grad_x = grad_x.reshape(x.shape)
    return grad_x, grad_w, grad_b


@functools.cache
def _linear_autograd():
    torch = B.torch_module()

    class LinearFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_for_backward(x, weight)
            ctx.has_bias = bias is not None
            return _linear_forward(x.detach(), weight.detach(), None if bias is None else bias.detach())

        @staticmethod
        def backward(ctx, grad_out):
            x, weight = ctx.saved_tensors
            need_x, need_w, need_b = ctx.needs_input_grad
            return linear_backward(grad_out, x, weight, input_grad=need_x, weight_grad=need_w,
                                   bias_grad=need_b and ctx.has_bias)

    return LinearFunction
