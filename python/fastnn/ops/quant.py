"""int8 quantization ops on the CPU: symmetric quantize/dequantize (rounding
and saturation identical to torch.quantize_per_tensor/per_channel on the same
scales), dynamic per-row quantization, and the int8 GEMM, exact in int32 or
with a fused dequantization epilogue. Inputs are 2-D with any strides; outputs
are allocated by the input's framework unless out= is given."""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .. import _C

def _empty(like, shape, dtype: str):
    """An uninitialized array of `dtype` in like's framework (CPU)."""
    if B.is_torch(like):
        torch = B.torch_module()
        return torch.empty(shape, dtype=getattr(torch, dtype))
    if dtype == "bfloat16":
        raise TypeError("bfloat16 outputs need torch tensors (NumPy has no bfloat16); pass out=")
    return np.empty(shape, dtype=dtype)


def _scale_array(like, scale, name: str = "scale"):
    """A float becomes a one-element float32 array of like's framework."""
    if isinstance(scale, (float, int)) and not isinstance(scale, bool):
        if B.is_torch(like):
            return B.torch_module().tensor([float(scale)], dtype=B.torch_module().float32)
        return np.array([scale], dtype=np.float32)
    return scale


def _axis(axis) -> int:
    if axis is None:
        return -1
    if axis not in (0, 1):
        raise ValueError(f"axis must be None, 0 or 1, got {axis!r}")
    return axis


def _shape2(x, name: str):
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D, got shape {shape}")
    return shape


def quantize_per_tensor(x, scale, out=None):
    """int8 q = clamp(round_half_even(x * (1 / scale)), -128, 127) with one
    float32 scale; x float32 or bfloat16, 2-D. Equals
    torch.quantize_per_tensor(x, scale, 0, torch.qint8).int_repr() (NaN -> 0)."""
    return _quantize(x, _scale_array(x, scale), -1, out)


def quantize_per_channel(x, scales, axis: int = 0, out=None):
    """int8 quantization with one scale per row (axis 0) or column (axis 1);
    equals torch.quantize_per_channel(x, scales, zeros, axis, torch.qint8)."""
    return _quantize(x, scales, _axis(axis), out)


def _quantize(x, scale, axis: int, out):
    if out is None:
        out = _empty(x, _shape2(x, "x"), "int8")
    _C.quantize(B.for_kernel(x), scale, axis, out)
    return out


def dequantize(q, scale, axis=None, dtype: str = "float32", out=None):
    """float(q) * scale (one scale, or per row/column with axis 0/1), in
    float32 or bfloat16."""
    if out is None:
        out = _empty(q, _shape2(q, "q"), dtype)
    _C.dequantize(q, _scale_array(q, scale), _axis(axis), out)
    return out


def quantize_rows(x, smooth_inv=None, out=None):
    """Dynamic symmetric per-row int8: returns (q, scale) with
    scale[m] = max_k |x[m, k] * smooth_inv[k]| / 127 and q quantized with it.
    smooth_inv (K,) float32 is the SmoothQuant division of the activations."""
    m, k = _shape2(x, "x")
    q, scale = out if out is not None else (_empty(x, (m, k), "int8"), _empty(x, (m,), "float32"))
    _C.quantize_rows(B.for_kernel(x), smooth_inv, q, scale)
    return q, scale


def int8_mm(a, b, out=None):
    """a (M, K) int8 @ b (K, N) int8 -> int32, exact (bit-identical to
    torch._int_mm) for K <= 131071, beyond which int32 could overflow and the
    call raises."""
    if out is None:
        out = _empty(a, (_shape2(a, "a")[0], _shape2(b, "b")[1]), "int32")
    _C.int8_mm(a, b, None, None, None, out)
    return out


def int8_mm_dequant(a, b, row_scale, col_scale, bias=None, dtype: str = "float32", out=None):
    """float(a @ b) * row_scale[:, None] * col_scale[None, :] + bias, computed
    in float32 from the exact int32 product in the GEMM's epilogue (no int32
    matrix in memory); output float32 or bfloat16."""
    if out is None:
        out = _empty(a, (_shape2(a, "a")[0], _shape2(b, "b")[1]), dtype)
    _C.int8_mm(a, b, row_scale, col_scale, bias, out)
    return out


__all__ = ["quantize_per_tensor", "quantize_per_channel", "dequantize", "quantize_rows", "int8_mm",
           "int8_mm_dequant"]
