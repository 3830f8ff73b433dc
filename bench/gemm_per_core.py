"""Per-core GEMM throughput of fastnn and PyTorch, one thread each, timed by
the thread's CPU time (time.thread_time) instead of the wall clock.

On a machine shared with other jobs the wall clock also counts the time the
thread waits for a core, so `fastnn bench` numbers swing by 2-5x from run to
run; CPU time does not (caches are still shared, so it is not exact). Compare
the results with the per-core FMA peak: fp32 ~240 GFLOP/s, bf16 (vdpbf16ps)
~480 GFLOP/s on this Zen 5 class CPU.

    python bench/gemm_per_core.py 512 1024 2048
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

import fastnn


def rate(fn, flops: float, seconds: float = 1.0) -> float:
    """Best of 5 samples, GFLOP per CPU-second."""
    fn()
    best = 0.0
    for _ in range(5):
        start, runs = time.thread_time(), 0
        while time.thread_time() - start < seconds / 5:
            fn()
            runs += 1
        best = max(best, flops * runs / (time.thread_time() - start) / 1e9)
    return best


def main(sizes: list[int]) -> None:
    fastnn.set_num_threads(1)
    torch.set_num_threads(1)
    print("n     fp32 fastnn  torch | bf16 fastnn  torch | linear fp32 fastnn  torch   (GFLOP/s per core)")
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        ab, bb, cb = a.bfloat16(), b.bfloat16(), c.bfloat16()
        flops = 2.0 * n**3
        row = [rate(lambda: fastnn.matmul(a, b, out=c), flops), rate(lambda: torch.mm(a, b, out=c), flops),
               rate(lambda: fastnn.matmul(ab, bb, out=cb), flops), rate(lambda: torch.mm(ab, bb, out=cb), flops),
               rate(lambda: fastnn.linear(a, b), flops), rate(lambda: F.linear(a, b), flops)]
        print(f"{n:<5} {row[0]:11.1f} {row[1]:6.1f} | {row[2]:11.1f} {row[3]:6.1f} | {row[4]:18.1f} {row[5]:6.1f}")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [512, 1024, 2048])
