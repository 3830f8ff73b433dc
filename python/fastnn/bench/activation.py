"""Bench cases for the activation family (--op activations): every activation
forward and backward, and dropout, in float32 and bfloat16.

Memory-bound: the minimum traffic is one read of each input and one write of
the output (forward: x -> y; backward: grad_out and the saved tensor ->
grad_in). torch's side is the aten op autograd itself would run, called
directly so its bookkeeping is not timed (threshold_backward for relu,
gelu_backward, silu_backward, sigmoid_backward, tanh_backward)."""

from __future__ import annotations

from .harness import Case, Workload, register, rotations_for

# name -> (fastnn forward kwargs, backward reads the forward's output).
_ACTIVATIONS = {
    "relu": ({}, True),
    "gelu": ({"approximate": "none"}, False),
    "gelu_tanh": ({"approximate": "tanh"}, False),
    "silu": ({}, False),
    "sigmoid": ({}, True),
    "tanh": ({}, True),
}
_DROPOUT_P = 0.1


def _shapes(quick: bool):
    # (rows, cols): 16 MB fp32 is the representative mid size.
    return [(4096, 1024)] if quick else [(256, 256), (1024, 1024), (4096, 1024), (16384, 4096)]


@register("activations")
def cases(device: str, quick: bool):
    import torch

    for dtype in ("float32", "bfloat16"):
        for rows, cols in _shapes(quick):
            shape = f"{rows}x{cols}"
            for name in (*_ACTIVATIONS, "dropout"):
                for backward in (False, True):
                    yield Case("activations", name, "bwd" if backward else "fwd", dtype, shape,
                               lambda n=name, r=rows, c=cols, d=dtype, b=backward:
                               _workload(n, device, r, c, getattr(torch, d), b))


def _torch_ops(name):
    """(forward(x), backward(grad, saved)) as torch runs them."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    return {
        "relu": (torch.relu, lambda g, y: aten.threshold_backward(g, y, 0)),
        "gelu": (F.gelu, lambda g, x: aten.gelu_backward(g, x)),
        "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda g, x: aten.gelu_backward(g, x, approximate="tanh")),
        "silu": (F.silu, aten.silu_backward),
        "sigmoid": (torch.sigmoid, aten.sigmoid_backward),
        "tanh": (torch.tanh, aten.tanh_backward),
    }[name]


def _fastnn_ops(name):
    import fastnn

    if name.startswith("gelu"):
        kw = _ACTIVATIONS[name][0]
        return (lambda x: fastnn.gelu(x, **kw)), (lambda g, s: fastnn.gelu_backward(g, s, **kw))
    return getattr(fastnn, name), getattr(fastnn, name + "_backward")


def _workload(name, device, rows, cols, dtype, backward):
    if name == "dropout":
        return _dropout(device, rows, cols, dtype, backward)
    import torch

    from fastnn.testing import compare

    nbytes = rows * cols * dtype.itemsize
    moved = (3 if backward else 2) * nbytes
    n = rotations_for(moved)
    torch_fwd, torch_bwd = _torch_ops(name)
    fast_fwd, fast_bwd = _fastnn_ops(name)
    saves_output = _ACTIVATIONS[name][1]

    def fresh():
        x = torch.randn(rows, cols, device=device)
        return x.to(dtype), torch.randn(rows, cols, device=device).to(dtype)

    def saved_of(x):
        return torch_fwd(x) if saves_output else x

    sets = [fresh() for _ in range(n)]
    if backward:
        sets = [(g, saved_of(x)) for x, g in sets]

    def accuracy():
        x, g = fresh()
        x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0])
        if not backward:
            return compare(fast_fwd(x), torch_fwd(x), torch_fwd(x.double()))
        s = saved_of(x)
        return compare(fast_bwd(g, s), torch_bwd(g, s), torch_bwd(g.double(), s.double()))

    numpy_run = None
    if name == "relu" and not backward and device == "cpu" and dtype == torch.float32:
        import numpy as np

        arrays = [x.numpy() for x, _ in sets]
        numpy_run = lambda i: np.maximum(arrays[i % n], 0)  # noqa: E731

    if backward:
        return Workload(fastnn=lambda i: fast_bwd(*sets[i % n]), torch=lambda i: torch_bwd(*sets[i % n]),
                        bytes=moved, rotations=n, accuracy=accuracy)

    def torch_run(i):
        with torch.no_grad():
            return torch_fwd(sets[i % n][0])

    return Workload(fastnn=lambda i: fast_fwd(sets[i % n][0]), torch=torch_run, numpy=numpy_run,
                    bytes=moved, rotations=n, accuracy=accuracy)


def _dropout(device, rows, cols, dtype, backward):
    """Forward: torch writes its mask (a bool tensor) to replay it; fastnn
    regenerates its mask from the seed, so it reads x and writes y only.
    Backward: torch multiplies by the saved mask and scale (what autograd's
    native_dropout_backward runs); fastnn regenerates the mask."""
    import torch

    import fastnn
    from fastnn.testing import compare

    nbytes = rows * cols * dtype.itemsize
    moved = 2 * nbytes
    n = rotations_for(moved)
    xs = [torch.randn(rows, cols, device=device).to(dtype) for _ in range(n)]
    scale = 1.0 / (1.0 - _DROPOUT_P)

    def accuracy():
        # The mask is fastnn's (seed 7); what is compared is the scaling of
        # the kept elements: torch applies the same mask in the working
        # precision, the reference in float64.
        x = torch.randn(rows, cols, device=device).to(dtype)
        keep = fastnn.dropout(torch.ones_like(x), _DROPOUT_P, seed=7) != 0
        fast = fastnn.dropout_backward(x, _DROPOUT_P, seed=7) if backward else fastnn.dropout(x, _DROPOUT_P, seed=7)
        return compare(fast, torch.ops.aten.native_dropout_backward(x, keep, scale),
                       x.double() * keep * scale)

    if backward:
        masks = [torch.rand(rows, cols, device=device) >= _DROPOUT_P for _ in range(n)]
        return Workload(
            fastnn=lambda i: fastnn.dropout_backward(xs[i % n], _DROPOUT_P, seed=i, offset=0),
            torch=lambda i: torch.ops.aten.native_dropout_backward(xs[i % n], masks[i % n], scale),
            bytes=moved, rotations=n, accuracy=accuracy)

    def torch_run(i):
        with torch.no_grad():
            return torch.ops.aten.native_dropout(xs[i % n], _DROPOUT_P, True)

    return Workload(fastnn=lambda i: fastnn.dropout(xs[i % n], _DROPOUT_P, seed=i), torch=torch_run,
                    bytes=moved, rotations=n, accuracy=accuracy)
