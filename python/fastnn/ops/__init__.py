"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device."""

from .activation import relu, relu_backward
from .attention import scaled_dot_product_attention
from .conv import conv2d
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = ["relu", "relu_backward", "scaled_dot_product_attention", "max_pool2d", "avg_pool2d",
           "adaptive_avg_pool2d", "conv2d"]
