"""`fastnn bench`: fastnn against PyTorch (and NumPy where it has the op), in
one process, alternating, after warm-up, median of repeated runs, each result
also as a fraction of this machine's roofline measured in the same run."""

from __future__ import annotations

from . import (activation, attention, attention_cuda, conv, gemm, gemm_cuda, loss, norm, optim,  # noqa: F401
               quant, softmax)  # (importing a family registers its cases)
from .harness import REGISTRY, Case, Workload, register
from .runner import run_bench

__all__ = ["REGISTRY", "Case", "Workload", "register", "run_bench"]
