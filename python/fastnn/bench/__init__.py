"""`fastnn bench`: fastnn against PyTorch (and NumPy where it has the op), in
one process, alternating, after warm-up, median of repeated runs, each result
also as a fraction of this machine's roofline measured in the same run."""

from __future__ import annotations

# Importing a family registers its cases.
from . import (activation, activation_cuda, attention, attention_cuda, conv, cross_entropy_cuda,  # noqa: F401
               gemm, gemm_cuda, loss, norm, norm_cuda, optim, optim_cuda, quant, softmax)
from .harness import REGISTRY, Case, Workload, register
from .runner import run_bench

__all__ = ["REGISTRY", "Case", "Workload", "register", "run_bench"]
