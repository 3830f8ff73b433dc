"""Bench cases for softmax and log-softmax over the last dim (--op softmax).

Attention-like rows (1024) and vocabulary rows (32768), float32 and bfloat16,
as a user calls them (outputs allocated per call). torch at its best: the
forward under no_grad; the backward is aten's kernel on the same (grad_out,
y) (_softmax_backward_data / _log_softmax_backward_data), which is what its
autograd runs. Bytes: forward reads x and writes y, backward reads grad_out
and y and writes grad_in.
"""

from __future__ import annotations

from .harness import Case, Workload, register, rotations_for


def _shapes(quick: bool):
    return [(8192, 1024)] if quick else [(2048, 1024), (8192, 1024), (1024, 32768)]


@register("softmax")
def cases(device: str, quick: bool):
    for log in (False, True):
        op = "log_softmax" if log else "softmax"
        for dtype in ("float32", "bfloat16"):
            for rows, cols in _shapes(quick):
                shape = f"{rows}x{cols}"
                yield Case("softmax", op, "fwd", dtype, shape,
                           lambda r=rows, c=cols, d=dtype, lg=log: _forward(device, r, c, d, lg))
                yield Case("softmax", op, "bwd", dtype, shape,
                           lambda r=rows, c=cols, d=dtype, lg=log: _backward(device, r, c, d, lg))


def _torch_forward(x, log):
    return x.log_softmax(-1) if log else x.softmax(-1)


def _forward(device, rows, cols, dtype_name, log):
    import torch

    import fastnn
    from fastnn.testing import compare

    dtype = getattr(torch, dtype_name)
    nbytes = rows * cols * dtype.itemsize
    n = rotations_for(2 * nbytes)
    xs = [(4 * torch.randn(rows, cols, device=device)).to(dtype) for _ in range(n)]
    fast = fastnn.log_softmax if log else fastnn.softmax

    def torch_fwd(i):
        with torch.no_grad():
            return _torch_forward(xs[i % n], log)

    def accuracy():
        return compare(fast(xs[0]), torch_fwd(0), _torch_forward(xs[0].double(), log))

    return Workload(fastnn=lambda i: fast(xs[i % n]), torch=torch_fwd, bytes=2.0 * nbytes, rotations=n,
                    accuracy=accuracy)


def _backward(device, rows, cols, dtype_name, log):
    import torch

    import fastnn
    from fastnn.testing import compare

    dtype = getattr(torch, dtype_name)
    nbytes = rows * cols * dtype.itemsize
    n = rotations_for(3 * nbytes)
    sets = [(torch.randn(rows, cols, device=device).to(dtype),
             _torch_forward((4 * torch.randn(rows, cols, device=device)).to(dtype), log)) for _ in range(n)]
    fast = fastnn.log_softmax_backward if log else fastnn.softmax_backward
    kernel = torch.ops.aten._log_softmax_backward_data if log else torch.ops.aten._softmax_backward_data

    def accuracy():
        # The float64 reference takes the same rounded (grad_out, y): the
        # forward's rounding of y is common to both libraries.
        g, y = sets[0]
        return compare(fast(g, y), kernel(g, y, -1, dtype), kernel(g.double(), y.double(), -1, torch.float64))

    return Workload(fastnn=lambda i: fast(*sets[i % n]), torch=lambda i: kernel(*sets[i % n], -1, dtype),
                    bytes=3.0 * nbytes, rotations=n, accuracy=accuracy)
