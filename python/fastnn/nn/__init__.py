"""torch.nn modules backed by fastnn kernels."""

from .quant_linear import QuantLinear

__all__ = ["QuantLinear"]
