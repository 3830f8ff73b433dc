"""Drop-in torch.nn layers backed by fastnn kernels (requires torch). Each
subclasses its torch twin: same constructor, parameters, initialization and
state_dict, with fastnn's kernels in forward. fastnn.nn.functional holds the
torch.nn.functional signatures on the same kernels."""

from . import functional
from .activation import GELU, Dropout, ReLU, SiLU
from .attention import MultiheadAttention
from .convert import TWINS, ConversionReport, convert
from .linear import Conv2d, Linear
from .loss import CrossEntropyLoss
from .normalization import LayerNorm, RMSNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .quant_linear import QuantLinear

__all__ = [
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "LayerNorm", "RMSNorm", "ReLU", "GELU", "SiLU",
    "Dropout", "CrossEntropyLoss", "MultiheadAttention", "QuantLinear", "functional", "convert", "ConversionReport",
    "TWINS",
]
