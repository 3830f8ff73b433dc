"""Bench cases for LayerNorm and RMSNorm over the last dim (--op layernorm,rmsnorm).

Rows of 1024 elements, 512 to 16384 rows (1-64 MB per fp32 tensor), weight
(and LayerNorm's bias) in x's dtype. Every pass is timed twice:
  shape "R x C":       as a user calls it: outputs allocated per call, so
                       their page faults are part of the time;
  shape "R x C out=":  into preallocated outputs (rotated with the inputs,
                       so they are not in cache): the kernel alone, whose
                       roofline column is the fraction of the copy bandwidth.
torch at its best: forward F.layer_norm / F.rms_norm under no_grad (aten's
fused _fused_rms_norm is timed beside it as torch_fused_ms); LayerNorm
backward is aten's kernel native_layer_norm_backward; RMSNorm has no CPU
backward kernel in torch, so its backward is autograd through F.rms_norm. In
"out=" rows torch writes into preallocated outputs where aten has an out
variant (native_layer_norm[_backward].out; the functional call beside it as
torch_alloc_ms), else it is the same call as in the allocating row.
Bytes are the minimum traffic: each (R, C) tensor once, the parameters, their
gradients and the float32 row statistics.
"""

from __future__ import annotations

from .harness import Case, Workload, register, rotations_for

_COLS = 1024


def _rows(quick: bool):
    return [8192] if quick else [512, 2048, 8192, 16384]


def _register(family: str, kind: str):
    @register(family)
    def cases(device: str, quick: bool):
        op = "layer_norm" if kind == "layer" else "rms_norm"
        for dtype in ("float32", "bfloat16"):
            for rows in _rows(quick):
                for prealloc in (False, True):
                    shape = f"{rows}x{_COLS}{' out=' if prealloc else ''}"
                    for pass_, build in (("fwd", _forward), ("bwd", _backward)):
                        yield Case(family, op, pass_, dtype, shape,
                                   lambda b=build, r=rows, d=dtype, o=prealloc: b(kind, device, r, d, o))
    return cases


_register("layernorm", "layer")
_register("rmsnorm", "rms")


def _vectors(kind: str) -> int:
    """Parameter vectors (weight, bias) and float32 statistics per row (mean,
    rstd): two each for LayerNorm, one for RMSNorm."""
    return 2 if kind == "layer" else 1


def _inputs(kind, device, rows, dtype, n):
    import torch

    def make():
        x = torch.randn(rows, _COLS, device=device).to(dtype)
        w = (1 + 0.1 * torch.randn(_COLS, device=device)).to(dtype)
        b = (0.1 * torch.randn(_COLS, device=device)).to(dtype) if kind == "layer" else None
        dy = torch.randn(rows, _COLS, device=device).to(dtype)
        return x, w, b, dy

    return [make() for _ in range(n)]


def _torch_forward(kind, x, w, b):
    import torch.nn.functional as F

    if kind == "layer":
        return F.layer_norm(x, (x.shape[-1],), w, b)
    return F.rms_norm(x, (x.shape[-1],), w)


def _fastnn_forward(kind, x, w, b, out=None):
    import fastnn

    if kind == "layer":
        return fastnn.layer_norm(x, x.shape[-1], w, b, out=out)
    return fastnn.rms_norm(x, x.shape[-1], w, out=out)


def _double(t):
    return None if t is None else t.double()


def _forward(kind, device, rows, dtype_name, prealloc):
    import torch

    from fastnn.testing import compare

    dtype = getattr(torch, dtype_name)
    size = dtype.itemsize
    tensor_bytes = rows * _COLS * size
    nbytes = 2.0 * tensor_bytes + _vectors(kind) * (_COLS * size + 4.0 * rows)
    n = rotations_for(2 * tensor_bytes)
    sets = _inputs(kind, device, rows, dtype, n)
    outs = [torch.empty_like(s[0]) for s in sets] if prealloc else None

    def torch_fwd(i):
        with torch.no_grad():
            return _torch_forward(kind, *sets[i % n][:3])

    backends = {}
    if kind == "rms":
        fused = torch.ops.aten._fused_rms_norm
        backends["fused"] = lambda i: fused(sets[i % n][0], [_COLS], sets[i % n][1], None)
    torch_best = torch_fwd
    if prealloc and kind == "layer":
        # Buffers like the statistics aten returns (their dtype follows x's and weight's).
        stats = [tuple(torch.empty_like(t) for t in torch.native_layer_norm(x, [_COLS], w, b, 1e-5)[1:])
                 for x, w, b, _ in sets]
        native_out = torch.ops.aten.native_layer_norm.out

        def torch_best(i):
            x, w, b, _ = sets[i % n]
            return native_out(x, [_COLS], w, b, 1e-5, out0=outs[i % n], out1=stats[i % n][0],
                              out2=stats[i % n][1])

        backends["alloc"] = torch_fwd

    def accuracy():
        x, w, b, _ = sets[0]
        return compare(_fastnn_forward(kind, x, w, b), torch_fwd(0),
                       _torch_forward(kind, x.double(), _double(w), _double(b)))

    return Workload(
        fastnn=lambda i: _fastnn_forward(kind, *sets[i % n][:3], out=outs[i % n] if prealloc else None),
        torch=torch_best, torch_backends=backends, bytes=nbytes, rotations=n, accuracy=accuracy)


def _worst(errors):
    """The (fastnn, torch, floor) triple with the largest error ratio."""
    return max(errors, key=lambda e: (e[0] + e[2]) / (e[1] + e[2]))


def _backward(kind, device, rows, dtype_name, prealloc):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    dtype = getattr(torch, dtype_name)
    size = dtype.itemsize
    tensor_bytes = rows * _COLS * size
    # dy, x read, dx written; weight read; parameter gradients written; stats read.
    nbytes = 3.0 * tensor_bytes + (1 + _vectors(kind)) * _COLS * size + _vectors(kind) * 4.0 * rows
    n = rotations_for(3 * tensor_bytes)
    sets = _inputs(kind, device, rows, dtype, n)
    outs = [torch.empty_like(s[0]) for s in sets] if prealloc else None
    backends = {}

    if kind == "layer":
        fast_stats = [fastnn.layer_norm(x, _COLS, w, b, return_stats=True)[1:] for x, w, b, _ in sets]
        torch_stats = [torch.native_layer_norm(x, [_COLS], w, b, 1e-5)[1:] for x, w, b, _ in sets]
        native = torch.ops.aten.native_layer_norm_backward

        def fast_bwd(i):
            x, w, b, dy = sets[i % n]
            mean, rstd = fast_stats[i % n]
            return fastnn.layer_norm_backward(dy, x, mean, rstd, w, b, out=outs[i % n] if prealloc else None)

        def torch_bwd(i):
            x, w, b, dy = sets[i % n]
            return native(dy, x, [_COLS], *torch_stats[i % n], w, b, [True, True, True])

        torch_best = torch_bwd
        if prealloc:
            param_grads = [(torch.empty_like(w), torch.empty_like(b)) for _, w, b, _ in sets]

            def torch_best(i):
                x, w, b, dy = sets[i % n]
                dw, db = param_grads[i % n]
                return native.out(dy, x, [_COLS], *torch_stats[i % n], w, b, [True, True, True],
                                  out0=outs[i % n], out1=dw, out2=db)

            backends["alloc"] = torch_bwd

        def accuracy():
            x, w, b, dy = sets[0]
            x64, w64, b64 = x.double(), w.double(), b.double()
            ref = native(dy.double(), x64, [_COLS], *torch.native_layer_norm(x64, [_COLS], w64, b64, 1e-5)[1:],
                         w64, b64, [True, True, True])
            return _worst([compare(a, t, r) for a, t, r in zip(fast_bwd(0), torch_bwd(0), ref)])
    else:
        fast_stats = [fastnn.rms_norm(x, _COLS, w, return_stats=True)[1] for x, w, _, _ in sets]

        def graph(x, w):
            leaves = (x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_())
            return F.rms_norm(leaves[0], (_COLS,), leaves[1]), leaves

        graphs = [graph(x, w) for x, w, _, _ in sets]

        def fast_bwd(i):
            x, w, _, dy = sets[i % n]
            return fastnn.rms_norm_backward(dy, x, fast_stats[i % n], w, out=outs[i % n] if prealloc else None)

        def torch_bwd(i):
            out, leaves = graphs[i % n]
            return torch.autograd.grad(out, leaves, sets[i % n][3], retain_graph=True)

        torch_best = torch_bwd

        def accuracy():
            x, w, _, dy = sets[0]
            out64, leaves64 = graph(x.double(), w.double())
            ref = torch.autograd.grad(out64, leaves64, dy.double())
            return _worst([compare(a, t, r) for a, t, r in zip(fast_bwd(0), torch_bwd(0), ref)])

    return Workload(fastnn=fast_bwd, torch=torch_best, torch_backends=backends, bytes=nbytes, rotations=n,
                    accuracy=accuracy)
