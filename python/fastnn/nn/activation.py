"""Activation layers: torch.nn's classes with fastnn's kernels in forward."""

from __future__ import annotations

import torch

from .. import ops


class ReLU(torch.nn.ReLU):
    """torch.nn.ReLU with fastnn's kernel; same constructor and state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace and not torch.compiler.is_compiling() and not x.requires_grad:
            return ops.relu(x, out=x)
        return ops.relu(x)

    @classmethod
    def from_torch(cls, module: torch.nn.ReLU) -> "ReLU":
        return cls(inplace=module.inplace)

    @staticmethod
    def unsupported_reason(module: torch.nn.ReLU) -> str | None:
        return None
