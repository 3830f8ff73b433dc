"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device."""

from .activation import relu, relu_backward
from .quant import (dequantize, int8_mm, int8_mm_dequant, quantize_per_channel, quantize_per_tensor,
                    quantize_rows)

__all__ = ["relu", "relu_backward", "quantize_per_tensor", "quantize_per_channel", "dequantize", "quantize_rows",
           "int8_mm", "int8_mm_dequant"]
