"""CrossEntropyLoss: torch.nn's class with fastnn's fused softmax
cross-entropy kernel (the probabilities are never stored)."""

from __future__ import annotations

import torch

from . import functional as F
from ._twin import Twin


class CrossEntropyLoss(Twin, torch.nn.CrossEntropyLoss):
    """Class-index targets, any reduction, ignore_index and label_smoothing.
    Class weights are refused at construction, class-probability targets at
    forward (ValueError)."""

    @staticmethod
    def config_reason(module) -> str | None:
        if module.weight is not None:
            return "weight= (per-class weights): fastnn's cross_entropy has no class weights"
        return None

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)
