"""Array plumbing shared by every op: which device an array lives on, which
compiled module runs a kernel (launch, the one place), how outputs are
allocated, which CUDA stream to use, and when a call on torch tensors goes
through fastnn's torch custom operators. No framework is imported here;
torch is used only when the caller's arrays are torch tensors (and so torch
is already imported)."""

from __future__ import annotations

import importlib
import importlib.util
import math
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


def current_stream(x) -> int:
    """The caller's current CUDA stream for x's device, as a raw handle."""
    if is_torch(x):
        return torch_module().cuda.current_stream(x.device).cuda_stream
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.cuda.get_current_stream().ptr
    return 0  # the legacy default stream, for frameworks without a stream API


def launch(kernel: str, first, *args, name: str = "x") -> None:
    """Runs `kernel` on the device of `first` (the argument called `name`):
    _C.<kernel>(*args) for CPU arrays, _cuda.<kernel>(*args, stream) for CUDA
    arrays, on the caller's current stream. Every CUDA binding takes its _C
    twin's arguments plus that trailing stream, so this is the only place the
    devices differ. Autograd is recorded by the caller (the custom operators),
    never by a kernel: tensors that require grad are passed as they are where
    torch exports them through its C exchange API, detached otherwise.

    Every fastnn call on small arrays pays this function, so torch tensors on
    the CPU, the common case, take the shortest path (a microsecond saved per
    call is a tenth of a small Linear)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(first, torch.Tensor) and first.is_cpu:
        getattr(_C, kernel)(*(args if _exchange_api or _exports_requires_grad(torch) else
                              [for_kernel(a) for a in args]))
        return
    dev_type, _ = device_of(first, name)
    args = [for_kernel(a) for a in args]
    if dev_type == _DLPACK_CPU:
        getattr(_C, kernel)(*args)
    elif dev_type == _DLPACK_CUDA:
        cuda_function(cuda_kernels(), kernel)(*args, current_stream(first))
    else:
        raise ValueError(f"{name} is on DLPack device type {dev_type}; fastnn runs on cpu and cuda")


_exchange_api: bool | None = None


def _exports_requires_grad(torch) -> bool:
    """Whether the kernels read torch tensors through torch's DLPack C
    exchange API (the bindings' fast path), which exports a tensor that
    requires grad as it is; torch's __dlpack__ refuses one."""
    global _exchange_api
    if _exchange_api is None:
        _exchange_api = hasattr(torch.Tensor, "__dlpack_c_exchange_api__")
    return _exchange_api


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


def output_like(first, out, name: str = "x"):
    """out, checked, when the caller passed one; else a new array like first."""
    if out is None:
        return empty_like(first, name)
    check_out(out)
    return out


def empty(like, shape, dtype: str | None = None, name: str = "x"):
    """An uninitialized contiguous array of `shape` on like's device, in
    like's framework; dtype is a name ("float32", "int64", ...) or None for
    like's dtype. Works on torch's fake tensors, so a custom operator's fake
    implementation allocates exactly what its kernel launcher does."""
    torch = torch_module()
    if torch is not None and isinstance(like, torch.Tensor):
        # The sizes as separate arguments: torch parses a tuple of sizes
        # ~0.6 us slower (1.8 against 1.2 us per call on a Zen 3 VM), a
        # sixth of a one-token Linear. A 0-d output passes its empty tuple
        # (new_empty needs a size argument).
        size = tuple(shape) or ((),)
        return like.new_empty(*size) if dtype is None else like.new_empty(*size, dtype=getattr(torch, dtype))
    if isinstance(like, np.ndarray):
        if dtype == "bfloat16":
            raise TypeError("bfloat16 outputs need torch tensors (NumPy has no bfloat16); pass out=")
        return np.empty(shape, dtype=like.dtype if dtype is None else dtype)
    raise TypeError(f"cannot allocate an output like {name} ({type(like).__name__}): pass torch tensors or NumPy "
                    "arrays, or out= where the op takes one")


def needs_torch_op(*arrays) -> bool:
    """True when a call on these arrays must go through fastnn's torch custom
    operator: torch.compile is tracing, or one of them requires grad (autograd
    must record the call). None entries (absent optional arguments) are
    skipped."""
    torch = torch_module()
    if torch is None:
        return False
    any_tensor = requires_grad = False
    for a in arrays:
        if isinstance(a, torch.Tensor):
            any_tensor = True
            requires_grad = requires_grad or a.requires_grad
    if not any_tensor:
        return False
    return torch.compiler.is_compiling() or (requires_grad and torch.is_grad_enabled())


def direct_cpu_call(x, *others) -> bool:
    """True when a call on x (a CPU torch tensor) and others (torch tensors
    or None) can go straight to its _C kernel: autograd has nothing to
    record (no argument requires grad, or grad mode is off), torch.compile
    is not tracing, and the bindings read tensors that require grad as they
    are. What needs_torch_op and launch decide, in one pass: the shortcut of
    the ops whose small calls are dominated by Python (a one-token Linear:
    5.2 us through the general path, 4.7 through this one, on a Zen 3 VM)."""
    torch = sys.modules.get("torch")
    if torch is None or type(x) is not torch.Tensor or not x.is_cpu:
        return False
    if not (_exchange_api if _exchange_api is not None else _exports_requires_grad(torch)):
        return False
    if torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled():
        if x.requires_grad:
            return False
        for a in others:
            if a is not None and (not isinstance(a, torch.Tensor) or a.requires_grad):
                return False
    return True


def flat_rows(x, name: str = "x"):
    """x (..., features) as a (rows, features) view (a copy only when the
    leading dims cannot be merged, as torch.reshape)."""
    if x.ndim == 2:
        return x
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got a scalar")
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])


def absent_as_empty(arrays, like) -> tuple:
    """A torch custom operator cannot return None: the outputs not asked for
    (gradients of arguments that need none) come back as zero-element tensors
    like `like`, and absent_as_none restores them."""
    return tuple(like.new_empty(0) if a is None else a for a in arrays)


def absent_as_none(arrays, wanted) -> tuple:
    return tuple(a if w else None for a, w in zip(arrays, wanted))


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
