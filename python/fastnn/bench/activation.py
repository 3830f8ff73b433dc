"""Bench cases for the activation family (--op activations)."""

from __future__ import annotations

from .harness import Case, Workload, register, rotations_for


def _shapes(quick: bool):
    # (rows, cols): 16 MB fp32 is the representative mid size.
    return [(4096, 1024)] if quick else [(256, 256), (1024, 1024), (4096, 1024), (16384, 4096)]


@register("activations")
def cases(device: str, quick: bool):
    import torch

    for dtype in ("float32", "bfloat16"):
        for rows, cols in _shapes(quick):
            shape = f"{rows}x{cols}"
            yield Case("activations", "relu", "fwd", dtype, shape,
                       lambda r=rows, c=cols, d=dtype: _relu_fwd(device, r, c, getattr(torch, d)))
            yield Case("activations", "relu", "bwd", dtype, shape,
                       lambda r=rows, c=cols, d=dtype: _relu_bwd(device, r, c, getattr(torch, d)))


def _relu_fwd(device, rows, cols, dtype):
    import numpy as np
    import torch

    import fastnn
    from fastnn.testing import compare

    nbytes = rows * cols * dtype.itemsize
    n = rotations_for(2 * nbytes)
    xs = [torch.randn(rows, cols, device=device).to(dtype) for _ in range(n)]
    xs_np = [x.numpy() for x in xs] if device == "cpu" and dtype == torch.float32 else None

    def accuracy():
        x = torch.randn(rows, cols, device=device).to(dtype)
        x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0])
        return compare(fastnn.relu(x), torch.relu(x), torch.relu(x.double()))

    return Workload(
        fastnn=lambda i: fastnn.relu(xs[i % n]),
        torch=lambda i: torch.relu(xs[i % n]),
        numpy=(lambda i: np.maximum(xs_np[i % n], 0)) if xs_np else None,
        bytes=2 * nbytes, rotations=n, accuracy=accuracy)


def _relu_bwd(device, rows, cols, dtype):
    import torch

    import fastnn
    from fastnn.testing import compare

    nbytes = rows * cols * dtype.itemsize
    n = rotations_for(3 * nbytes)
    gs = [torch.randn(rows, cols, device=device).to(dtype) for _ in range(n)]
    ys = [torch.relu(torch.randn(rows, cols, device=device)).to(dtype) for _ in range(n)]
    threshold_backward = torch.ops.aten.threshold_backward

    def accuracy():
        g = torch.randn(rows, cols, device=device).to(dtype)
        y = torch.relu(torch.randn(rows, cols, device=device)).to(dtype)
        return compare(fastnn.relu_backward(g, y), threshold_backward(g, y, 0),
                       threshold_backward(g.double(), y.double(), 0))

    return Workload(
        fastnn=lambda i: fastnn.relu_backward(gs[i % n], ys[i % n]),
        torch=lambda i: threshold_backward(gs[i % n], ys[i % n], 0),
        bytes=3 * nbytes, rotations=n, accuracy=accuracy)
