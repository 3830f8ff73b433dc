"""The demo's two models, each written once against a layer namespace `nn`
(torch.nn or fastnn.nn: Linear, LayerNorm, GELU, ReLU, Conv2d, MaxPool2d,
CrossEntropyLoss and functional.scaled_dot_product_attention), so the torch
run and the fastnn run are the same architecture with the same parameter
names, and `twin()` gives the fastnn model the torch model's initial weights.

The token and position tables are torch.nn.Embedding in both (a gather,
which fastnn does not provide)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 96


class CausalSelfAttention(torch.nn.Module):
    def __init__(self, cfg: GPTConfig, nn):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.attention = nn.functional.scaled_dot_product_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape
        # (B, S, 3, H, D) -> three (B, H, S, D) views of the one qkv buffer;
        # both attention implementations take strided inputs, so no copies.
        q, k, v = self.qkv(x).view(b, s, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        y = self.attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, s, c))


class Block(torch.nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig, nn):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, nn)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = torch.nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                       nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(torch.nn.Module):
    """A character-level GPT: (B, S) int64 tokens -> (B, S, vocab) logits."""

    def __init__(self, cfg: GPTConfig, nn=torch.nn):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = torch.nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = torch.nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = torch.nn.Sequential(*(Block(cfg, nn) for _ in range(cfg.n_layer)))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size)
        self.loss_fn = nn.CrossEntropyLoss()
        self.apply(_gpt_init)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        s = tokens.shape[1]
        if s > self.cfg.block_size:
            raise ValueError(f"tokens has {s} positions, more than block_size={self.cfg.block_size}")
        pos = torch.arange(s, device=tokens.device)
        return self.head(self.ln_f(self.blocks(self.tok_emb(tokens) + self.pos_emb(pos))))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(tokens)
        return self.loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def twin(self, nn, device=None) -> "GPT":
        return _twin(self, GPT(self.cfg, nn), device)

    def describe(self) -> dict:
        return {"model": "GPT", **asdict(self.cfg), "parameters": _count(self)}


def _gpt_init(module: torch.nn.Module) -> None:
    # GPT-2's scheme: N(0, 0.02) weights, zero biases. torch's default
    # (uniform, 1/sqrt(fan_in)) trains slower at this depth.
    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
        torch.nn.init.normal_(module.weight, 0.0, 0.02)
    if isinstance(module, torch.nn.Linear) and module.bias is not None:
        torch.nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class CNNConfig:
    num_classes: int
    image_size: int = 32
    channels: tuple[int, int] = (16, 32)
    hidden: int = 128


class CNN(torch.nn.Module):
    """(N, 1, S, S) images -> (N, classes) logits: two conv-ReLU-maxpool
    stages, then a two-layer classifier on the flattened features."""

    def __init__(self, cfg: CNNConfig, nn=torch.nn):
        super().__init__()
        if cfg.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two 2x2 pools), got {cfg.image_size}")
        self.cfg = cfg
        c1, c2 = cfg.channels
        self.features = torch.nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = torch.nn.Sequential(
            nn.Linear(c2 * (cfg.image_size // 4) ** 2, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.num_classes))
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images).flatten(1))

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self(images), labels)

    def twin(self, nn, device=None) -> "CNN":
        return _twin(self, CNN(self.cfg, nn), device)

    def describe(self) -> dict:
        return {"model": "CNN", **asdict(self.cfg), "parameters": _count(self)}


def _twin(source: torch.nn.Module, target: torch.nn.Module, device) -> torch.nn.Module:
    """target with a copy of source's weights, on device (default: source's)."""
    target.load_state_dict(source.state_dict())
    return target.to(next(source.parameters()).device if device is None else device)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
