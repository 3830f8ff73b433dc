"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device. For torch tensors each op is also a
custom operator (torch.ops.fastnn.*) with a fake implementation and an
autograd formula, used when autograd must record the call or torch.compile
is tracing."""

from . import activation
from .activation import relu, relu_backward
from .gemm import linear, linear_backward, matmul
from .norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from .quant import (dequantize, int8_mm, int8_mm_dequant, quantize_per_channel, quantize_per_tensor,
                    quantize_rows)

_FAMILIES = (activation,)


def register_torch_ops(torch) -> None:
    for family in _FAMILIES:
        family.register_torch_ops(torch)


__all__ = ["relu", "relu_backward", "matmul", "linear", "linear_backward", "quantize_per_tensor",
           "quantize_per_channel", "dequantize", "quantize_rows", "int8_mm", "int8_mm_dequant", "layer_norm",
           "layer_norm_backward", "rms_norm", "rms_norm_backward", "register_torch_ops"]
