"""int8 quantization ops: symmetric quantize/dequantize (rounding and
saturation identical to torch.quantize_per_tensor/per_channel on the same
scales), dynamic per-row quantization, the int8 GEMM, exact in int32 or with a
fused dequantization epilogue, and the packed-weight quantized linear.
Inputs are 2-D with any strides (quant_linear: (..., K)); outputs are
allocated by the input's framework unless out= is given. For torch tensors
under torch.compile each is a custom operator (fastnn::quantize, ...) with a
fake implementation and no autograd: rounding has no useful gradient."""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from . import _torch_ops as T


def _scale_array(like, scale, name: str = "scale"):
    """A float becomes a one-element float32 array of like's framework."""
    if isinstance(scale, (float, int)) and not isinstance(scale, bool):
        if B.is_torch(like):
            torch = B.torch_module()
            return torch.tensor([float(scale)], dtype=torch.float32, device=like.device)
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


def _dtype_name(dtype) -> str:
    """torch.bfloat16 and "bfloat16" alike, as the custom operators pass dtypes."""
    return str(dtype).replace("torch.", "")


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
    if out is None and B.needs_torch_op(x, scale):
        return T.torch_op("quantize")(x, scale, axis)
    return _quantize_launch(x, scale, axis, out)


def _quantize_output(x):
    return B.empty(x, _shape2(x, "x"), "int8")


def _quantize_launch(x, scale, axis, out):
    if out is None:
        out = _quantize_output(x)
    B.launch("quantize", x, x, scale, axis, out)
    return out


def dequantize(q, scale, axis=None, dtype: str = "float32", out=None):
    """float(q) * scale (one scale, or per row/column with axis 0/1), in
    float32 or bfloat16."""
    scale, axis = _scale_array(q, scale), _axis(axis)
    if out is None and B.needs_torch_op(q, scale):
        return T.torch_op("dequantize")(q, scale, axis, getattr(B.torch_module(), _dtype_name(dtype)))
    return _dequantize(q, scale, axis, _dtype_name(dtype), out)


def _dequantize(q, scale, axis, dtype, out):
    if out is None:
        out = B.empty(q, _shape2(q, "q"), dtype, name="q")
    B.launch("dequantize", q, q, scale, axis, out, name="q")
    return out


def quantize_rows(x, smooth_inv=None, out=None):
    """Dynamic symmetric per-row int8: returns (q, scale) with
    scale[m] = max_k |x[m, k] * smooth_inv[k]| / 127 and q quantized with it.
    smooth_inv (K,) float32 is the SmoothQuant division of the activations."""
    if out is None and B.needs_torch_op(x, smooth_inv):
        return T.torch_op("quantize_rows")(x, smooth_inv)
    return _quantize_rows(x, smooth_inv, out)


def _quantize_rows(x, smooth_inv, out):
    q, scale = out if out is not None else _quantize_rows_outputs(x)
    B.launch("quantize_rows", x, x, smooth_inv, q, scale)
    return q, scale


def _quantize_rows_outputs(x):
    m, k = _shape2(x, "x")
    return B.empty(x, (m, k), "int8"), B.empty(x, (m,), "float32")


def int8_mm(a, b, out=None):
    """a (M, K) int8 @ b (K, N) int8 -> int32, exact (bit-identical to
    torch._int_mm) for K <= 131071, beyond which int32 could overflow and the
    call raises."""
    if out is None and B.needs_torch_op(a, b):
        return T.torch_op("int8_mm")(a, b)
    return _int8_mm(a, b, None, None, None, "int32", out)


def int8_mm_dequant(a, b, row_scale, col_scale, bias=None, dtype: str = "float32", out=None):
    """float(a @ b) * row_scale[:, None] * col_scale[None, :] + bias, computed
    in float32 from the exact int32 product in the GEMM's epilogue (no int32
    matrix in memory); output float32 or bfloat16."""
    if out is None and B.needs_torch_op(a, b, row_scale, col_scale, bias):
        return T.torch_op("int8_mm_dequant")(a, b, row_scale, col_scale, bias,
                                              getattr(B.torch_module(), _dtype_name(dtype)))
    return _int8_mm(a, b, row_scale, col_scale, bias, _dtype_name(dtype), out)


def _int8_mm_output(a, b, dtype):
    return B.empty(a, (_shape2(a, "a")[0], _shape2(b, "b")[1]), dtype, name="a")


def _int8_mm(a, b, row_scale, col_scale, bias, dtype, out):
    if out is None:
        out = _int8_mm_output(a, b, dtype)
    B.launch("int8_mm", a, a, b, row_scale, col_scale, bias, out, name="a")
    return out


def quant_linear(x, packed, mode: str, weight_scale, bias=None, smooth_inv=None):
    """x (..., K) @ dequantize(W).T + bias for an int8 weight W (N, K) packed
    by _C.quant_pack_weight for `mode` ('dynamic': activations quantized per
    row, optionally divided by smooth_inv (K,) first; 'weight_only'), with
    one float32 scale per output feature in weight_scale (N,). Returns
    (..., N) in x's dtype. The kernel behind fastnn.nn.QuantLinear."""
    if B.needs_torch_op(x, packed, weight_scale, bias, smooth_inv):
        return T.torch_op("quant_linear")(x, packed, mode, weight_scale, bias, smooth_inv)
    return _quant_linear(x, packed, mode, weight_scale, bias, smooth_inv)


def _quant_linear_output(x, weight_scale):
    return B.empty(x, (*x.shape[:-1], weight_scale.shape[0]))


def _quant_linear(x, packed, mode, weight_scale, bias, smooth_inv):
    x2 = B.flat_rows(x, "x")
    out = _quant_linear_output(x, weight_scale)
    B.launch("quant_linear", x, x2, packed, mode, weight_scale, bias, smooth_inv, B.flat_rows(out, "out"))
    return out


def register_torch_ops(torch):
    @T.custom_op("quantize", schema="(Tensor x, Tensor scale, int axis) -> Tensor")
    def quantize_op(x, scale, axis):
        return _quantize_launch(x, scale, axis, None)

    @quantize_op.register_fake
    def _(x, scale, axis):
        return _quantize_output(x)

    @T.custom_op("dequantize", schema="(Tensor q, Tensor scale, int axis, ScalarType dtype) -> Tensor")
    def dequantize_op(q, scale, axis, dtype):
        return _dequantize(q, scale, axis, _dtype_name(dtype), None)

    @dequantize_op.register_fake
    def _(q, scale, axis, dtype):
        return B.empty(q, tuple(q.shape), _dtype_name(dtype))

    @T.custom_op("quantize_rows", schema="(Tensor x, Tensor? smooth_inv) -> (Tensor q, Tensor scale)")
    def quantize_rows_op(x, smooth_inv):
        return _quantize_rows(x, smooth_inv, None)

    @quantize_rows_op.register_fake
    def _(x, smooth_inv):
        return _quantize_rows_outputs(x)

    @T.custom_op("int8_mm", schema="(Tensor a, Tensor b) -> Tensor")
    def int8_mm_op(a, b):
        return _int8_mm(a, b, None, None, None, "int32", None)

    @int8_mm_op.register_fake
    def _(a, b):
        return _int8_mm_output(a, b, "int32")

    @T.custom_op("int8_mm_dequant",
                 schema="(Tensor a, Tensor b, Tensor row_scale, Tensor col_scale, Tensor? bias, "
                        "ScalarType dtype) -> Tensor")
    def int8_mm_dequant_op(a, b, row_scale, col_scale, bias, dtype):
        return _int8_mm(a, b, row_scale, col_scale, bias, _dtype_name(dtype), None)

    @int8_mm_dequant_op.register_fake
    def _(a, b, row_scale, col_scale, bias, dtype):
        return _int8_mm_output(a, b, _dtype_name(dtype))

    @T.custom_op("quant_linear",
                 schema="(Tensor x, Tensor packed, str mode, Tensor weight_scale, Tensor? bias, "
                        "Tensor? smooth_inv) -> Tensor")
    def quant_linear_op(x, packed, mode, weight_scale, bias, smooth_inv):
        return _quant_linear(x, packed, mode, weight_scale, bias, smooth_inv)

    @quant_linear_op.register_fake
    def _(x, packed, mode, weight_scale, bias, smooth_inv):
        return _quant_linear_output(x, weight_scale)


__all__ = ["quantize_per_tensor", "quantize_per_channel", "dequantize", "quantize_rows", "int8_mm",
           "int8_mm_dequant", "quant_linear"]
