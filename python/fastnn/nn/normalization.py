"""LayerNorm and RMSNorm: torch.nn's classes with fastnn's kernels in
forward, over any normalized_shape (its trailing dims are flattened into the
kernels' last dim)."""

from __future__ import annotations

import torch

from . import functional as F
from ._twin import Twin


class LayerNorm(Twin, torch.nn.LayerNorm):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(Twin, torch.nn.RMSNorm):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)
