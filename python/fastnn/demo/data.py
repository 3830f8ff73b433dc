"""The demo's data: the character corpus shipped in the package (data/README.md
says what it is and why it may be redistributed) and a procedurally drawn
image set of simple shapes. Everything is deterministic given a seed, so the
fastnn run and the torch run see the same batches in the same order."""

from __future__ import annotations

import gzip
from importlib import resources

import torch

CORPUS = "devils_dictionary.txt.gz"


def load_corpus() -> str:
    return gzip.decompress(resources.files(__package__).joinpath("data").joinpath(CORPUS).read_bytes()).decode("ascii")


class CharData:
    """A character-level tokenization of a text: the first (1 - val_fraction)
    of it to train on, the rest held out."""

    def __init__(self, text: str, val_fraction: float = 0.1):
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.chars = sorted(set(text))
        self._index = {c: i for i, c in enumerate(self.chars)}
        tokens = self.encode(text)
        split = int(len(tokens) * (1.0 - val_fraction))
        self.train, self.val = tokens[:split], tokens[split:]

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        unknown = set(text) - self._index.keys()
        if unknown:
            raise ValueError(f"text has characters outside the vocabulary: {sorted(unknown)!r}")
        return torch.tensor([self._index[c] for c in text], dtype=torch.int64)

    def decode(self, tokens) -> str:
        return "".join(self.chars[int(t)] for t in tokens)

    def train_batches(self, batch_size: int, block_size: int, seed: int):
        """Endless (inputs, targets) pairs of (batch_size, block_size) windows
        at random offsets; targets are the inputs shifted by one character."""
        gen = torch.Generator().manual_seed(seed)
        span = torch.arange(block_size + 1)
        while True:
            start = torch.randint(len(self.train) - block_size - 1, (batch_size, 1), generator=gen)
            window = self.train[start + span]
            yield window[:, :-1], window[:, 1:]

    def val_batches(self, batch_size: int, block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The held-out text as consecutive non-overlapping windows."""
        n = (len(self.val) - 1) // block_size
        inputs = self.val[: n * block_size].view(n, block_size)
        targets = self.val[1: n * block_size + 1].view(n, block_size)
        return list(zip(inputs.split(batch_size), targets.split(batch_size)))


SHAPES = ("disk", "ring", "square", "frame", "triangle", "plus")


def draw_shapes(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n grey (n, 1, size, size) images of one shape each, labels (n,) into
    SHAPES. Each shape has a random centre, size, brightness and thickness,
    and the image carries Gaussian noise, so the classes overlap a little
    (rings versus frames at small sizes) and the task is not solved in a
    few steps."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    labels = torch.randint(len(SHAPES), (n,), generator=gen)
    radius = size * (0.15 + 0.2 * rand(n, 1, 1))
    cy, cx = (size / 2 + (size / 2 - radius) * (2 * rand(n, 1, 1) - 1) for _ in range(2))
    thickness = 1.0 + 1.5 * rand(n, 1, 1)
    axis = torch.arange(size, dtype=torch.float32) + 0.5
    dy, dx = axis.view(1, -1, 1) - cy, axis.view(1, 1, -1) - cx
    dist = torch.sqrt(dy * dy + dx * dx)
    box = torch.maximum(dy.abs(), dx.abs())
    masks = torch.stack([
        dist <= radius,
        (dist <= radius) & (dist >= radius - thickness),
        box <= radius,
        (box <= radius) & (box >= radius - thickness),
        (dy <= radius) & (dy >= -radius) & (dx.abs() <= (dy + radius) / 2),
        (torch.minimum(dy.abs(), dx.abs()) <= thickness / 2) & (box <= radius),
    ])
    shape = masks[labels, torch.arange(n)].float()
    brightness = 0.5 + 0.5 * rand(n, 1, 1)
    images = shape * brightness + 0.25 * torch.randn(n, size, size, generator=gen)
    return images.unsqueeze(1), labels


class ShapeData:
    """Train and validation sets of draw_shapes images (different seeds)."""

    def __init__(self, train_size: int = 4096, val_size: int = 1024, image_size: int = 32, seed: int = 0):
        self.image_size, self.num_classes = image_size, len(SHAPES)
        self.train = draw_shapes(train_size, image_size, seed)
        self.val = draw_shapes(val_size, image_size, seed + 1)

    def train_batches(self, batch_size: int, seed: int):
        """Endless (images, labels) batches, a fresh permutation per epoch."""
        gen = torch.Generator().manual_seed(seed)
        images, labels = self.train
        while True:
            order = torch.randperm(len(labels), generator=gen)
            for i in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[i: i + batch_size]
                yield images[idx], labels[idx]

    def val_batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.val
        return list(zip(images.split(batch_size), labels.split(batch_size)))
