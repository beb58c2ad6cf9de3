"""Optimizer and per-iteration learning-rate schedule (CondInst/FCOS: linear warm-up, steps)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """The ``train.optim`` config node."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    milestones: Sequence[int] = field(default_factory=tuple)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"train.optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"train.optim.lr must be positive, got {self.lr}")
        if self.warmup_iters < 0 or not 0 < self.warmup_factor <= 1:
            raise ValueError("train.optim.warmup_iters must be >= 0 and warmup_factor in (0, 1]")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"train.optim.milestones must be increasing, got {list(self.milestones)}")


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based)."""
    if cfg.schedule == "step":
        factor = cfg.gamma ** sum(step >= m for m in cfg.milestones)
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))
    else:
        factor = 1.0
    if step < cfg.warmup_iters:
        alpha = step / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """No weight decay on norms and biases (detectron2's default for CondInst/FCOS)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused kernels: on CPU the per-tensor update loop costs as much as a small model's backward.
    fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)
