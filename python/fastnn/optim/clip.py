"""Fused gradient-norm clipping."""

from __future__ import annotations

import math

import torch

from .. import _C
from ._base import _device_error, _dl


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ in two fused passes: the global norm of
    all gradients in one pass (accumulated in double, in an order that does
    not depend on the thread count), then one scaling pass, skipped when the
    clip coefficient is exactly 1. Returns the total norm, as torch does, in
    the gradients' dtype. norm_type: any p > 0 or inf. foreach is ignored."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if not grads:
        return torch.tensor(0.0)
    for g in grads:
        if g.is_sparse:
            raise RuntimeError("fastnn.optim.clip_grad_norm_ does not support sparse gradients")
        if g.device.type != "cpu":
            raise RuntimeError(_device_error("fastnn.optim.clip_grad_norm_", g.device))
    reduced = _C.grad_norm_reduce(_dl(grads), norm_type)
    if math.isinf(norm_type) or norm_type == 1.0:
        value = reduced
    elif norm_type == 2.0:
        value = math.sqrt(reduced)
    else:
        value = reduced ** (1.0 / norm_type)
    dtype = grads[0].dtype if all(g.dtype == grads[0].dtype for g in grads) else torch.float32
    total_norm = torch.tensor(value, dtype=dtype)
    if error_if_nonfinite and not math.isfinite(float(total_norm)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    # The coefficient exactly as torch computes it, in the norm's dtype.
    coef = float(torch.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0))
    if coef != 1.0:
        _C.grad_scale_(_dl(grads), coef)
    return total_norm
