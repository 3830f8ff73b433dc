"""Elementwise layers (activations, dropout): torch.nn's classes with fastnn's
kernels in forward."""

from __future__ import annotations

import torch

from . import functional as F
from ._twin import Twin


class ReLU(Twin, torch.nn.ReLU):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(input, self.inplace)


class GELU(Twin, torch.nn.GELU):
    @staticmethod
    def config_reason(module) -> str | None:
        if module.approximate not in ("none", "tanh"):
            return f"approximate must be 'none' or 'tanh', got {module.approximate!r}"
        return None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.gelu(input, self.approximate)


class SiLU(Twin, torch.nn.SiLU):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.silu(input, self.inplace)


class Dropout(Twin, torch.nn.Dropout):
    """torch.nn.Dropout on fastnn's Philox kernel: each training call draws
    its seed from torch's default generator (torch.manual_seed makes runs
    reproducible; the masks differ from torch's)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)
