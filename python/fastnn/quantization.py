"""fastnn.quantize(model): swap every torch.nn.Linear of a model for a
fastnn.nn.QuantLinear, in place, and report what was done and, given
calibration inputs, each layer's output error on them."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch

from .nn.quant_linear import MODES, QuantLinear


@dataclass
class LayerReport:
    name: str
    in_features: int
    out_features: int
    mode: str
    # On the calibration inputs that reached this layer (None without them):
    # max |y_q - y| and ||y_q - y|| / ||y|| against the float Linear.
    max_abs_error: Optional[float] = None
    rel_rms_error: Optional[float] = None


@dataclass
class QuantizeReport:
    mode: str
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # Linear layers left in float (include/exclude)

    def __str__(self) -> str:
        rows = [("layer", "shape (out, in)", "mode", "max abs err", "rel rms err")]
        fmt = lambda v: "-" if v is None else f"{v:.3e}"  # noqa: E731
        rows += [(r.name, f"({r.out_features}, {r.in_features})", r.mode, fmt(r.max_abs_error),
                  fmt(r.rel_rms_error)) for r in self.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.skipped:
            lines.append(f"left in float: {', '.join(self.skipped)}")
        return "\n".join(lines)


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _batches(calibration) -> Iterable:
    if isinstance(calibration, (torch.Tensor, tuple, dict)):
        return [calibration]
    return calibration


def _run(model, batch) -> None:
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, tuple):
        model(*batch)
    else:
        model(batch)


def quantize(model: torch.nn.Module, mode: str = "dynamic", include=None, exclude=None, calibration=None,
             smooth_alpha: Optional[float] = None) -> QuantizeReport:
    """Replaces, in place, every torch.nn.Linear of `model` whose qualified
    name matches a pattern of `include` (fnmatch; default: all) and none of
    `exclude` with QuantLinear.from_float(linear, mode). Returns a report of
    each swapped layer and its shape.

    calibration: a tensor, a tuple of positional inputs, a dict of keyword
    inputs, or an iterable of those, run through the float model (no_grad) to
    record each layer's inputs; the report then gives each layer's output
    error on them. smooth_alpha (mode "dynamic", needs calibration): SmoothQuant
    migration strength, s_k = max|x_k|^alpha / max|W_k|^(1 - alpha).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(model, torch.nn.Linear):
        raise TypeError("model is itself a Linear and cannot be swapped in place; use QuantLinear.from_float")
    if smooth_alpha is not None and (calibration is None or mode != "dynamic"):
        raise ValueError("smooth_alpha needs calibration inputs and mode 'dynamic'")
    include = [include] if isinstance(include, str) else include
    exclude = [exclude] if isinstance(exclude, str) else (exclude or [])
    report = QuantizeReport(mode)
    targets = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if (include is None or _matches(name, include)) and not _matches(name, exclude):
                targets[name] = module
            else:
                report.skipped.append(name)

    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in targets}
    if calibration is not None:
        hooks = [m.register_forward_hook(lambda mod, args, out, n=name: inputs[n].append(args[0].detach()))
                 for name, m in targets.items()]
        try:
            with torch.no_grad():
                for batch in _batches(calibration):
                    _run(model, batch)
        finally:
            for h in hooks:
                h.remove()

    for name, linear in targets.items():
        xs = [x.reshape(-1, linear.in_features).float() for x in inputs[name]]
        smooth = None
        if smooth_alpha is not None and xs:
            x_max = torch.cat(xs).abs().amax(dim=0)
            w_max = linear.weight.detach().float().abs().amax(dim=0)
            smooth = (x_max.pow(smooth_alpha) / w_max.pow(1 - smooth_alpha)).clamp(1e-5, 1e5)
            smooth = torch.where(smooth.isfinite(), smooth, torch.ones_like(smooth))
        q = QuantLinear.from_float(linear, mode, smooth_scales=smooth)
        entry = LayerReport(name, linear.in_features, linear.out_features, mode)
        if xs:
            with torch.no_grad():
                x = torch.cat(xs)
                bias = linear.bias.float() if linear.bias is not None else None
                y = torch.nn.functional.linear(x, linear.weight.float(), bias)
                diff = q(x) - y
                entry.max_abs_error = float(diff.abs().max()) if diff.numel() else 0.0
                entry.rel_rms_error = float(diff.norm() / y.norm().clamp_min(1e-30))
        report.layers.append(entry)
        _replace(model, name, q)
    return report


def _replace(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
