"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device: every kernel call goes through
_backend.launch, which picks _C or _cuda (with the caller's stream).

Every op is also a torch custom operator (torch.ops.fastnn.*, registered on
import) with a fake implementation and, where it has a gradient, an autograd
formula that runs fastnn's own backward kernels (themselves custom operators).
Under torch.compile a call on torch tensors goes through the operator, so
torch.compile(fullgraph=True) sees opaque ops and no graph break; in eager
mode a call autograd must record runs as a torch.autograd.Function built from
the same launcher and formula (_torch_ops.py: the operator's wrapping costs
more than many kernels). Calls with out= run the kernel directly: they are
for eager code (torch.compile breaks the graph there)."""

# The family modules, bound before the function imports below rebind
# `softmax` and `dropout` to the functions of those names.
from . import activation as _activation
from . import attention as _attention
from . import conv as _conv
from . import dropout as _dropout
from . import gemm as _gemm
from . import loss as _loss
from . import norm as _norm
from . import pool as _pool
from . import quant as _quant
from . import softmax as _softmax
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

_FAMILIES = (_activation, _softmax, _gemm, _norm, _loss, _dropout, _attention, _conv, _pool, _quant)


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
