"""Timing machinery for `fastnn bench`. An op family contributes only its
cases (inputs and the callables to time); this module times fastnn, PyTorch
and NumPy alternately in one process and reports medians."""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

Runner = Callable[[int], object]  # called with a rotation index


@dataclass
class Workload:
    """What to time for one case. Each runner takes the rotation index i and
    uses input set i % rotations, so caches do not flatter repeated runs."""

    fastnn: Runner
    torch: Optional[Runner] = None
    numpy: Optional[Runner] = None
    torch_backends: dict[str, Runner] = field(default_factory=dict)  # timed as torch_<name>_ms
    flops: Optional[float] = None   # useful floating-point work, for compute-bound ops
    # Peak of the unit `flops` runs on when it is not the fp32 FMA (int8 VNNI
    # ops, bf16 dot products), in G/s; throughput is then reported in
    # `peak_unit` against it.
    peak_gops: Optional[float] = None
    peak_unit: str = "GOP/s"
    bytes: float = 0.0              # minimum bytes moved (read + written)
    rotations: int = 1
    # Returns (fastnn error, torch error, floor) against a float64 reference.
    accuracy: Optional[Callable[[], tuple[float, float, float]]] = None
    extra: dict = field(default_factory=dict)  # further measurements, copied into the row (and the JSON)


@dataclass
class Case:
    family: str     # the --op name, e.g. "activations"
    op: str         # e.g. "relu"
    pass_: str      # "fwd" | "bwd" | "fwd+bwd" | "step"
    dtype: str
    shape: str
    build: Callable[[], Workload]

    @property
    def label(self) -> str:
        return f"{self.op} {self.pass_} {self.dtype} {self.shape}"


# Family name -> function(device, quick) yielding Cases.
REGISTRY: dict[str, Callable[[str, bool], Iterable[Case]]] = {}


def register(family: str):
    def wrap(fn):
        REGISTRY[family] = fn
        return fn
    return wrap


def rotations_for(bytes_per_set: float, budget: float = 256e6, cap: int = 8) -> int:
    """How many input copies to rotate through so that one pass over them
    exceeds the last-level cache (about 2 x 32 MB here), within a memory budget."""
    want = max(1, int(-(-128e6 // max(bytes_per_set, 1.0))))
    return max(1, min(cap, want, int(budget // max(bytes_per_set, 1.0)) or 1))


def _other_threads_cpu_ns() -> Optional[int]:
    """CPU time consumed so far by this process's threads other than the
    calling one (Linux schedstat), or None where /proc does not say."""
    me = str(threading.get_native_id())
    total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread exited
    return total


def wait_for_idle_threads(poll_s: float = 0.005, max_s: float = 0.5) -> None:
    """Returns once no other thread of this process has run for poll_s.

    Thread pools keep their workers spinning after a parallel region: torch's
    OpenMP workers for ~5-10 ms here, OpenBLAS's (NumPy) for ~100 ms. A sample
    that starts meanwhile shares the cores with them, so whichever library
    runs second in an alternation would be timed on half the machine. Each
    sample therefore starts on quiet cores, as it would in a program that
    calls only that library."""
    last = _other_threads_cpu_ns()
    if last is None:
        time.sleep(0.02)
        return
    deadline = time.perf_counter() + max_s
    while time.perf_counter() < deadline:
        time.sleep(poll_s)
        now = _other_threads_cpu_ns()
        if now == last:
            return
        last = now


class CpuTimer:
    warm_s = 0.002

    def __init__(self, reps: int, min_sample_s: float):
        self.reps, self.min_sample_s = reps, min_sample_s

    def sync(self):
        pass

    def time(self, runners: dict[str, Runner], rotations: int) -> dict[str, float]:
        inner = {}
        for name, run in runners.items():  # warm-up, then size each sample from hot calls
            run(0)
            times = []
            for j in range(3):
                t0 = time.perf_counter()
                run((j + 1) % rotations)
                times.append(time.perf_counter() - t0)
            inner[name] = max(1, min(1000, int(self.min_sample_s / max(statistics.median(times), 1e-7))))
        samples = {name: [] for name in runners}
        names = list(runners)
        for r in range(self.reps):
            for name in names[r % len(names):] + names[:r % len(names)]:
                run, k = runners[name], inner[name]
                wait_for_idle_threads()
                # Untimed calls for warm_s, so that the library's own threads
                # start the sample awake, as in a loop of calls: waking a
                # sleeping worker takes up to ~0.5 ms on a VM, and a pool that
                # does not wait for it finishes its first calls without it.
                warm_until = time.perf_counter() + self.warm_s
                while time.perf_counter() < warm_until:
                    run(r * k)
                t0 = time.perf_counter()
                for j in range(k):
                    run(r * k + j)
                samples[name].append((time.perf_counter() - t0) / k)
        return {name: statistics.median(s) * 1e3 for name, s in samples.items()}


class CudaTimer:
    """CUDA events around each call; L2 is flushed before every sample."""

    def __init__(self, reps: int):
        import torch

        self.torch = torch
        self.reps = reps
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        self.flush = torch.empty(max(2 * l2, 1 << 26), dtype=torch.uint8, device="cuda")

    def sync(self):
        self.torch.cuda.synchronize()

    def time(self, runners: dict[str, Runner], rotations: int) -> dict[str, float]:
        torch = self.torch
        for run in runners.values():
            run(0)
        torch.cuda.synchronize()
        samples = {name: [] for name in runners}
        names = list(runners)
        for r in range(self.reps):
            for name in names[r % len(names):] + names[:r % len(names)]:
                self.flush.zero_()
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                runners[name](r)
                stop.record()
                stop.synchronize()
                samples[name].append(start.elapsed_time(stop))
        return {name: statistics.median(s) for name, s in samples.items()}
