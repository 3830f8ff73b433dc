"""Bench cases for the fused cross-entropy and softmax on CUDA
(--op cross_entropy_cuda, --op softmax_cuda; --device cuda).

Cross-entropy at 16384 rows of a 128k vocabulary in bf16 (4.3 GB of
logits), forward + backward as one training step computes them: fastnn's
forward (one read of the logits, statistics out) then its backward (one
more read, dlogits written), against F.cross_entropy and autograd.grad.
Bytes: 3 N C elements (two reads and one write of the logits' size).
Softmax: forward and backward at 16384 x 4096 and 4096 x 32768."""

from __future__ import annotations

from .harness import Case, Workload, register


def _stream():
    import torch

    return torch.cuda.current_stream().cuda_stream


@register("cross_entropy_cuda")
def cross_entropy_cases(device: str, quick: bool):
    if device != "cuda":
        return
    shapes = [(16384, 131072)] if quick else [(16384, 32768), (16384, 131072), (4096, 262144)]
    for rows, vocab in shapes:
        yield Case("cross_entropy_cuda", "cross_entropy", "fwd+bwd", "bfloat16", f"{rows}x{vocab}",
                   lambda r=rows, v=vocab: _cross_entropy(r, v))


def _ce_step(kernels, x, t, loss, stats, grad_loss, dx):
    s = _stream()
    kernels.cross_entropy_forward(x, t, loss, stats, "mean", -100, 0.0, s)
    kernels.cross_entropy_backward(x, t, stats, grad_loss, dx, "mean", -100, 0.0, s)


def _cross_entropy(rows, vocab):
    import torch
    import torch.nn.functional as F

    from .._backend import cuda_kernels
    from ..testing import compare

    kernels = cuda_kernels()
    x = torch.randn(rows, vocab, device="cuda", dtype=torch.bfloat16)
    t = torch.randint(0, vocab, (rows,), device="cuda")
    loss = torch.empty((), device="cuda", dtype=torch.bfloat16)
    stats = torch.empty(rows, 2, device="cuda", dtype=torch.float64)
    grad_loss, dx = torch.ones((), device="cuda", dtype=torch.bfloat16), torch.empty_like(x)
    leaf = x.detach().requires_grad_()

    def torch_step(_i):
        return torch.autograd.grad(F.cross_entropy(leaf, t), leaf)

    def accuracy():
        small, ts = x[:64], t[:64]
        grad = torch.empty_like(small)
        _ce_step(kernels, small, ts, loss, stats[:64], grad_loss, grad)
        leaf64 = small.double().requires_grad_()
        ref = torch.autograd.grad(F.cross_entropy(leaf64, ts), leaf64)[0]
        leaf16 = small.detach().requires_grad_()
        theirs = torch.autograd.grad(F.cross_entropy(leaf16, ts), leaf16)[0]
        return compare(grad, theirs, ref)

    return Workload(fastnn=lambda _i: _ce_step(kernels, x, t, loss, stats, grad_loss, dx), torch=torch_step,
                    bytes=3.0 * x.numel() * x.element_size() + rows * 16, accuracy=accuracy)


@register("softmax_cuda")
def softmax_cases(device: str, quick: bool):
    if device != "cuda":
        return
    shapes = [(16384, 4096)] if quick else [(16384, 4096), (4096, 32768)]
    for dtype in ("bfloat16", "float32"):
        for rows, cols in shapes:
            for pass_ in ("fwd", "bwd"):
                yield Case("softmax_cuda", "softmax", pass_, dtype, f"{rows}x{cols}",
                           lambda r=rows, c=cols, d=dtype, p=pass_: _softmax(r, c, d, p == "bwd"))


def _softmax(rows, cols, dtype, backward):
    import torch

    from .._backend import cuda_kernels
    from ..testing import compare

    kernels = cuda_kernels()
    dt = getattr(torch, dtype)
    x = torch.randn(rows, cols, device="cuda").to(dt)
    y = torch.softmax(x, -1)
    g = torch.randn_like(x)
    out = torch.empty_like(x)

    def accuracy():
        xs, gs, ys = x[:256], g[:256], y[:256]
        got = torch.empty_like(xs)
        if not backward:
            kernels.softmax_forward(xs, got, _stream())
            return compare(got, torch.softmax(xs, -1), torch.softmax(xs.double(), -1))
        kernels.softmax_backward(gs, ys, got, _stream())
        return compare(got, torch._softmax_backward_data(gs, ys, -1, dt),
                       torch._softmax_backward_data(gs.double(), ys.double(), -1, torch.float64))

    if backward:
        return Workload(fastnn=lambda _i: kernels.softmax_backward(g, y, out, _stream()),
                        torch=lambda _i: torch._softmax_backward_data(g, y, -1, dt),
                        bytes=3.0 * x.numel() * x.element_size(), accuracy=accuracy)
    return Workload(fastnn=lambda _i: kernels.softmax_forward(x, out, _stream()),
                    torch=lambda _i: torch.softmax(x, -1),
                    bytes=2.0 * x.numel() * x.element_size(), accuracy=accuracy)
