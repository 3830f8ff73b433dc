"""Input builders for the checklist in TESTING.md: random tensors of a
dtype, strided views whose gaps hold NaN (a wrong-stride read shows up as
NaN), and NaN-poisoned outputs (an unwritten element shows up as NaN); and
the accuracy rule over repeated trials for problems too small for one run's
largest error to mean anything (ErrorSample, check_sampled)."""

from __future__ import annotations

import random

import torch
from hypothesis import strategies as st

from fastnn.testing import assert_close

ODD_SIZES = [1, 7, 8, 15, 17, 31, 33, 63, 65, 97, 1023, 1025]


def fresh_seeds():
    """The data seed of a hypothesis test, drawn fresh each time and not
    chosen by hypothesis: hypothesis explores shapes and flags, the inputs
    are fresh random (TESTING.md). A seed hypothesis controls would let its
    search and shrinking steer toward the rare inputs on which a statistical
    comparison is lost, and its CI profile (derandomize) would then replay
    that one input on every run. The falsifying example still prints the
    seed, to reproduce a failure."""
    return st.builds(lambda: random.SystemRandom().randrange(2**31))


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


class ErrorSample:
    """fastnn's, PyTorch's and the float64 reference's outputs, per output
    name, gathered over repeated trials; check() applies the accuracy rule
    to each output's concatenation.

    The rule compares largest errors. Over thousands of elements that is a
    property of an implementation; over a handful it is one rounding, and
    either library wins a single-element comparison by chance (near a root,
    float32 rounding alone decides which is closer). Small problems are
    therefore drawn again with fresh inputs of the same shape (check_sampled)
    until each output has enough elements to be a statistic."""

    def __init__(self):
        self.parts: dict[str, list] = {}

    def add(self, name, out, torch_out, ref):
        self.parts.setdefault(name, []).append((out, torch_out, ref))

    def enough(self, min_elements: int) -> bool:
        sizes = [sum(p[0].numel() for p in parts) for parts in self.parts.values()]
        return all(s == 0 or s >= min_elements for s in sizes)

    def check(self):
        for name, parts in self.parts.items():
            out, torch_out, ref = (torch.cat([p[i].detach().reshape(-1).cpu() for p in parts]) for i in range(3))
            assert_close(out, torch_out, ref, name)


def check_sampled(trial, seed, min_elements: int = 16384, max_trials: int = 32):
    """Runs trial(gen, sample) on generators seeded seed, seed + 1, ... (seed
    an int, or a torch.Generator to draw it from) until every non-empty
    output in `sample` has min_elements (or max_trials ran), then applies the
    accuracy rule to each output over all trials."""
    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(2**62, (1,), generator=seed))
    sample = ErrorSample()
    for i in range(max_trials):
        trial(torch.Generator().manual_seed(seed + i), sample)
        if sample.enough(min_elements):
            break
    sample.check()
