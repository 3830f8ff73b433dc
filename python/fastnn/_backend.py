"""Array plumbing shared by every op: which device an array lives on, which
compiled module runs it, how outputs are allocated, and which CUDA stream to
use. No framework is imported here; torch is used only when the caller's
arrays are torch tensors (and so torch is already imported)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np

from . import _C

_DLPACK_CPU = 1
_DLPACK_CUDA = 2

def _load_cuda():
    """The CUDA module, or None with the reason it is unavailable."""
    if importlib.util.find_spec(f"{__package__}._cuda") is None:
        return None, "fastnn was built without CUDA (no nvcc at build time)"
    try:
        return importlib.import_module(f"{__package__}._cuda"), None
    except ImportError as exc:
        return None, f"the CUDA module failed to load: {exc}"


_cuda, _cuda_import_error = _load_cuda()


def torch_module():
    """torch if the process has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def is_torch(x) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def device_of(x, name: str = "x") -> tuple[int, int]:
    """(DLPack device type, device index) of any array; raises TypeError naming
    the argument when x is not an array."""
    if isinstance(x, np.ndarray):
        return (_DLPACK_CPU, 0)
    if is_torch(x):
        d = x.device
        if d.type == "cpu":
            return (_DLPACK_CPU, 0)
        if d.type == "cuda":
            return (_DLPACK_CUDA, d.index or 0)
        raise ValueError(f"{name} is on device {d}; fastnn runs on cpu and cuda")
    get = getattr(x, "__dlpack_device__", None)
    if get is None:
        raise TypeError(
            f"{name} must be an array supporting DLPack (torch.Tensor, numpy.ndarray, ...), "
            f"got {type(x).__name__}")
    dev_type, dev_id = get()
    return (int(dev_type), int(dev_id))


def is_cuda(x, name: str = "x") -> bool:
    return device_of(x, name)[0] == _DLPACK_CUDA


def cuda_kernels():
    """The CUDA module, or a RuntimeError that says why it is unavailable."""
    if _cuda is None:
        raise RuntimeError(f"fastnn's CUDA kernels are not available: {_cuda_import_error}")
    return _cuda


def cuda_function(module, name: str):
    """A kernel of the CUDA module, or a RuntimeError naming the op it lacks."""
    fn = getattr(module, name, None)
    if fn is None:
        raise RuntimeError(f"{name} has no CUDA kernel yet; move the arrays to the CPU")
    return fn


def kernels_for(x, name: str = "x"):
    dev_type, _ = device_of(x, name)
    if dev_type == _DLPACK_CPU:
        return _C
    if dev_type == _DLPACK_CUDA:
        return cuda_kernels()
    raise ValueError(f"{name} is on DLPack device type {dev_type}; fastnn runs on cpu and cuda")


def current_stream(x) -> int:
    """The caller's current CUDA stream for x's device, as a raw handle."""
    if is_torch(x):
        return torch_module().cuda.current_stream(x.device).cuda_stream
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.cuda.get_current_stream().ptr
    return 0  # the legacy default stream, for frameworks without a stream API


def empty_like(x, name: str = "x"):
    """An uninitialized array of x's shape, dtype and device, allocated by x's
    own framework (torch's caching allocator for torch tensors)."""
    if is_torch(x):
        torch = torch_module()
        return torch.empty_like(x)
    if isinstance(x, np.ndarray):
        return np.empty(x.shape, dtype=x.dtype)
    dev_type, _ = device_of(x, name)
    if dev_type == _DLPACK_CPU:
        host = np.from_dlpack(x)
        return np.empty(host.shape, dtype=host.dtype)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.empty(x.shape, dtype=x.dtype)
    raise TypeError(f"cannot allocate an output like {name} ({type(x).__name__}); pass out=")


def needs_torch_op(x) -> bool:
    """True when a call on x must go through fastnn's torch custom operator:
    x requires grad (autograd must record it) or torch.compile is tracing."""
    if not is_torch(x):
        return False
    torch = torch_module()
    return (x.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling()


def for_kernel(x):
    """A torch tensor that requires grad cannot be exported through DLPack;
    the kernel reads its data, autograd is handled by the caller."""
    if is_torch(x) and x.requires_grad:
        return x.detach()
    return x


def check_out(out, name: str = "out") -> None:
    """out= writes are invisible to autograd, as in torch's own out= variants."""
    if is_torch(out) and out.requires_grad:
        raise ValueError(f"{name} requires grad; out= arguments do not support automatic differentiation")
