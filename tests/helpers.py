"""Input builders for the checklist in TESTING.md: random tensors of a
dtype, strided views whose gaps hold NaN (a wrong-stride read shows up as
NaN), and NaN-poisoned outputs (an unwritten element shows up as NaN)."""

from __future__ import annotations

import torch

ODD_SIZES = [1, 7, 8, 15, 17, 31, 33, 63, 65, 97, 1023, 1025]


def randn(shape, dtype=torch.float32, gen=None, device="cpu"):
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def nan_gapped(t: torch.Tensor, step: int = 2, transpose: bool = False) -> torch.Tensor:
    """A non-contiguous view with t's values: every `step`-th element of a
    NaN-filled buffer along the last dim, optionally with the last two dims
    stored transposed."""
    if transpose and t.dim() >= 2:
        base = nan_gapped(t.transpose(-1, -2).contiguous(), step)
        return base.transpose(-1, -2)
    shape = list(t.shape)
    buf = torch.full(shape[:-1] + [max(shape[-1], 1) * step] if shape else [step], float("nan"),
                     dtype=t.dtype, device=t.device)
    view = buf[..., ::step] if shape else buf[0]
    view = view[..., : shape[-1]] if shape else view
    view.copy_(t)
    return view


def poisoned(shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device)
