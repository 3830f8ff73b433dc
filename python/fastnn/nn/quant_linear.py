"""QuantLinear: an int8 replacement for torch.nn.Linear on the CPU.

Weights are symmetric int8 with one float32 scale per output feature
(scale = max |W[n, :]| / 127). Two modes:
- "dynamic": each call quantizes the activations per row (per token) inside
  the kernel and runs the int8 x int8 -> int32 GEMM with the dequantization
  (x scale, weight scale, bias) fused in its epilogue. Optional SmoothQuant
  scales s (K,) are folded in: W * s is quantized, x / s is computed in the
  activation quantization.
- "weight_only": activations stay float32/bfloat16; the int8 weight is
  widened in registers. For small batches, where reading the weight is the
  cost (a quarter of fp32's bytes).

The state_dict holds the int8 weight (N, K), its scales, the bias and the
smoothing divisors, plus the mode as extra state; the packed kernel layout is
rebuilt on load. Inference only: inputs that require grad are refused.
"""

from __future__ import annotations

import torch

from .. import _C
from ..ops.quant import quant_linear, quantize_per_channel

MODES = ("dynamic", "weight_only")


class QuantLinear(torch.nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "dynamic",
                 smooth: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if smooth and mode != "dynamic":
            raise ValueError("smooth applies to mode 'dynamic' only (weight-only activations are not quantized)")
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32) if bias else None)
        self.register_buffer("smooth_inv", torch.ones(in_features, dtype=torch.float32) if smooth else None)
        self.register_buffer("packed", torch.empty(0, dtype=torch.uint8), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, incompatible: module._repack())
        self._repack()

    @classmethod
    def from_float(cls, linear: torch.nn.Linear, mode: str = "dynamic", smooth_scales=None) -> "QuantLinear":
        """Quantizes a float Linear's weight per output channel. smooth_scales
        (in_features,) are SmoothQuant's per-input-channel factors s: the weight
        W * s is quantized and activations are divided by s at run time."""
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        if linear.weight.device.type != "cpu":
            raise ValueError(f"linear must be on the CPU, got {linear.weight.device}")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, mode,
                smooth=smooth_scales is not None)
        with torch.no_grad():
            w = linear.weight.detach().float()
            if smooth_scales is not None:
                s = torch.as_tensor(smooth_scales, dtype=torch.float32).reshape(-1)
                if s.numel() != linear.in_features or not bool((s > 0).all() & s.isfinite().all()):
                    raise ValueError(f"smooth_scales must be {linear.in_features} positive finite values")
                w = w * s
                q.smooth_inv.copy_(1.0 / s)
            scale = w.abs().amax(dim=1) / 127.0 if w.numel() else torch.ones(linear.out_features)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero rows quantize to 0
            q.weight_scale.copy_(scale)
            q.weight_int8.copy_(quantize_per_channel(w, q.weight_scale, axis=0))
            if linear.bias is not None:
                q.bias.copy_(linear.bias.detach().float())
        q._repack()
        return q

    def _repack(self) -> None:
        n, k = self.out_features, self.in_features
        packed = torch.empty(_C.quant_packed_weight_bytes(self.mode, n, k), dtype=torch.uint8)
        _C.quant_pack_weight(self.weight_int8, self.mode, packed)
        self.packed = packed

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight this module computes with (smoothing undone)."""
        w = self.weight_int8.float() * self.weight_scale[:, None]
        return w * self.smooth_inv if self.smooth_inv is not None else w

    def get_extra_state(self):
        return {"mode": self.mode}

    def set_extra_state(self, state) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"state_dict was saved from a QuantLinear in mode {state.get('mode')!r}, "
                             f"this one is {self.mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("QuantLinear is inference-only; run it under torch.no_grad() or detach the input")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features in its last dimension, got shape "
                             f"{tuple(x.shape)}")
        # The custom op (fastnn::quant_linear), so torch.compile traces it.
        return quant_linear(x, self.packed, self.mode, self.weight_scale, self.bias, self.smooth_inv)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, mode={self.mode!r}, smooth={self.smooth_inv is not None}")
