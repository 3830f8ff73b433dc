"""Helpers shared by the 2-D spatial ops (pooling, convolution): argument
pairs, PyTorch's output-size rule, and outputs allocated in the input's
memory format (channels-last in, channels-last out, as torch)."""

from __future__ import annotations

import numpy as np

from .. import _backend as B


def pair(value, name: str) -> tuple[int, int]:
    # The common spellings first (exact types: a bool is not taken for an int).
    if type(value) is int:
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got bool")
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (a, b)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(a), int(b)


def pooled_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape."""
    span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = span // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def is_channels_last(x) -> bool:
    """Whether x's strides are channels-last, by torch's own rule
    (suggest_memory_format): walking C, W, H, N each stride is at least the
    extent of the previous dims. Strides of size-1 dims count, so a
    (N, 1, H, W) tensor made with .to(memory_format=torch.channels_last)
    gives a channels-last output, as in torch."""
    sh = tuple(x.shape)
    if len(sh) != 4:
        return False
    st = tuple(s // x.itemsize for s in x.strides) if isinstance(x, np.ndarray) else tuple(x.stride())
    if st[1] == 0:
        return False
    extent = 0
    for d in (1, 3, 2, 0):
        if sh[d] == 0 or st[d] < extent:
            return False
        if d == 0 and extent == st[1]:  # N111: ambiguous, contiguous as torch
            return False
        extent = st[d] * sh[d] if sh[d] > 1 else st[d]
    return True


def empty_nchw(like, shape, dtype: str | None = None, channels_last: bool | None = None):
    """An (N, C, H, W) output in like's framework and on its device (dtype a
    name, or None for like's), channels-last when like is (or as told).
    Works on torch's fake tensors, for the custom operators' fake kernels."""
    if channels_last is None:
        channels_last = is_channels_last(like)
    if B.is_torch(like):
        torch = B.torch_module()
        n, c, h, w = shape
        if n > 0 and c > 0 and h > 0 and w > 0:
            # torch's strides for the format, without torch.empty's keyword
            # parsing (1 us of a pool's or convolution's ~15 us call on a
            # small input).
            strides = (h * w * c, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)
            if dtype is None:
                return like.new_empty_strided(shape, strides)
            return like.new_empty_strided(shape, strides, dtype=getattr(torch, dtype))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty(shape, dtype=like.dtype if dtype is None else getattr(torch, dtype), device=like.device,
                           memory_format=fmt)
    if isinstance(like, np.ndarray):
        dt = like.dtype if dtype is None else dtype
        if channels_last:
            n, c, h, w = shape
            return np.empty((n, h, w, c), dtype=dt).transpose(0, 3, 1, 2)
        return np.empty(shape, dtype=dt)
    raise TypeError(f"x must be a torch.Tensor or numpy.ndarray, got {type(like).__name__}")


def batched(x, name: str):
    """(x as (N, C, H, W), whether a batch dim was added); raises for other ranks."""
    B.device_of(x, name)
    if len(x.shape) == 3:
        return x[None], True
    if len(x.shape) != 4:
        raise ValueError(f"{name} must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x, False
