"""The accuracy rule shared by fastnn's tests, `fastnn bench` and `fastnn check`.

fastnn's result and PyTorch's result at the working precision are both
compared with a float64 reference computed by PyTorch. fastnn passes when its
largest absolute error is at most twice PyTorch's, plus a floor of one unit in
the last place of the working dtype at the reference's scale (so ops that
PyTorch computes exactly, like relu, may not be off by more than one ulp).
NaN and infinities must appear exactly where the reference has them.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = {
    "float64": 2.0**-52, "float32": 2.0**-23, "bfloat16": 2.0**-7, "float16": 2.0**-10,
}


def _as_torch64(a):
    import torch

    if not isinstance(a, torch.Tensor):
        a = torch.from_dlpack(a) if not isinstance(a, np.ndarray) else torch.from_numpy(np.ascontiguousarray(a))
    return a.detach().to(device="cpu", dtype=torch.float64)


def dtype_name(a) -> str:
    return str(a.dtype).replace("torch.", "")


def max_error(out, ref) -> float:
    """Largest |out - ref|; inf when NaN or infinities differ in position or sign."""
    import torch

    out, ref = _as_torch64(out), _as_torch64(ref)
    if out.shape != ref.shape:
        raise ValueError(f"shapes differ: {tuple(out.shape)} vs {tuple(ref.shape)}")
    if out.numel() == 0:
        return 0.0
    nan_out, nan_ref = torch.isnan(out), torch.isnan(ref)
    if not torch.equal(nan_out, nan_ref):
        return math.inf
    inf_ref = torch.isinf(ref)
    if not torch.equal(torch.isinf(out), inf_ref) or not torch.equal(out[inf_ref], ref[inf_ref]):
        return math.inf
    finite = ~(nan_ref | inf_ref)
    if not finite.any():
        return 0.0
    return float((out[finite] - ref[finite]).abs().max())


def error_floor(ref, dtype: str) -> float:
    """One ulp of `dtype` at the scale of the reference's largest finite value."""
    import torch

    ref = _as_torch64(ref)
    finite = ref[torch.isfinite(ref)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    return _EPS[dtype] * max(scale, 1e-30)


def compare(out, torch_out, ref) -> tuple[float, float, float]:
    """(fastnn error, PyTorch error, floor) against the float64 reference."""
    return max_error(out, ref), max_error(torch_out, ref), error_floor(ref, dtype_name(torch_out))


def error_ratio(out, torch_out, ref) -> float:
    """fastnn's error over PyTorch's (floors added to both, so exact == 1.0)."""
    fast, base, floor = compare(out, torch_out, ref)
    return (fast + floor) / (base + floor)


def assert_close(out, torch_out, ref, name: str = "output") -> None:
    """Raise AssertionError unless fastnn's error <= 2 x PyTorch's + floor."""
    fast, base, floor = compare(out, torch_out, ref)
    if not fast <= 2.0 * base + floor:
        raise AssertionError(
            f"{name}: fastnn error {fast:.3e} exceeds 2 x PyTorch error {base:.3e} + floor {floor:.3e}")
