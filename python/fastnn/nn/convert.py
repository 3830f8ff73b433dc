"""fastnn.convert(model): swap each supported torch layer for its fastnn twin.

A twin subclasses the torch layer, shares its parameters and buffers (the same
Parameter objects, so optimizers and state_dicts keep working), and declares
`from_torch(module)` and `unsupported_reason(module)`; a layer is swapped only
when its exact type has a twin and its configuration is supported.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch

from ._twin import Twin
from .activation import GELU, Dropout, ReLU, SiLU
from .attention import MultiheadAttention
from .linear import Conv2d, Linear
from .loss import CrossEntropyLoss
from .normalization import LayerNorm, RMSNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .quant_linear import QuantLinear

# Exact torch type -> fastnn twin. Subclasses of torch layers are left alone:
# their forward may do anything.
TWINS: dict[type, type] = {
    twin.torch_type: twin
    for twin in (Linear, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, LayerNorm, RMSNorm, ReLU, GELU, SiLU,
                 Dropout, CrossEntropyLoss, MultiheadAttention)
}

_FASTNN_LAYERS = (Twin, QuantLinear)


@dataclass
class ConversionEntry:
    name: str
    torch_type: str
    swapped: bool
    reason: str = ""


@dataclass
class ConversionReport:
    entries: list[ConversionEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the caller must know beyond each layer's verdict

    @property
    def swapped(self) -> list[ConversionEntry]:
        return [e for e in self.entries if e.swapped]

    @property
    def skipped(self) -> list[ConversionEntry]:
        return [e for e in self.entries if not e.swapped]

    def __str__(self) -> str:
        lines = [f"fastnn.convert: {len(self.swapped)} swapped, {len(self.skipped)} left as torch"]
        width = max([len(e.name) for e in self.entries] + [4])
        for e in self.entries:
            verdict = "swapped" if e.swapped else f"kept: {e.reason}"
            lines.append(f"  {e.name:<{width}}  {e.torch_type:<24}  {verdict}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _matches(name: str, module: torch.nn.Module, patterns) -> bool:
    for p in patterns:
        if isinstance(p, type) and isinstance(module, p):
            return True
        if isinstance(p, str) and fnmatch.fnmatchcase(name, p):
            return True
    return False


def convert(model: torch.nn.Module, include=None, exclude=None) -> ConversionReport:
    """Swap, in place, every submodule whose type has a fastnn twin.

    include / exclude: module names (fnmatch patterns such as "encoder.*") or
    torch layer types; when include is given only matching modules are
    considered, and exclude always wins. Returns a report of each layer (each
    leaf, and each layer with a twin, whose children are its own): swapped,
    or kept with the reason. A module reachable under several names is
    converted once and replaced under all of them.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    report = ConversionReport()
    # id(module) -> (module, its twin or None): the module is held so that its
    # id cannot be reused while the walk runs.
    seen: dict[int, tuple[torch.nn.Module, torch.nn.Module | None]] = {}

    def visit(parent: torch.nn.Module, prefix: str) -> None:
        swapped_before = len(report.swapped)
        # _modules, not named_children(): the latter yields a module shared by
        # several attributes once, and each attribute must get the twin.
        for attr, module in list(parent._modules.items()):
            if module is None:
                continue
            name = prefix + attr
            if id(module) in seen:
                twin_seen = seen[id(module)][1]
                if twin_seen is not None:
                    setattr(parent, attr, twin_seen)
                continue
            seen[id(module)] = (module, None)
            twin = TWINS.get(type(module))
            if twin is None and not isinstance(module, _FASTNN_LAYERS) and next(module.children(), None) is not None:
                visit(module, name + ".")  # a container: its children are the layers
                continue
            entry = ConversionEntry(name, type(module).__name__, False)
            report.entries.append(entry)
            if isinstance(module, _FASTNN_LAYERS):
                entry.reason = "already a fastnn layer"
            elif twin is None:
                entry.reason = "no fastnn twin for this layer type"
            elif include is not None and not _matches(name, module, include):
                entry.reason = "not included"
            elif exclude is not None and _matches(name, module, exclude):
                entry.reason = "excluded"
            elif (why := twin.unsupported_reason(module)) is not None:
                entry.reason = why
            else:
                new = twin.from_torch(module)
                setattr(parent, attr, new)
                seen[id(module)] = (module, new)
                entry.swapped = True
        if isinstance(parent, torch.nn.TransformerEncoderLayer) and len(report.swapped) > swapped_before:
            report.notes.append(
                f"{prefix.rstrip('.') or 'the model'} ({type(parent).__name__}) may run torch's fused inference "
                "kernel in eval mode without grad, which reads its weights directly and bypasses its layers; "
                "torch.backends.mha.set_fastpath_enabled(False) makes it call them")

    visit(model, "")
    return report
