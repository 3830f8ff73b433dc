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

from .activation import ReLU

# Exact torch type -> fastnn twin. Subclasses of torch layers are left alone:
# their forward may do anything.
TWINS: dict[type, type] = {
    torch.nn.ReLU: ReLU,
}


@dataclass
class ConversionEntry:
    name: str
    torch_type: str
    swapped: bool
    reason: str = ""


@dataclass
class ConversionReport:
    entries: list[ConversionEntry] = field(default_factory=list)

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
    considered, and exclude always wins. Returns a report of each leaf layer:
    swapped, or kept with the reason.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    report = ConversionReport()
    for name, module in list(model.named_modules()):
        if not name or next(module.children(), None) is not None:
            continue  # the root, and containers (their children are visited)
        twin = TWINS.get(type(module))
        entry = ConversionEntry(name, type(module).__name__, False)
        report.entries.append(entry)
        if isinstance(module, tuple(TWINS.values())):
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
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = twin.from_torch(module)
            new.train(module.training)
            setattr(parent, attr, new)
            entry.swapped, entry.reason = True, ""
    return report
