"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device. Activations are also torch custom
operators (torch.ops.fastnn.*) with fake implementations and autograd
formulas, used when autograd must record the call or torch.compile traces;
the other families use torch.autograd.Function for now."""

from . import activation
from .activation import (gelu, gelu_backward, relu, relu_backward, sigmoid, sigmoid_backward, silu,
                         silu_backward, tanh, tanh_backward)
from .attention import scaled_dot_product_attention
from .conv import conv2d
from .dropout import dropout, dropout_backward
from .gemm import linear, linear_backward, matmul
from .loss import cross_entropy, cross_entropy_backward, mse_loss, mse_loss_backward
from .norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .quant import (dequantize, int8_mm, int8_mm_dequant, quantize_per_channel, quantize_per_tensor,
                    quantize_rows)
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward

_FAMILIES = (activation,)


def register_torch_ops(torch) -> None:
    for family in _FAMILIES:
        family.register_torch_ops(torch)


__all__ = [
    "relu", "relu_backward", "gelu", "gelu_backward", "silu", "silu_backward", "sigmoid", "sigmoid_backward",
    "tanh", "tanh_backward", "dropout", "dropout_backward", "softmax", "softmax_backward", "log_softmax",
    "log_softmax_backward", "cross_entropy", "cross_entropy_backward", "mse_loss", "mse_loss_backward",
    "matmul", "linear", "linear_backward", "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward",
    "quantize_per_tensor", "quantize_per_channel", "dequantize", "quantize_rows", "int8_mm", "int8_mm_dequant",
    "scaled_dot_product_attention", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
]
