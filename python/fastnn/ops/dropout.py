"""Dropout with a counter-based RNG: the mask is a function of (seed, offset,
element index) only, so it does not depend on threads, ISA or strides, and
the backward regenerates it from the seed instead of storing it (no mask
tensor, no mask traffic). Mapping and keep rule: csrc/include/fastnn/dropout.h."""

from __future__ import annotations

import functools
import sys

from .. import _backend as B
from .._C import dropout_backward as _dropout_backward
from .._C import dropout_forward as _dropout_forward

_SEED_RANGE = 2**63 - 1


def _fresh_seed(x) -> int:
    """From the caller's framework's global generator, so torch.manual_seed or
    numpy.random.seed make dropout reproducible."""
    if B.is_torch(x):
        torch = B.torch_module()
        return int(torch.randint(0, _SEED_RANGE, (1,)).item())
    np = sys.modules["numpy"]
    return int(np.random.randint(0, _SEED_RANGE, dtype=np.int64))


def _check_p(p):
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return p


def _run(kernel, x, name, p, seed, offset, out):
    if B.kernels_for(x, name) is not B._C:
        raise RuntimeError("dropout has no CUDA kernel yet; move the arrays to the CPU")
    if out is None:
        out = B.empty_like(x, name)
    else:
        B.check_out(out)
    kernel(B.for_kernel(x), out, p, seed, offset)
    return out


def dropout(x, p: float = 0.5, training: bool = True, seed: int | None = None, offset: int = 0, out=None):
    """Zero each element with probability p and scale the rest by 1/(1-p), as
    torch.nn.functional.dropout; float32 or bfloat16, any strides, `out` may
    be x itself. The mask is determined by (seed, offset, element index):
    pass the same seed and offset to dropout_backward (the autograd path does
    this). seed=None draws one from the framework's global generator. Not
    training, or p == 0, returns x itself (as PyTorch) unless out is given."""
    p = _check_p(p)
    if not training or p == 0.0:
        if out is None:
            return x
        p, seed = 0.0, 0  # a copy into out
    if seed is None:
        seed = _fresh_seed(x)
    if out is None and B.is_torch(x) and x.requires_grad and B.torch_module().is_grad_enabled():
        return _autograd().apply(x, p, int(seed), int(offset))
    return _run(_dropout_forward, x, "x", p, int(seed), int(offset), out)


def dropout_backward(grad_out, p: float, seed: int, offset: int = 0, out=None):
    """grad_out * mask / (1 - p), with the forward's mask regenerated from
    (seed, offset)."""
    return _run(_dropout_backward, grad_out, "grad_out", _check_p(p), int(seed), int(offset), out)


@functools.cache
def _autograd():
    torch = B.torch_module()

    class DropoutFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, p, seed, offset):
            ctx.args = (p, seed, offset)
            return _run(_dropout_forward, x, "x", p, seed, offset, None)

        @staticmethod
        def backward(ctx, grad_out):
            return _run(_dropout_backward, grad_out, "grad_out", *ctx.args, None), None, None, None

    return DropoutFunction
