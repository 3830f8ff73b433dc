"""Drop-in torch.nn layers backed by fastnn kernels (requires torch). Each
subclasses its torch twin: same constructor, parameters, initialization and
state_dict, with fastnn's kernels in forward."""

from .activation import ReLU
from .convert import ConversionReport, convert
from .quant_linear import QuantLinear

__all__ = ["ReLU", "QuantLinear", "convert", "ConversionReport"]
