"""Attraction-Diffusion (Hill, Nijkamp and Zhu 2019, arXiv 1803.01043).

From a local minimum A, run Langevin dynamics on the *magnetised* energy

    U_B(x) = U(x) / T + alpha * ||x - x_B||

starting at A.  The magnet pulls the chain towards the target minimum B with
a force of constant size alpha; the energy holds it in A's basin.  If the
chain comes within ``delta`` of B before its closest approach to B stops
improving for ``patience`` steps, A and B lie in one macroscopic basin at
that temperature and magnetisation, and the highest energy U met on the way
is an estimate (an upper bound) of the barrier between them.

The chain is the toolkit's own sampler run against :class:`MagnetisedEnergy`
(any Langevin-type sampler: x <- x - step * grad U_B + noise * xi).  With the
trained chain's step and noise, T = 1 is the temperature that chain samples
at, and one step moves the chain ``step * alpha`` towards B on top of what
the energy does.  Many (start, target) pairs run as one batch, each with its
own target, alpha and T; finished chains leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..interfaces import Energy, Sampler
from ..sampling import frozen, input_gradient


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """A per-row value (B,) shaped to broadcast against ``like`` (B, *shape)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def distances(x: Tensor, targets: Tensor) -> Tensor:
    """Euclidean distance of each row of ``x`` to the same row of ``targets``."""
    return (x - targets).flatten(1).norm(dim=1)


class MagnetisedEnergy(Energy):
    """U(x) / T + alpha * ||x - target||, with one target, alpha and T per row.

    ``alpha`` and ``temperature`` are numbers or tensors ``(B,)``.  The input
    gradient reuses the wrapped energy's own fast path where it has one.
    """

    def __init__(self, energy: nn.Module, targets: Tensor, alpha: float | Tensor, temperature: float | Tensor = 1.0):
        super().__init__()
        self.energy = energy
        n = targets.shape[0]
        self.register_buffer("targets", targets.detach(), persistent=False)
        self.register_buffer("alpha", torch.as_tensor(alpha, dtype=targets.dtype, device=targets.device).expand(n).clone(),
                             persistent=False)
        self.register_buffer("temperature", torch.as_tensor(temperature, dtype=targets.dtype,
                                                            device=targets.device).expand(n).clone(), persistent=False)
        # Same memory-format promise as the energy it wraps (the magnet term is elementwise).
        self.channels_last_ok = bool(getattr(energy, "channels_last_ok", False))

    def forward(self, x: Tensor) -> Tensor:
        return self.energy(x) / self.temperature + self.alpha * distances(x, self.targets)

    def input_grad_fn(self, like: Tensor) -> Callable[[Tensor], Tensor]:
        inner = input_gradient(self.energy, like)

        def gradient(x: Tensor) -> Tensor:
            diff = x - self.targets
            # d/dx ||x - t|| = (x - t) / ||x - t||; at the target itself the magnet exerts no force.
            pull = self.alpha / distances(x, self.targets).clamp_min(1e-12)
            return inner(x) / _rows(self.temperature, x) + _rows(pull, x) * diff

        return gradient


class WalledEnergy(Energy):
    """U(x) + (stiffness / 2) * ||x - clamp(x, low, high)||^2: U inside the box, a quadratic wall outside.

    Image potentials learned on [-1, 1] often keep falling outside it (ever
    higher contrast), so descent would never settle; the wall keeps chains
    on the image domain.  For a gradient step s the wall is stable while
    s * stiffness < 2.
    """

    def __init__(self, energy: nn.Module, low: float, high: float, stiffness: float):
        super().__init__()
        if not low < high or stiffness <= 0:
            raise ValueError(f"need low < high and stiffness > 0, got ({low}, {high}) and {stiffness}")
        self.energy, self.low, self.high, self.stiffness = energy, float(low), float(high), float(stiffness)
        self.channels_last_ok = bool(getattr(energy, "channels_last_ok", False))

    def forward(self, x: Tensor) -> Tensor:
        out = x - x.clamp(self.low, self.high)
        return self.energy(x) + 0.5 * self.stiffness * out.flatten(1).pow(2).sum(1)

    def input_grad_fn(self, like: Tensor) -> Callable[[Tensor], Tensor]:
        inner = input_gradient(self.energy, like)
        return lambda x: inner(x) + self.stiffness * (x - x.clamp(self.low, self.high))


def energies(energy: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """U(x) for a large batch, in pieces, without a graph."""
    with frozen(energy), torch.no_grad():
        return torch.cat([energy(x[i:i + batch_size]).detach() for i in range(0, x.shape[0], batch_size)]) \
            if x.shape[0] else x.new_zeros(0)


@dataclass
class ADResult:
    """What :func:`attraction_diffusion` returns, one entry per chain.

    ``success``: the chain came within delta of its target.  ``barrier``: the
    highest U(x) met from the start up to success (or up to the stop, for a
    failed chain).  ``steps``: steps taken until success or stop.
    ``closest``: the closest the chain came to its target.
    """

    success: Tensor
    barrier: Tensor
    steps: Tensor
    closest: Tensor


def attraction_diffusion(
    energy: nn.Module,
    sampler: Sampler,
    starts: Tensor,
    targets: Tensor,
    *,
    alpha: float | Tensor,
    temperature: float | Tensor = 1.0,
    delta: float,
    patience: int = 100,
    max_steps: int = 2000,
    check_every: int = 10,
    on_chunk: Callable[[int], None] | None = None,
) -> ADResult:
    """Run one AD trial per row: from ``starts[i]`` towards ``targets[i]``.

    A trial succeeds at the first step whose state lies within ``delta`` of
    its target; it fails once its closest approach has not improved for
    ``patience`` steps, or after ``max_steps``.  The sampler runs
    ``check_every`` steps at a time (its own Langevin step, recorded at each
    step), then finished chains leave the batch.  ``on_chunk(n)`` is called
    with the number of chains that finished in each chunk (for progress).
    """
    if starts.shape != targets.shape:
        raise ValueError(f"starts and targets differ in shape: {tuple(starts.shape)} vs {tuple(targets.shape)}")
    if delta <= 0 or patience < 1 or max_steps < 0 or check_every < 1:
        raise ValueError(f"need delta > 0, patience >= 1, max_steps >= 0, check_every >= 1; got {delta}, {patience}, "
                         f"{max_steps}, {check_every}")
    n = starts.shape[0]
    device = starts.device
    alpha = torch.as_tensor(alpha, dtype=starts.dtype, device=device).expand(n)
    temperature = torch.as_tensor(temperature, dtype=starts.dtype, device=device).expand(n)
    barrier = energies(energy, starts).clone()
    best = distances(starts, targets)
    stall = torch.zeros(n, dtype=torch.long, device=device)
    steps = torch.zeros(n, dtype=torch.long, device=device)
    success = best < delta
    done = success.clone()
    if on_chunk is not None and done.any():
        on_chunk(int(done.sum()))
    x = starts.detach().clone()
    taken = 0
    while taken < max_steps and not bool(done.all()):
        active = (~done).nonzero().flatten()
        c = min(check_every, max_steps - taken)
        magnet = MagnetisedEnergy(energy, targets[active], alpha[active], temperature[active])
        out = sampler.run(magnet, x[active], steps=c, record=tuple(range(1, c + 1)))
        states = torch.stack([out.trajectory[k] for k in range(1, c + 1)])          # (c, b, *shape)
        u = energies(energy, states.flatten(0, 1)).view(c, -1)                      # (c, b)
        d = distances(states.flatten(0, 1), targets[active].repeat(c, *([1] * (targets.dim() - 1)))).view(c, -1)
        live = torch.ones(active.numel(), dtype=torch.bool, device=device)
        b_barrier, b_best, b_stall = barrier[active], best[active], stall[active]
        b_steps, b_success = steps[active], success[active]
        for k in range(c):
            # Chains still running at step k take it into account; finished ones are frozen.
            b_barrier = torch.where(live, torch.maximum(b_barrier, u[k]), b_barrier)
            improved = d[k] < b_best
            b_best = torch.where(live & improved, d[k], b_best)
            b_stall = torch.where(live, torch.where(improved, 0, b_stall + 1), b_stall)
            b_steps = torch.where(live, taken + k + 1, b_steps)
            reached = live & (d[k] < delta)
            b_success = b_success | reached
            live = live & ~reached & (b_stall < patience)
        barrier[active], best[active], stall[active] = b_barrier, b_best, b_stall
        steps[active], success[active] = b_steps, b_success
        x[active] = out.x.detach().to(memory_format=torch.contiguous_format)
        finished = active[~live]
        done[finished] = True
        taken += c
        if on_chunk is not None and finished.numel():
            on_chunk(int(finished.numel()))
    if on_chunk is not None and not bool(done.all()):
        on_chunk(int((~done).sum()))
    return ADResult(success=success.cpu(), barrier=barrier.cpu(), steps=steps.cpu(), closest=best.cpu())


__all__ = ["ADResult", "MagnetisedEnergy", "WalledEnergy", "attraction_diffusion", "distances", "energies"]
