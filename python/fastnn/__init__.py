"""fastnn: hand-written CPU (AVX2/AVX-512) and CUDA kernels for neural
networks, callable on torch tensors, NumPy arrays and any DLPack array."""

from . import _C
from ._info import __version__, info
from .ops import (dequantize, int8_mm, int8_mm_dequant, quantize_per_channel, quantize_per_tensor, quantize_rows,
                  relu, relu_backward)


def get_num_threads() -> int:
    """Threads fastnn's CPU kernels use (the calling thread included)."""
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads fastnn's CPU kernels use; the default is the number of
    cores this process may run on. Independent of torch.set_num_threads."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    _C.set_num_threads(n)


__all__ = ["__version__", "info", "get_num_threads", "set_num_threads", "relu", "relu_backward", "nn", "quantize",
           "quantize_per_tensor", "quantize_per_channel", "dequantize", "quantize_rows", "int8_mm", "int8_mm_dequant"]


def __getattr__(name: str):
    # fastnn.nn and fastnn.quantize need torch; importing them lazily keeps
    # `import fastnn` free of a torch import for NumPy users.
    if name == "nn":
        import importlib

        return importlib.import_module(".nn", __name__)
    if name == "quantize":
        from .quantization import quantize

        globals()["quantize"] = quantize
        return quantize
    raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
