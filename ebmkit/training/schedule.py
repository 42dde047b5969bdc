"""Learning-rate schedules as pure functions of the iteration."""

from __future__ import annotations

import math

import torch

from .config import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, iteration: int, total: int, base_lr: float) -> float:
    """Multiplier of the base learning rate at ``iteration`` (from 0)."""
    f = min(1.0, (iteration + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.decay == "multiplicative":
        f *= cfg.gamma ** (iteration // cfg.every)
    elif cfg.decay in ("cosine", "linear"):
        begin = cfg.start * total
        t = min(1.0, max(0.0, (iteration - begin) / max(1.0, total - begin)))
        f *= 0.5 * (1 + math.cos(math.pi * t)) if cfg.decay == "cosine" else 1.0 - t
    return max(f, cfg.min_lr / base_lr)


def apply_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], cfg: ScheduleConfig, iteration: int, total: int) -> float:
    """Set every parameter group's learning rate for ``iteration``; returns
    the first group's.  Stateless, so resuming needs nothing but the iteration."""
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * lr_factor(cfg, iteration, total, base)
    return optimizer.param_groups[0]["lr"]
