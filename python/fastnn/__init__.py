"""fastnn: hand-written CPU (AVX2/AVX-512) and CUDA kernels for neural
networks, callable on torch tensors, NumPy arrays and any DLPack array."""

from . import _C
from ._info import __version__, info
from .ops import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d, relu, relu_backward, scaled_dot_product_attention


def get_num_threads() -> int:
    """Threads fastnn's CPU kernels use (the calling thread included)."""
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads fastnn's CPU kernels use; the default is the number of
    cores this process may run on. Independent of torch.set_num_threads."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    _C.set_num_threads(n)


__all__ = ["__version__", "info", "get_num_threads", "set_num_threads", "relu", "relu_backward",
           "scaled_dot_product_attention", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "conv2d"]
