"""Linear and Conv2d: torch.nn's classes with fastnn's GEMM and convolution
kernels in forward (and, through the ops' autograd, in backward)."""

from __future__ import annotations

import torch

from . import functional as F
from ._twin import Twin


class Linear(Twin, torch.nn.Linear):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight, self.bias)


class Conv2d(Twin, torch.nn.Conv2d):
    @staticmethod
    def config_reason(module) -> str | None:
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r}: fastnn's conv2d pads with zeros only"
        return None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
