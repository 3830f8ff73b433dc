"""Bench cases for GEMM (--op gemm) and Linear (--op linear). flops = 2 M N K
per GEMM; inputs are reused across calls (compute-bound: the caches do not
flatter a kernel that reads each operand O(N) times from cache anyway)."""

from __future__ import annotations

import functools

from .harness import Case, Workload, register


@functools.cache
def bf16_dot_peak_gflops() -> float | None:
    """vdpbf16ps peak of this machine's threads, None without AVX512_BF16
    (bf16 GEMM then runs on float32 FMAs and the fp32 peak applies)."""
    from .. import _C

    return _C.bf16_dot_peak_gflops(0.3) or None


def _square_sizes(quick: bool):
    return [1024, 2048] if quick else [256, 512, 1024, 2048]


def _linear_shapes(quick: bool):
    # (tokens, in_features, out_features); 64x256x256 shows the launch overhead.
    if quick:
        return [(512, 2048, 2048), (64, 256, 256)]
    return [(512, 1024, 1024), (512, 2048, 2048), (4096, 1024, 1024), (1024, 4096, 4096), (64, 256, 256)]


@register("gemm")
def gemm_cases(device: str, quick: bool):
    for dtype in ("float32", "bfloat16"):
        for n in _square_sizes(quick):
            yield Case("gemm", "matmul", "fwd", dtype, f"{n}x{n}x{n}", lambda n=n, d=dtype: _matmul(device, n, d))


@register("linear")
def linear_cases(device: str, quick: bool):
    for tokens, n_in, n_out in _linear_shapes(quick):
        shape = f"{tokens}x{n_in}x{n_out}"
        yield Case("linear", "linear", "fwd", "float32", shape,
                   lambda t=tokens, i=n_in, o=n_out: _linear_fwd(device, t, i, o))
        yield Case("linear", "linear", "bwd", "float32", shape,
                   lambda t=tokens, i=n_in, o=n_out: _linear_bwd(device, t, i, o))
    if device == "cpu":
        yield Case("linear", "linear", "call", "float32", "1x1x1", _linear_call)


def _matmul(device, n, dtype_name):
    import torch

    import fastnn
    from fastnn.testing import compare

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    c_fast, c_torch = torch.empty(n, n, dtype=dtype), torch.empty(n, n, dtype=dtype)
    numpy_run = None
    if dtype == torch.float32:
        import numpy as np

        a_np, b_np, c_np = a.numpy(), b.numpy(), c_torch.numpy().copy()
        numpy_run = lambda i: np.matmul(a_np, b_np, out=c_np)  # noqa: E731

    def accuracy():
        x, y = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        return compare(fastnn.matmul(x, y), x @ y, x.double() @ y.double())

    return Workload(
        fastnn=lambda i: fastnn.matmul(a, b, out=c_fast),
        torch=lambda i: torch.mm(a, b, out=c_torch),
        numpy=numpy_run,
        flops=2.0 * n**3, bytes=3.0 * n * n * dtype.itemsize, accuracy=accuracy,
        peak_gops=bf16_dot_peak_gflops() if dtype == torch.bfloat16 else None, peak_unit="GFLOP/s")


def _linear_fwd(device, tokens, n_in, n_out):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    x, w, b = torch.randn(tokens, n_in), torch.randn(n_out, n_in) / n_in**0.5, torch.randn(n_out)

    def torch_run(i):
        with torch.no_grad():
            return F.linear(x, w, b)

    def accuracy():
        return compare(fastnn.linear(x, w, b), F.linear(x, w, b), F.linear(x.double(), w.double(), b.double()))

    return Workload(
        fastnn=lambda i: fastnn.linear(x, w, b), torch=torch_run,
        flops=2.0 * tokens * n_in * n_out, bytes=4.0 * (tokens * n_in + n_in * n_out + tokens * n_out),
        accuracy=accuracy)


def _linear_call():
    """The cost of a call itself (Python, argument checks, output allocation,
    the binding): a 1 x 1 x 1 Linear, whose product is two FLOPs. Its ms
    column is the per-call overhead; torch's F.linear is timed the same way
    (plain tensors, no autograd)."""
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    x, w, b = torch.randn(1, 1), torch.randn(1, 1), torch.randn(1)

    def accuracy():
        return compare(fastnn.linear(x, w, b), F.linear(x, w, b), F.linear(x.double(), w.double(), b.double()))

    return Workload(fastnn=lambda i: fastnn.linear(x, w, b), torch=lambda i: F.linear(x, w, b), flops=2.0,
                    bytes=16.0, accuracy=accuracy)


def _linear_bwd(device, tokens, n_in, n_out):
    import torch

    import fastnn
    from fastnn.testing import compare

    x, w = torch.randn(tokens, n_in), torch.randn(n_out, n_in) / n_in**0.5
    g = torch.randn(tokens, n_out)

    def torch_run(i):  # what autograd runs for F.linear, without its bookkeeping
        return torch.mm(g, w), torch.mm(g.t(), x), g.sum(0)

    def accuracy():
        got = fastnn.linear_backward(g, x, w)
        refs = (g.double() @ w.double(), g.double().t() @ x.double(), g.double().sum(0))
        triples = [compare(o, t, r) for o, t, r in zip(got, torch_run(0), refs)]
        return max(triples, key=lambda t: (t[0] + t[2]) / (t[1] + t[2]))

    return Workload(
        fastnn=lambda i: fastnn.linear_backward(g, x, w), torch=torch_run,
        flops=4.0 * tokens * n_in * n_out,
        bytes=4.0 * (2 * tokens * n_in + 2 * n_in * n_out + tokens * n_out + n_out), accuracy=accuracy)
