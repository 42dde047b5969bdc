"""The learning rate: schedules as pure functions of the iteration, and its one writer."""

from __future__ import annotations

import math

import torch

from ..config import ScheduleConfig


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


class LearningRate:
    """The one writer of the optimiser's learning rate.

    lr(i) = base x factor x schedule(i): ``base`` is the configured rate as
    the optimiser was built with it (already scaled for the process count and
    the anatomy recipe's epsilon^2/2), ``factor`` the divergence guard's
    (1 until a rollback lowers it), and the schedule a pure function of the
    iteration, so a resumed run needs nothing but the iteration and the factor.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, total: int) -> None:
        self.optimizer, self.schedule, self.total = optimizer, schedule, total
        self.base = [group["lr"] for group in optimizer.param_groups]

    def bases(self, factor: float = 1.0) -> list[float]:
        """The rates the schedule multiplies under ``factor``."""
        return [b * factor for b in self.base]

    def apply(self, iteration: int, factor: float = 1.0) -> float:
        """Set every group's rate for ``iteration`` (from 0); returns the first group's."""
        return apply_lr(self.optimizer, self.bases(factor), self.schedule, iteration, self.total)
