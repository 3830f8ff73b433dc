"""Bench cases for fused attention (--op attention): B1 H8, S 512-4096,
D 64 and 128, causal and not; forward (torch under no_grad, its flash CPU
kernel) and backward (autograd on both sides). Causal FLOPs count only the
unmasked half. The largest forward case also reports the forward pass's
peak memory growth at S = 4096, 8192 and 16384 (measured as the change of
ru_maxrss in a fresh process), which must grow linearly in S."""

from __future__ import annotations

import subprocess
import sys

from .harness import Case, Workload, register

_PROBE = """
import resource, sys, torch, fastnn
torch.set_num_threads({threads})
S, lib = {S}, "{lib}"
q, k, v = (torch.randn(1, 8, S, 64) for _ in range(3))
f = fastnn.scaled_dot_product_attention if lib == "fastnn" else torch.nn.functional.scaled_dot_product_attention
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    f(q, k, v, is_causal=True)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def peak_memory_mib(lib: str, S: int) -> float:
    """Peak resident-memory growth (MiB) of one causal forward pass at
    B1 H8 D64, beyond the inputs, in a fresh process."""
    import fastnn

    code = _PROBE.format(threads=fastnn.get_num_threads(), S=S, lib=lib)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _sizes(quick: bool):
    if quick:
        return [(1024, 64), (1024, 128)]
    return [(S, D) for D in (64, 128) for S in (512, 1024, 2048, 4096)]


@register("attention")
def cases(device: str, quick: bool):
    for S, D in _sizes(quick):
        for causal in (False, True):
            shape = f"B1 H8 S{S} D{D}{' causal' if causal else ''}"
            memory = not quick and (S, D, causal) == (4096, 64, True)
            yield Case("attention", "sdpa", "fwd", "float32", shape,
                       lambda S=S, D=D, c=causal, m=memory: _forward(S, D, c, m))
            yield Case("attention", "sdpa", "bwd", "float32", shape,
                       lambda S=S, D=D, c=causal: _backward(S, D, c))


def _flops(S, D, causal):
    return 4.0 * 8 * S * S * D * (0.5 if causal else 1.0)


def _inputs(S, D, n=2):
    import torch

    return [[torch.randn(1, 8, S, D) for _ in range(3)] for _ in range(n)]


def _forward(S, D, causal, memory):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    sets = _inputs(S, D)

    def torch_fwd(i):
        with torch.no_grad():
            return F.scaled_dot_product_attention(*sets[i % 2], is_causal=causal)

    def accuracy():
        q, k, v = sets[0]
        ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal)
        return compare(fastnn.scaled_dot_product_attention(q, k, v, is_causal=causal), torch_fwd(0), ref)

    extra = {}
    if memory:
        for s in (4096, 8192, 16384):
            extra[f"fwd_peak_mem_S{s}_fastnn_MiB"] = peak_memory_mib("fastnn", s)
        extra["fwd_peak_mem_S16384_torch_MiB"] = peak_memory_mib("torch", 16384)
    return Workload(
        fastnn=lambda i: fastnn.scaled_dot_product_attention(*sets[i % 2], is_causal=causal),
        torch=torch_fwd, flops=_flops(S, D, causal), bytes=4.0 * 4 * 8 * S * D, rotations=2,
        accuracy=accuracy, extra=extra)


def _backward(S, D, causal):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    def graph(fn):
        q, k, v = (torch.randn(1, 8, S, D).requires_grad_() for _ in range(3))
        out = fn(q, k, v, is_causal=causal)
        return out, (q, k, v), torch.randn_like(out)

    ours, theirs = graph(fastnn.scaled_dot_product_attention), graph(F.scaled_dot_product_attention)

    def run(g):
        out, inputs, grad = g
        return torch.autograd.grad(out, inputs, grad, retain_graph=True)

    def accuracy():
        out, (q, k, v), grad = ours
        ref_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
        ref = torch.autograd.grad(F.scaled_dot_product_attention(*ref_inputs, is_causal=causal), ref_inputs,
                                  grad.double())
        base_inputs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        base = torch.autograd.grad(F.scaled_dot_product_attention(*base_inputs, is_causal=causal), base_inputs, grad)
        return max((compare(a, b, r) for a, b, r in zip(run(ours), base, ref)),
                   key=lambda e: (e[0] + e[2]) / (e[1] + e[2]))

    return Workload(fastnn=lambda i: run(ours), torch=lambda i: run(theirs), flops=2.5 * _flops(S, D, causal),
                    bytes=4.0 * 8 * 8 * S * D, rotations=1, accuracy=accuracy)
