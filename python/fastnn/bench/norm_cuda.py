"""Bench cases for LayerNorm / RMSNorm on CUDA (--op norm_cuda --device cuda).

16384 x 4096 in bf16 and fp32, forward and backward, then a sweep of hidden
sizes 256..16384 at 64M elements (bf16). fastnn's kernels are called
directly into preallocated outputs; torch is F.layer_norm / F.rms_norm and,
backward, autograd.grad over a retained graph (its fused CUDA kernels
either way). Bytes are the floor: forward reads x and writes y (+ 8 bytes
of statistics per row), backward reads grad_out and x and writes grad_x."""

from __future__ import annotations

from .harness import Case, Workload, register

_MAIN = (16384, 4096)
_SWEEP_ELEMENTS = 1 << 26


def _shapes(quick: bool):
    yield "bfloat16", _MAIN
    if quick:
        return
    yield "float32", _MAIN
    for hidden in (256, 512, 1024, 2048, 8192, 16384):
        yield "bfloat16", (_SWEEP_ELEMENTS // hidden, hidden)


@register("norm_cuda")
def cases(device: str, quick: bool):
    if device != "cuda":
        return
    for dtype, (rows, hidden) in _shapes(quick):
        for kind in ("layer", "rms"):
            for pass_, build in (("fwd", _forward), ("bwd", _backward)):
                yield Case("norm_cuda", f"{kind}_norm", pass_, dtype, f"{rows}x{hidden}",
                           lambda k=kind, r=rows, h=hidden, d=dtype, b=build: b(k, r, h, d))


def _stream():
    import torch

    return torch.cuda.current_stream().cuda_stream


def _inputs(rows, hidden, dtype):
    import torch

    dt = getattr(torch, dtype)
    x = torch.randn(rows, hidden, device="cuda").to(dt)
    w = torch.randn(hidden, device="cuda").to(dt)
    b = torch.randn(hidden, device="cuda").to(dt)
    return x, w, b


def _torch_forward(kind, x, w, b):
    import torch.nn.functional as F

    n = x.shape[-1:]
    return F.layer_norm(x, n, w, b, 1e-5) if kind == "layer" else F.rms_norm(x, n, w, 1e-5)


def _fastnn_forward(kind, x, w, b, y, mean, rstd):
    from .._backend import cuda_kernels

    if kind == "layer":
        cuda_kernels().layer_norm_forward(x, w, b, 1e-5, y, mean, rstd, _stream())
    else:
        cuda_kernels().rms_norm_forward(x, w, 1e-5, y, rstd, _stream())


def _stats(rows):
    import torch

    return torch.empty(rows, device="cuda"), torch.empty(rows, device="cuda")


def _accuracy(kind, hidden, dtype, backward):
    """(fastnn, torch, floor) errors on 256 rows against float64 torch."""
    import torch

    from ..testing import compare

    x, w, b = _inputs(256, hidden, dtype)
    b = b if kind == "layer" else None
    y, (mean, rstd) = torch.empty_like(x), _stats(256)
    _fastnn_forward(kind, x, w, b, y, mean, rstd)
    if not backward:
        return compare(y, _torch_forward(kind, x, w, b), _torch_forward(kind, x.double(), w.double(),
                                                                        None if b is None else b.double()))
    g = torch.randn_like(x)
    dx = torch.empty_like(x)
    db = None if b is None else torch.empty_like(b)
    _fastnn_backward(kind, g, x, mean, rstd, w, b, dx, torch.empty_like(w), db)
    leaves = [x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()]
    leaves64 = [x.double().requires_grad_(), w.double().requires_grad_()]
    theirs = torch.autograd.grad(_torch_forward(kind, *leaves, b), leaves[0], g)[0]
    ref = torch.autograd.grad(_torch_forward(kind, *leaves64, None if b is None else b.double()), leaves64[0],
                              g.double())[0]
    return compare(dx, theirs, ref)


def _fastnn_backward(kind, g, x, mean, rstd, w, b, dx, dw, db):
    from .._backend import cuda_kernels

    if kind == "layer":
        cuda_kernels().layer_norm_backward(g, x, mean, rstd, w, dx, dw, db, _stream())
    else:
        cuda_kernels().rms_norm_backward(g, x, rstd, w, dx, dw, _stream())


def _forward(kind, rows, hidden, dtype):
    import torch

    x, w, b = _inputs(rows, hidden, dtype)
    b = b if kind == "layer" else None
    y, (mean, rstd) = torch.empty_like(x), _stats(rows)
    return Workload(
        fastnn=lambda _i: _fastnn_forward(kind, x, w, b, y, mean, rstd),
        torch=lambda _i: _torch_forward(kind, x, w, b),
        bytes=2.0 * x.numel() * x.element_size() + rows * (8 if kind == "layer" else 4),
        accuracy=lambda: _accuracy(kind, hidden, dtype, backward=False))


def _backward(kind, rows, hidden, dtype):
    import torch

    x, w, b = _inputs(rows, hidden, dtype)
    b = b if kind == "layer" else None
    y, (mean, rstd) = torch.empty_like(x), _stats(rows)
    _fastnn_forward(kind, x, w, b, y, mean, rstd)
    g = torch.randn_like(x)
    dx, dw = torch.empty_like(x), torch.empty_like(w)
    db = None if b is None else torch.empty_like(b)
    leaves = [t.detach().clone().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    graph_out = _torch_forward(kind, leaves[0], leaves[1], leaves[2] if b is not None else None)
    return Workload(
        fastnn=lambda _i: _fastnn_backward(kind, g, x, mean, rstd, w, b, dx, dw, db),
        torch=lambda _i: torch.autograd.grad(graph_out, leaves, g, retain_graph=True),
        bytes=3.0 * x.numel() * x.element_size() + rows * (8 if kind == "layer" else 4),
        accuracy=lambda: _accuracy(kind, hidden, dtype, backward=True))
