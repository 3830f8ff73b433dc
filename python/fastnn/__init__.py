"""fastnn: hand-written CPU (AVX2/AVX-512) and CUDA kernels for neural
networks, callable on torch tensors, NumPy arrays and any DLPack array."""

import importlib.util as _importlib_util

from . import _C
from ._info import __version__, info
from .ops import *  # noqa: F403  (the functional ops; ops.__all__ lists them)
from .ops import __all__ as _ops_all

# fastnn's ops are torch custom operators too (autograd, torch.compile); they
# must exist before anything traces, so they are registered on import when
# torch is installed. NumPy-only use works without torch (fastnn.nn,
# fastnn.optim, convert and quantize are then absent).
if _importlib_util.find_spec("torch") is not None:
    import torch as _torch

    from .ops import register_torch_ops as _register_torch_ops

    _register_torch_ops(_torch)

    from . import nn, optim
    from .nn import convert
    from .quantization import quantize


def get_num_threads() -> int:
    """Threads fastnn's CPU kernels use (the calling thread included)."""
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads fastnn's CPU kernels use; the default is the number of
    cores this process may run on. Independent of torch.set_num_threads."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    _C.set_num_threads(n)


__all__ = ["__version__", "info", "get_num_threads", "set_num_threads", "nn", "optim", "convert", "quantize",
           *_ops_all]
