"""Bench cases for fastnn's fused CUDA attention (--op attention_cuda --device
cuda): forward and backward at 16k tokens per batch and model dim 2048, the
setting of FlashAttention's published figures, against torch's default SDPA
(cuDNN on H100 with torch >= 2.5), its flash backend (torch_flash_ms) and its
cuDNN backend (torch_cudnn_ms). fastnn's kernels are called directly, on
preallocated outputs; torch's backward is timed as autograd.grad over a
retained graph. Causal runs count half the FLOPs (the skipped tiles)."""

from __future__ import annotations

from .harness import Case, Workload, register

TOKENS = 16384
MODEL_DIM = 2048


def _shapes(quick: bool):
    seqlens = [4096] if quick else [1024, 2048, 4096, 8192, 16384]
    for head_dim in (64, 128):
        for s in seqlens:
            yield TOKENS // s, s, MODEL_DIM // head_dim, head_dim


@register("attention_cuda")
def cases(device: str, quick: bool):
    if device != "cuda":
        return
    for b, s, h, d in _shapes(quick):
        for causal in (False, True):
            shape = f"B{b} S{s} H{h} D{d}" + (" causal" if causal else "")
            for pass_, build in (("fwd", _forward), ("bwd", _backward)):
                yield Case("attention_cuda", "attention", pass_, "bfloat16", shape,
                           lambda b=b, s=s, h=h, d=d, c=causal, f=build: f(b, s, h, d, c))


def _flops(b, s, h, d, causal, passes):
    # Two matrix products of 2·S²·D per head forward, five backward.
    return passes * 2.0 * b * h * s * s * d * (0.5 if causal else 1.0)


def _inputs(b, s, h, d, requires_grad=False):
    import torch

    # (B, S, H, D) storage: torch's fused kernels read its (B, H, S, D) view in place too.
    return [torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16).requires_grad_(requires_grad)
            for _ in range(3)]


def _torch_sdpa(backend, q, k, v, causal):
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    def run():
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              is_causal=causal).transpose(1, 2)
    if backend is None:
        return run()
    with sdpa_kernel([backend]):
        return run()


def _backends():
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def _fastnn_forward(q, k, v, out, lse, causal):
    import torch

    from .. import _backend

    _backend.cuda_kernels().flash_attention_forward(q, k, v, out, lse, causal=causal,
                                              stream=torch.cuda.current_stream().cuda_stream)


def _accuracy(b, s, h, d, causal, backward):
    """Worst (fastnn error, torch error, floor) over the outputs at one batch of
    two heads and at most 4096 tokens (the float64 reference materializes S²),
    against float64 SDPA."""
    import torch

    from .. import _backend
    from ..testing import compare

    small_b, small_h, s = 1, 2, min(s, 4096)
    q, k, v = _inputs(small_b, s, small_h, d)
    out = torch.empty_like(q)
    lse = torch.empty(small_b, small_h, s, device="cuda")
    _fastnn_forward(q, k, v, out, lse, causal)
    leaves64 = [t.double().requires_grad_() for t in (q, k, v)]
    ref = _torch_sdpa(None, *leaves64, causal)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    theirs = _torch_sdpa(None, *leaves, causal)
    if not backward:
        return compare(out, theirs, ref)
    dout = torch.randn_like(out)
    ref_grads = torch.autograd.grad(ref, leaves64, dout.double())
    their_grads = torch.autograd.grad(theirs, leaves, dout)
    grads = [torch.empty_like(t) for t in (q, k, v)]
    kernels = _backend.cuda_kernels()
    workspace = torch.empty(kernels.flash_attention_backward_workspace_size(q), dtype=torch.uint8, device="cuda")
    kernels.flash_attention_backward(q, k, v, out, dout, lse, *grads, workspace, causal=causal,
                               stream=torch.cuda.current_stream().cuda_stream)
    results = [compare(g, tg, rg) for g, tg, rg in zip(grads, their_grads, ref_grads)]
    return max(results, key=lambda r: (r[0] + r[2]) / (r[1] + r[2]))


def _forward(b, s, h, d, causal):
    import torch

    q, k, v = _inputs(b, s, h, d)
    out = torch.empty_like(q)
    lse = torch.empty(b, h, s, device="cuda")

    def torch_run(backend):
        def run(_i):
            with torch.no_grad():
                return _torch_sdpa(backend, q, k, v, causal)
        return run

    return Workload(
        fastnn=lambda _i: _fastnn_forward(q, k, v, out, lse, causal),
        torch=torch_run(None),
        torch_backends={name: torch_run(backend) for name, backend in _backends().items()},
        flops=_flops(b, s, h, d, causal, 2), bytes=4 * q.numel() * 2 + lse.numel() * 4,
        accuracy=lambda: _accuracy(b, s, h, d, causal, backward=False))


def _backward(b, s, h, d, causal):
    import torch

    from .. import _backend

    q, k, v = _inputs(b, s, h, d)
    out = torch.empty_like(q)
    lse = torch.empty(b, h, s, device="cuda")
    _fastnn_forward(q, k, v, out, lse, causal)
    dout = torch.randn_like(q)
    grads = [torch.empty_like(t) for t in (q, k, v)]
    kernels = _backend.cuda_kernels()
    workspace = torch.empty(kernels.flash_attention_backward_workspace_size(q), dtype=torch.uint8, device="cuda")

    def fastnn_run(_i):
        kernels.flash_attention_backward(q, k, v, out, dout, lse, *grads, workspace, causal=causal,
                                   stream=torch.cuda.current_stream().cuda_stream)

    def torch_run(backend):
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        graph_out = _torch_sdpa(backend, *leaves, causal)  # the backend is fixed at forward time
        return lambda _i: torch.autograd.grad(graph_out, leaves, dout, retain_graph=True)

    return Workload(
        fastnn=fastnn_run,
        torch=torch_run(None),
        torch_backends={name: torch_run(backend) for name, backend in _backends().items()},
        flops=_flops(b, s, h, d, causal, 5), bytes=8 * q.numel() * 2 + lse.numel() * 4,
        accuracy=lambda: _accuracy(b, s, h, d, causal, backward=True))
