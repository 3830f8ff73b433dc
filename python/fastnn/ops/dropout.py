"""Dropout with a counter-based RNG: the mask is a function of (seed, offset,
element index) only, so it does not depend on threads, ISA or strides, and
the backward regenerates it from the seed instead of storing it (no mask
tensor, no mask traffic). Mapping and keep rule: csrc/include/fastnn/dropout.h.

Kernel launchers, then the custom operators fastnn::dropout and
dropout_backward. Their seed is an int64 scalar tensor, not an int: a seed
drawn from torch's generator stays a value of the traced graph under
torch.compile (a fresh mask per call, as eager), and the op is a pure
function of its arguments, so the backward (and opcheck) see the same mask.
Seed and offset are uint64 for the kernels, int64 bit patterns in the ops."""

from __future__ import annotations

import sys

from .. import _backend as B
from . import _torch_ops as T

_SEED_RANGE = 2**63 - 1


def _fresh_seed(x) -> int:
    """From the caller's framework's global generator, so torch.manual_seed or
    numpy.random.seed make dropout reproducible."""
    if B.is_torch(x):
        return int(_seed_tensor(None))
    np = sys.modules["numpy"]
    return int(np.random.randint(0, _SEED_RANGE, dtype=np.int64))


def _check_u64(value, name: str) -> int:
    value = int(value)
    if not 0 <= value < 2**64:
        raise ValueError(f"{name} must be in [0, 2^64), got {value}")
    return value


def _as_int64(value: int) -> int:
    """The kernels' uint64 seed and offset as the int64 the operator schemas
    hold (two's complement, undone by _as_uint64)."""
    return value - 2**64 if value >= 2**63 else value


def _as_uint64(value) -> int:
    return int(value) & (2**64 - 1)


def _check_p(p):
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return p


def _run(kernel: str, x, name, p, seed, offset, out):
    out = B.output_like(x, out, name)
    B.launch(kernel, x, x, out, p, seed, offset, name=name)
    return out


def _seed_tensor(seed):
    """The seed as the custom operators take it; None draws one from torch's
    global generator (inside the graph under torch.compile), the same draw
    for tensors that require grad and for those that do not."""
    torch = B.torch_module()
    if seed is None:
        return torch.randint(0, _SEED_RANGE, (), dtype=torch.int64)
    return torch.tensor(_as_int64(seed), dtype=torch.int64)


def dropout(x, p: float = 0.5, training: bool = True, seed: int | None = None, offset: int = 0, out=None):
    """Zero each element with probability p and scale the rest by 1/(1-p), as
    torch.nn.functional.dropout; float32 or bfloat16, any strides, `out` may
    be x itself. The mask is determined by (seed, offset, element index):
    pass the same seed and offset to dropout_backward (the autograd path does
    this). seed=None draws one from the framework's global generator. Not
    training, or p == 0, returns x itself (as PyTorch) unless out is given.
    For a torch tensor that requires grad (or under torch.compile) this is
    the custom operator fastnn::dropout, whose backward runs dropout_backward."""
    p = _check_p(p)
    if not training or p == 0.0:
        if out is None:
            return x
        p, seed = 0.0, 0  # a copy into out
    offset = _check_u64(offset, "offset")
    seed = None if seed is None else _check_u64(seed, "seed")
    if out is None and B.needs_torch_op(x):
        return T.torch_op("dropout")(x, p, _seed_tensor(seed), _as_int64(offset))
    if seed is None:
        seed = _fresh_seed(x)
    return _run("dropout_forward", x, "x", p, seed, offset, out)


def dropout_backward(grad_out, p: float, seed: int, offset: int = 0, out=None):
    """grad_out * mask / (1 - p), with the forward's mask regenerated from
    (seed, offset)."""
    p, seed, offset = _check_p(p), _check_u64(seed, "seed"), _check_u64(offset, "offset")
    if out is None and B.needs_torch_op(grad_out):
        return T.torch_op("dropout_backward")(grad_out, p, _seed_tensor(seed), _as_int64(offset))
    return _run("dropout_backward", grad_out, "grad_out", p, seed, offset, out)


def register_torch_ops(torch):
    @T.custom_op("dropout", schema="(Tensor x, float p, Tensor seed, int offset) -> Tensor")
    def dropout_op(x, p, seed, offset):
        return _run("dropout_forward", x, "x", p, _as_uint64(seed), _as_uint64(offset), None)

    @dropout_op.register_fake
    def _(x, p, seed, offset):
        return torch.empty_like(x)

    @T.custom_op("dropout_backward", schema="(Tensor grad_out, float p, Tensor seed, int offset) -> Tensor")
    def dropout_backward_op(grad_out, p, seed, offset):
        return _run("dropout_backward", grad_out, "grad_out", p, _as_uint64(seed), _as_uint64(offset), None)

    @dropout_backward_op.register_fake
    def _(grad_out, p, seed, offset):
        return torch.empty_like(grad_out)

    def setup_context(ctx, inputs, output):
        _, ctx.p, seed, ctx.offset = inputs
        ctx.save_for_backward(seed)

    def backward(ctx, grad):
        (seed,) = ctx.saved_tensors
        return dropout_backward_op(grad, ctx.p, seed, ctx.offset), None, None, None

    dropout_op.register_autograd(backward, setup_context=setup_context)
