"""Training and evaluation, written once for both stacks: a Stack names the
layer namespace, the AdamW class and the gradient clipping a run uses, so
the fastnn run and the torch run differ in nothing else."""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

import fastnn

WARMUP_STEPS = 3  # excluded from the per-step timing: first-call allocations and thread-pool start


@dataclass(frozen=True)
class Stack:
    name: str
    nn: object
    adamw: type
    clip_grad_norm_: Callable


TORCH = Stack("torch", torch.nn, torch.optim.AdamW, torch.nn.utils.clip_grad_norm_)
FASTNN = Stack("fastnn", fastnn.nn, fastnn.optim.AdamW, fastnn.optim.clip_grad_norm_)


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0

    def lr_factor(self, step: int) -> float:
        """Linear warmup over the first tenth (at most 50 steps), then cosine
        decay to a tenth of the peak."""
        warmup = min(50, max(1, self.steps // 10))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


@dataclass
class RunResult:
    stack: str
    items_per_step: int
    unit: str
    losses: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def median_step_s(self) -> float:
        """The median is robust to steps slowed by other processes."""
        return statistics.median(self.step_s[WARMUP_STEPS:] or self.step_s)

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.median_step_s

    @property
    def items_per_s(self) -> float:
        return self.items_per_step / self.median_step_s


class Progress:
    """A one-line progress bar on stderr; redrawn in place on a terminal,
    printed every tenth of the run otherwise (logs, pipes)."""

    WIDTH = 24

    def __init__(self, label: str, total: int, unit: str, stream=None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_draw = 0.0

    def update(self, done: int, loss: float, rate: float) -> None:
        final = done == self.total
        now = time.perf_counter()
        if self.tty:
            if not final and now - self.last_draw < 0.1:
                return
        elif not final and done % max(1, self.total // 10):
            return
        self.last_draw = now
        filled = self.WIDTH * done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"{self.label:>6} [{bar}] {done:>5}/{self.total}  loss {loss:6.3f}  {rate:9,.0f} {self.unit}/s"
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and filters only, not on biases, norm gains
    or embedding tables (the usual transformer recipe)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model: torch.nn.Module, stack: Stack, batches: Iterator, schedule: Schedule, device: torch.device,
          unit: str, show_progress: bool = True) -> RunResult:
    """schedule.steps optimizer steps of model.loss on batches, timing each
    step from the forward to the parameter update (batch loading excluded)."""
    optimizer = stack.adamw(param_groups(model, schedule.weight_decay), lr=schedule.lr, betas=schedule.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_factor)
    progress = Progress(stack.name, schedule.steps, unit) if show_progress else None
    return _train_steps(model, stack, optimizer, scheduler, batches, schedule, device, unit, progress)


def _train_steps(model, stack, optimizer, scheduler, batches, schedule, device, unit, progress) -> RunResult:
    result = None
    model.train()
    wall_start = time.perf_counter()
    for step in range(schedule.steps):
        inputs, targets = (t.to(device, non_blocking=True) for t in next(batches))
        if result is None:
            result = RunResult(stack.name, targets.numel(), unit)
        _synchronize(device)
        start = time.perf_counter()
        loss = model.loss(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stack.clip_grad_norm_(model.parameters(), schedule.clip)
        optimizer.step()
        scheduler.step()
        loss_value = loss.item()  # waits for the device: the step is done
        result.step_s.append(time.perf_counter() - start)
        result.losses.append(loss_value)
        if not math.isfinite(loss_value):
            raise RuntimeError(f"{stack.name} training diverged at step {step}: loss {loss_value}")
        if progress:
            progress.update(step + 1, loss_value, result.items_per_s)
    result.wall_s = time.perf_counter() - wall_start
    return result


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list, device: torch.device) -> dict:
    """Mean cross-entropy (computed by torch in float64, the same metric for
    every model) and accuracy of the argmax, over all held-out targets."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for inputs, targets in batches:
        logits = model(inputs.to(device))
        logits = logits.reshape(-1, logits.shape[-1]).double()
        targets = targets.to(device).reshape(-1)
        total_loss += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(-1) == targets).sum())
        count += targets.numel()
    model.train()
    return {"loss": total_loss / count, "accuracy": correct / count}


@torch.no_grad()
def time_forward(model: torch.nn.Module, inputs: torch.Tensor, repeats: int = 7) -> float:
    """Median milliseconds of one inference forward pass."""
    model.eval()
    device = inputs.device
    model(inputs)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        model(inputs)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@torch.no_grad()
def sample_text(model: torch.nn.Module, data, prompt: str, length: int, seed: int,
                temperature: float = 0.8) -> str:
    """prompt continued by `length` characters drawn from the model's
    temperature-scaled distribution (the last block_size characters as context)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    tokens = data.encode(prompt).unsqueeze(0)
    block = model.cfg.block_size
    for _ in range(length):
        logits = model(tokens[:, -block:])[0, -1].float() / temperature
        next_token = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
        tokens = torch.cat([tokens, next_token.view(1, 1)], dim=1)
    return data.decode(tokens[0])
