"""Local minima of U: gradient descent from chosen starts, then de-duplication.

Descent is the toolkit's noise-free chain (the ``gradient-descent`` sampler,
or any sampler run with its noise off) run a chunk at a time until each
chain moves less than ``tolerance`` per step (root mean square over the
coordinates) or ``max_steps`` have run.  Minima closer than ``delta`` to a
lower one are the same minimum: the lower one keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..interfaces import Sampler
from ..sampling import frozen, input_gradient
from .attraction_diffusion import energies


@dataclass
class Descent:
    """End states of gradient descent, one per start: ``x``, their energy,
    gradient norm ||grad U||, the steps run and whether the chain settled
    (moved less than the tolerance per step) before ``max_steps``."""

    x: Tensor
    energy: Tensor
    grad_norm: Tensor
    steps: Tensor
    converged: Tensor


def gradient_norms(energy: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """||grad_x U(x)|| per row."""
    out = []
    with frozen(energy):
        for i in range(0, x.shape[0], batch_size):
            part = x[i:i + batch_size]
            out.append(input_gradient(energy, part)(part).flatten(1).norm(dim=1).detach())
    return torch.cat(out) if out else x.new_zeros(0)


def descend(energy: nn.Module, sampler: Sampler, starts: Tensor, *, max_steps: int = 1000, tolerance: float = 1e-4,
            check_every: int = 50, on_chunk: Callable[[int], None] | None = None) -> Descent:
    """Gradient descent from each start (``sampler`` should be noise-free,
    e.g. ``gradient-descent``).  A chain stops once its mean movement per
    step over a chunk of ``check_every`` steps, divided by sqrt(dimension),
    falls below ``tolerance``.  ``on_chunk(steps)`` reports progress."""
    if max_steps < 0 or check_every < 1 or tolerance < 0:
        raise ValueError(f"need max_steps >= 0, check_every >= 1, tolerance >= 0; got {max_steps}, {check_every}, {tolerance}")
    n = starts.shape[0]
    dim = max(1, starts[0].numel())
    x = starts.detach().clone()
    steps = torch.zeros(n, dtype=torch.long)
    converged = torch.zeros(n, dtype=torch.bool)
    taken = 0
    while taken < max_steps and not bool(converged.all()):
        active = (~converged).nonzero().flatten()
        c = min(check_every, max_steps - taken)
        before = x[active]
        after = sampler.run(energy, before, steps=c).x.detach().to(memory_format=torch.contiguous_format)
        moved = (after - before).flatten(1).norm(dim=1).cpu() / (c * dim ** 0.5)
        x[active] = after
        steps[active] += c
        converged[active] = moved < tolerance
        taken += c
        if on_chunk is not None:
            on_chunk(c)
    return Descent(x=x, energy=energies(energy, x).cpu(), grad_norm=gradient_norms(energy, x).cpu(), steps=steps,
                   converged=converged)


def deduplicate(x: Tensor, energy: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """Distinct minima among ``x``: in order of increasing energy, a point
    within ``delta`` of a minimum already kept is that minimum.

    Returns ``keep`` (indices into x of the distinct minima, lowest energy
    first) and ``owner`` (for each point, its minimum as a position in
    ``keep``)."""
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}")
    order = torch.argsort(energy, stable=True)
    flat = x.flatten(1).float()
    keep: list[int] = []
    owner = torch.empty(x.shape[0], dtype=torch.long)
    for i in order.tolist():
        if keep:
            d = (flat[keep] - flat[i]).norm(dim=1)
            j = int(d.argmin())
            if float(d[j]) < delta:
                owner[i] = j
                continue
        owner[i] = len(keep)
        keep.append(i)
    return torch.tensor(keep, dtype=torch.long), owner


__all__ = ["Descent", "descend", "deduplicate", "gradient_norms"]
