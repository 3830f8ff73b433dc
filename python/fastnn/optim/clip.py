"""Fused gradient-norm clipping."""

from __future__ import annotations

import math

import torch

from .. import _C
from ._base import DTensor, _device_error, _dl, _kernels, _supported


def _shard_group(grads):
    """The process group over which DTensor gradients are sharded (FSDP2),
    whose ranks' norms make up the total; None for ordinary tensors."""
    sharded = [g for g in grads if DTensor is not None and isinstance(g, DTensor)]
    if not sharded:
        return None
    mesh = sharded[0].device_mesh
    if len(sharded) != len(grads) or mesh.ndim != 1 or any(
            g.device_mesh != mesh or not g.placements[0].is_shard() for g in sharded):
        raise ValueError("parameters: fastnn.optim.clip_grad_norm_ takes ordinary tensors, or DTensors all sharded "
                         "over one 1-D device mesh (FSDP2's fully_shard)")
    return mesh.get_group()


def _all_ranks_norm(total_norm: torch.Tensor, norm_type: float, group) -> torch.Tensor:
    """The norm over every rank's shard from this rank's: the largest for
    inf, else the p-th root of the summed p-th powers (in float64)."""
    import torch.distributed as dist

    if math.isinf(norm_type):
        dist.all_reduce(total_norm, op=dist.ReduceOp.MAX, group=group)
        return total_norm
    powered = total_norm.double() ** norm_type
    dist.all_reduce(powered, op=dist.ReduceOp.SUM, group=group)
    return (powered ** (1.0 / norm_type)).to(total_norm.dtype)


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ in two fused passes: the global norm of
    all gradients in one pass (in an order that does not depend on the
    thread count or the run), then one scaling pass, skipped when the clip
    coefficient is exactly 1. Returns the total norm, as torch does, in the
    gradients' dtype on their device. norm_type: any p > 0 or inf. foreach is
    ignored. On CUDA nothing returns to the host (unless error_if_nonfinite,
    which reads the norm, as torch does); the gradients must share one device.
    Gradients sharded by FSDP2 (DTensors) give the norm over all ranks."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if not grads:
        return torch.tensor(0.0)
    device = grads[0].device
    for g in grads:
        if g.is_sparse:
            raise RuntimeError("fastnn.optim.clip_grad_norm_ does not support sparse gradients")
        if not _supported(g.device):
            raise RuntimeError(_device_error("fastnn.optim.clip_grad_norm_", g.device))
        if g.device != device:
            raise RuntimeError(f"fastnn.optim.clip_grad_norm_ needs every gradient on one device, got {device} "
                               f"and {g.device}")
    group = _shard_group(grads)
    dtype = grads[0].dtype if all(g.dtype == grads[0].dtype for g in grads) else torch.float32
    if device.type == "cuda":
        kernels, extra = _kernels(device)
        total_norm = torch.empty((), dtype=dtype, device=device)
        kernels.grad_norm(_dl(grads), norm_type, total_norm, **extra)
    else:
        reduced = _C.grad_norm_reduce(_dl(grads), norm_type)
        if math.isinf(norm_type) or norm_type == 1.0:
            value = reduced
        elif norm_type == 2.0:
            value = math.sqrt(reduced)
        else:
            value = reduced ** (1.0 / norm_type)
        total_norm = torch.tensor(value, dtype=dtype)
    if group is not None:
        total_norm = _all_ranks_norm(total_norm, norm_type, group)
    if error_if_nonfinite and not math.isfinite(float(total_norm)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    # The coefficient exactly as torch computes it, in the norm's dtype.
    coef = torch.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0)
    if device.type == "cuda":
        kernels.grad_scale_(_dl(grads), coef, **extra)
    elif float(coef) != 1.0:
        _C.grad_scale_(_dl(grads), float(coef))
    return total_norm
