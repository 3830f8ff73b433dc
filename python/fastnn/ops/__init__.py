"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device."""

from .activation import relu, relu_backward
from .gemm import linear, linear_backward, matmul

__all__ = ["relu", "relu_backward", "matmul", "linear", "linear_backward"]
