"""Macroscopic basins from Attraction-Diffusion trials between minima.

Minima are taken in order of increasing energy (the ADELM procedure of Hill,
Nijkamp and Zhu).  Each one is tried against the representative -- the
lowest minimum -- of every basin found so far; it joins the basin it reaches
with the lowest barrier, or founds a new basin when it reaches none.  As the
minima come in energy order, a representative is never displaced.

Trials run in *waves* so that many pairs share one batch: the next ``wave``
minima are tried against the existing representatives at once, and those
that reach none are tried against each other; resolving the wave in energy
order afterwards gives exactly the sequential procedure's decisions.

Between basins, :func:`basin_barriers` runs trials between every pair of
representatives on a ladder of increasing alpha; the first alpha at which a
pair connects gives its barrier (a stronger magnet pulls the chain along a
straighter, higher path, so the lowest alpha that connects gives the
tightest estimate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Directions = Literal["both", "forward", "backward"]

RunPairs = Callable[[list[int], list[int], float], tuple[Tensor, Tensor]]
"""``run_pairs(a, b, alpha)``: one AD trial per pair from minimum a[i] towards
minimum b[i] at magnetisation alpha; returns (success (n,), barrier (n,))."""


def trial_pairs(pairs: Sequence[tuple[int, int]], directions: Directions) -> tuple[list[int], list[int]]:
    """Starts and targets of the trials for (new, old) pairs: new -> old
    ('forward'), old -> new ('backward'), or both, forward first."""
    fwd = [(a, b) for a, b in pairs]
    bwd = [(b, a) for a, b in pairs]
    chosen = {"forward": fwd, "backward": bwd, "both": fwd + bwd}[directions]
    return [a for a, _ in chosen], [b for _, b in chosen]


def combine(pairs: Sequence[tuple[int, int]], directions: Directions, success: Tensor, barrier: Tensor
            ) -> dict[tuple[int, int], float]:
    """{pair: barrier} for the pairs connected in any direction (the lowest
    barrier among the directions that connected)."""
    n = len(pairs)
    parts = 2 if directions == "both" else 1
    out: dict[tuple[int, int], float] = {}
    for p in range(parts):
        for i, pair in enumerate(pairs):
            if bool(success[p * n + i]):
                b = float(barrier[p * n + i])
                out[pair] = min(b, out.get(pair, math.inf))
    return out


@dataclass
class Grouping:
    """Basins of the minima (indexed in increasing energy), built a wave at a time.

    ``basin[m]``: the basin of minimum m (-1: not processed yet);
    ``barrier[m]``: the barrier of the trial that joined m to its basin's
    representative (None for representatives); ``reps[k]``: the minimum that
    represents basin k; ``done``: minima processed; ``trials``: AD chains run.
    """

    count: int
    basin: list[int] = field(default_factory=list)
    barrier: list[float | None] = field(default_factory=list)
    reps: list[int] = field(default_factory=list)
    done: int = 0
    trials: int = 0

    def __post_init__(self) -> None:
        if not self.basin:
            self.basin = [-1] * self.count
            self.barrier = [None] * self.count

    @property
    def finished(self) -> bool:
        return self.done >= self.count

    def to_dict(self) -> dict:
        return {"count": self.count, "basin": self.basin, "barrier": self.barrier, "reps": self.reps, "done": self.done,
                "trials": self.trials}

    @classmethod
    def from_dict(cls, d: dict) -> "Grouping":
        return cls(**d)

    def process_wave(self, run_pairs: RunPairs, alpha: float, wave: int, directions: Directions = "both") -> int:
        """Group the next ``wave`` minima; returns how many were processed."""
        new = list(range(self.done, min(self.count, self.done + wave)))
        if not new:
            return 0
        # 1. Every new minimum against every existing representative, in one batch.
        old_pairs = [(m, r) for m in new for r in self.reps]
        joined: dict[int, tuple[float, int]] = {}  # minimum -> (barrier, basin)
        if old_pairs:
            a, b = trial_pairs(old_pairs, directions)
            success, barrier = run_pairs(a, b, alpha)
            self.trials += len(a)
            for (m, r), bar in combine(old_pairs, directions, success, barrier).items():
                k = self.basin[r]
                if m not in joined or bar < joined[m][0]:
                    joined[m] = (bar, k)
        # 2. Those that reached none, against each other (a lower one may found a basin the higher one joins).
        free = [m for m in new if m not in joined]
        inner_pairs = [(j, i) for n_, j in enumerate(free) for i in free[:n_]]
        links: dict[tuple[int, int], float] = {}
        if inner_pairs:
            a, b = trial_pairs(inner_pairs, directions)
            success, barrier = run_pairs(a, b, alpha)
            self.trials += len(a)
            links = combine(inner_pairs, directions, success, barrier)
        # 3. Resolve in energy order, as the one-at-a-time procedure would.
        for m in new:
            if m in joined:
                bar, k = joined[m]
                self.basin[m], self.barrier[m] = k, bar
                continue
            reachable = [(bar, self.basin[i]) for (j, i), bar in links.items() if j == m and self.reps[self.basin[i]] == i]
            if reachable:
                bar, k = min(reachable)
                self.basin[m], self.barrier[m] = k, bar
            else:
                self.basin[m] = len(self.reps)
                self.reps.append(m)
        self.done = new[-1] + 1
        return len(new)


@dataclass
class BarrierSearch:
    """Barriers between basin representatives, one alpha of the ladder at a time.

    ``barrier[i][j]`` (symmetric; None: not connected yet) is the barrier
    between basins i and j, ``alpha[i][j]`` the alpha that connected them;
    ``level``: ladder rungs done."""

    reps: list[int]
    ladder: list[float]
    barrier: list[list[float | None]] = field(default_factory=list)
    alpha: list[list[float | None]] = field(default_factory=list)
    level: int = 0
    trials: int = 0

    def __post_init__(self) -> None:
        k = len(self.reps)
        if not self.barrier:
            self.barrier = [[None] * k for _ in range(k)]
            self.alpha = [[None] * k for _ in range(k)]

    @property
    def open_pairs(self) -> list[tuple[int, int]]:
        k = len(self.reps)
        return [(j, i) for j in range(k) for i in range(j) if self.barrier[j][i] is None]

    @property
    def finished(self) -> bool:
        return self.level >= len(self.ladder) or not self.open_pairs

    def to_dict(self) -> dict:
        return {"reps": self.reps, "ladder": self.ladder, "barrier": self.barrier, "alpha": self.alpha,
                "level": self.level, "trials": self.trials}

    @classmethod
    def from_dict(cls, d: dict) -> "BarrierSearch":
        return cls(**d)

    def step(self, run_pairs: RunPairs, directions: Directions = "both") -> int:
        """Try the still unconnected pairs at the next alpha; returns how many connected."""
        pairs = self.open_pairs
        alpha = self.ladder[self.level]
        found = {}
        if pairs:
            reps = [(self.reps[j], self.reps[i]) for j, i in pairs]
            a, b = trial_pairs(reps, directions)
            success, barrier = run_pairs(a, b, alpha)
            self.trials += len(a)
            by_rep = combine(reps, directions, success, barrier)
            found = {pair: by_rep[rp] for pair, rp in zip(pairs, reps) if rp in by_rep}
        for (j, i), bar in found.items():
            self.barrier[j][i] = self.barrier[i][j] = bar
            self.alpha[j][i] = self.alpha[i][j] = alpha
        self.level += 1
        return len(found)

    def matrix(self) -> Tensor:
        """Barriers as a (K, K) tensor, inf where no trial connected."""
        return torch.tensor([[math.inf if v is None else v for v in row] for row in self.barrier], dtype=torch.float64)


__all__ = ["BarrierSearch", "Directions", "Grouping", "RunPairs", "combine", "trial_pairs"]
