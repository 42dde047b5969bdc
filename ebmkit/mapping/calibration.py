"""Choosing the magnetisation alpha: the metastable window.

Too weak a magnet and no trial leaves its own minimum (every minimum is its
own basin); too strong and every trial reaches its target (one basin).  In
between, in the *metastable* window, trials succeed between minima that no
high barrier separates and fail across high barriers: that is where AD maps
macroscopic structure (Hill, Nijkamp and Zhu 2019, who tune alpha to this
window).  :func:`calibrate_alpha` runs AD between random pairs of minima at
a geometric grid of alphas, in one batch, and returns each alpha's success
rate; the window runs from the largest alpha at which no pair connected to
the smallest at which all did, and the chosen alpha is its geometric middle.

:func:`line_thresholds` sets the grid's range: for a pair (A, B) the largest
slope of U/T met on the straight segment from A to B is the magnetisation a
noise-free chain would need to be dragged along that segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..sampling import frozen, input_gradient
from .basins import Directions, combine, trial_pairs


@dataclass
class Calibration:
    """Success rate of AD between ``pairs`` random pairs of minima for each alpha."""

    alphas: list[float]
    success_rate: list[float]
    pairs: int
    window: tuple[float, float]
    alpha: float
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**{**d, "window": tuple(d["window"])})


def random_pairs(count: int, pairs: int, *, seed: int = 0) -> list[tuple[int, int]]:
    """Up to ``pairs`` distinct unordered pairs (higher, lower) of minima indices, seeded."""
    every = [(j, i) for j in range(count) for i in range(j)]
    g = torch.Generator().manual_seed(seed)
    return [every[int(t)] for t in torch.randperm(len(every), generator=g)[:pairs]]


def line_thresholds(energy: nn.Module, minima: Tensor, pairs: Sequence[tuple[int, int]], *, temperature: float = 1.0,
                    points: int = 32) -> Tensor:
    """For each pair (a, b): max over the segment from minimum a to b of the
    slope of U/T along it, in both directions (the larger)."""
    out = []
    t = torch.linspace(0, 1, points, dtype=minima.dtype, device=minima.device)
    with frozen(energy):
        for a, b in pairs:
            xa, xb = minima[a], minima[b]
            u = (xb - xa) / (xb - xa).norm().clamp_min(1e-12)
            line = xa + t.view(-1, *([1] * xa.dim())) * (xb - xa)
            slope = (input_gradient(energy, line)(line) * u).flatten(1).sum(1) / temperature
            out.append(max(float(-slope.min()), float(slope.max()), 0.0))  # uphill from a, or uphill from b
    return torch.tensor(out)


def default_grid(thresholds: Tensor, points: int = 12) -> list[float]:
    """A geometric grid from 1/4 of the smallest to 4 times the largest threshold."""
    pos = thresholds[thresholds > 0]
    lo, hi = (float(pos.min()) / 4, float(pos.max()) * 4) if pos.numel() else (1e-3, 1.0)
    return [float(v) for v in torch.logspace(math.log10(lo), math.log10(hi), points, dtype=torch.float64)]


def alpha_at_rate(alphas: Sequence[float], rates: Sequence[float], rate: float) -> float | None:
    """The alpha at which the success rate first reaches ``rate``, interpolated
    linearly in log alpha between grid points; None when it never does."""
    for (a0, r0), (a1, r1) in zip(zip(alphas, rates), list(zip(alphas, rates))[1:]):
        if r0 < rate <= r1:
            return math.exp(math.log(a0) + (rate - r0) / (r1 - r0) * (math.log(a1) - math.log(a0)))
    return float(alphas[0]) if rates and rates[0] >= rate else None


def choose(alphas: Sequence[float], rates: Sequence[float], rate: float | None = None
           ) -> tuple[tuple[float, float], float, str]:
    """The metastable window and the alpha at its geometric middle (or, with
    ``rate``, the alpha at which that share of pairs connects)."""
    alphas, rates = list(alphas), list(rates)
    none = [a for a, r in zip(alphas, rates) if r == 0.0]
    every = [a for a, r in zip(alphas, rates) if r == 1.0]
    note = ""
    lo = max(none) if none else alphas[0]
    hi = min((a for a in every if a > lo), default=alphas[-1])
    if not none:
        note = "even the smallest alpha connected some pairs: the window may start lower"
    if not every:
        note = (note + "; " if note else "") + "even the largest alpha left some pairs unconnected: the window may end higher"
    alpha = math.sqrt(lo * hi)
    if rate is not None:
        at = alpha_at_rate(alphas, rates, rate)
        if at is None:
            note = (note + "; " if note else "") + f"no alpha tried connected {rate:.0%} of the pairs: took the largest"
        alpha = at if at is not None else float(alphas[-1])
    return (lo, hi), alpha, note


def calibrate_alpha(run_pairs: Callable[[list[int], list[int], list[float]], tuple[Tensor, Tensor]], pairs: list[tuple[int, int]],
                    alphas: Sequence[float], *, directions: Directions = "both", rate: float | None = None) -> Calibration:
    """Run every pair at every alpha in one batch and pick the window's middle
    (or the alpha at which a share ``rate`` of the pairs connects)."""
    starts, targets, per_trial = [], [], []
    for alpha in alphas:
        a, b = trial_pairs(pairs, directions)
        starts += a
        targets += b
        per_trial += [float(alpha)] * len(a)
    success, barrier = run_pairs(starts, targets, per_trial)
    per = len(trial_pairs(pairs, directions)[0])
    rates = []
    for i, _ in enumerate(alphas):
        connected = combine(pairs, directions, success[i * per:(i + 1) * per], barrier[i * per:(i + 1) * per])
        rates.append(len(connected) / max(1, len(pairs)))
    window, alpha, note = choose(alphas, rates, rate)
    return Calibration(alphas=[float(a) for a in alphas], success_rate=rates, pairs=len(pairs), window=window, alpha=alpha,
                       note=note)


def plot_calibration(cal: Calibration, path) -> None:
    """Success rate against alpha (log scale) with the window and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..images import save_figure

    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(4.2, 3))
    ax.semilogx(cal.alphas, cal.success_rate, "o-", ms=3)
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow grid would label every minor tick
    ax.axvspan(*cal.window, color="C1", alpha=0.15, label="metastable window")
    ax.axvline(cal.alpha, color="C1", lw=1, label=f"chosen alpha {cal.alpha:.3g}")
    ax.set_xlabel("alpha")
    ax.set_ylabel(f"share of {cal.pairs} pairs connected")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=100)


__all__ = ["Calibration", "alpha_at_rate", "calibrate_alpha", "choose", "default_grid", "line_thresholds", "plot_calibration", "random_pairs"]
