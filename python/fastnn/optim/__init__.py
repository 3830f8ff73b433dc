"""Fused CPU and CUDA optimizers, drop-in for torch.optim: Adam, AdamW, SGD, RMSprop
(param groups, schedulers, state_dict in both directions, GradScaler,
bfloat16 parameters with float32 state), and clip_grad_norm_."""

from .adam import Adam, AdamW
from .clip import clip_grad_norm_
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Adam", "AdamW", "SGD", "RMSprop", "clip_grad_norm_"]
