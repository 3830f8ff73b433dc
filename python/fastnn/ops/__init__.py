"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device."""

from .activation import relu, relu_backward
from .norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward

__all__ = ["relu", "relu_backward", "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]
