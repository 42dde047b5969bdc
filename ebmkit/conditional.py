"""Conditional tasks: an energy U(x | y) bound to a condition y while a chain runs.

The condition of a batch is drawn by a *conditional initializer*: it sees the
data batch, hides pixels with a mask generator (inpainting) or splits a paired
batch (condition image, target image), and returns the chain start z.  The
trainer binds the energy to that condition for the chain and the objective,
so samplers and objectives stay the unconditional ones (Algorithm 1 in its
conditional form)::

    z    = initializer.sample(B, data=batch)   # also sets initializer.condition
    cond = batch_condition(initializer)         # Condition(target, tensor, observed, values)
    with bound(energy, cond):                   # energy(x) now means U(x | y)
        neg = sampler.run(energy, z).x          # the "clamped" sampler keeps observed pixels
        out = objective(energy, cond.target, neg)

Everything here is core: the energies, initializers and mask generators that
implement it are plug-ins (``ebmkit_plugins.conditional_convnet``,
``ebmkit_plugins.conditional_init``, ``ebmkit_plugins.masks``).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .interfaces import Energy, InitialDistribution


@dataclass
class Condition:
    """What a conditional chain is conditioned on, for one batch.

    ``target``: the positive batch x ``(B, C, H, W)`` the model should produce.
    ``tensor``: y as the energy sees it, ``(B, Cy, H, W)`` (inpainting: the
    masked image and the mask).  ``observed``: bool ``(B, 1 or C, H, W)``,
    True where x is known -- those pixels are held fixed (``None``: nothing is
    observed, e.g. paired image translation).  ``values``: the known pixels.
    """

    target: Tensor
    tensor: Tensor
    observed: Tensor | None = None
    values: Tensor | None = None

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def clamp(self, x: Tensor) -> Tensor:
        """x with the observed pixels replaced by their known values
        (differentiable in x's missing pixels)."""
        if self.observed is None:
            return x
        return torch.where(_tile(self.observed, x.shape[0]), _tile(self.values, x.shape[0]), x)

    def to(self, device: torch.device | str) -> "Condition":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Condition(move(self.target), move(self.tensor), move(self.observed), move(self.values))


def masked_condition(target: Tensor, missing: Tensor) -> Condition:
    """The inpainting condition: y = [x with missing pixels set to 0, observed mask].

    ``missing``: bool ``(B, 1, H, W)`` (or ``(B, C, H, W)``), True where hidden.
    """
    if target.dim() != 4:
        raise ConfigError(f"inpainting needs (B, C, H, W) images, got shape {tuple(target.shape)}")
    if missing.dim() != 4 or missing.shape[0] != target.shape[0] or missing.shape[-2:] != target.shape[-2:]:
        raise ConfigError(f"mask of shape {tuple(missing.shape)} does not fit images of shape {tuple(target.shape)}")
    observed = ~missing.to(device=target.device, dtype=torch.bool)
    shown = torch.where(observed, target, torch.zeros_like(target))
    mask_channel = observed[:, :1].to(target.dtype) if observed.shape[1] == 1 else observed.to(target.dtype).mean(1, keepdim=True)
    return Condition(target=target, tensor=torch.cat([shown, mask_channel], 1), observed=observed.expand_as(target),
                     values=target)


def _tile(t: Tensor, rows: int) -> Tensor:
    """A condition of B rows for a batch of k*B rows (the objective scores data
    and samples in one pass: [data; samples])."""
    b = t.shape[0]
    if rows == b:
        return t
    if b == 0 or rows % b:
        raise ConfigError(f"a condition for {b} images cannot serve a batch of {rows}; bind one condition row per chain")
    return t.repeat(rows // b, *([1] * (t.dim() - 1)))


class ConditionalEnergy(Energy):
    """U(x | y): an energy that reads a condition bound to it.

    Subclasses set ``target_channels`` and ``condition_channels`` and implement
    :meth:`energy`.  ``forward(x)`` uses the bound condition (tiled when x has a
    multiple of its rows); with observed pixels, x's own observed pixels are
    replaced by their known values first, so U depends on x only through the
    pixels it has to fill in (noise added to data cannot tell data from samples).
    """

    target_channels: int
    condition_channels: int

    def __init__(self) -> None:
        super().__init__()
        self._condition: Condition | None = None

    @property
    def condition(self) -> Condition | None:
        return self._condition

    def bind(self, condition: Condition | Tensor | None) -> None:
        """Bind (or with ``None`` unbind) the condition for the next calls."""
        if isinstance(condition, Tensor):
            condition = Condition(target=condition.new_zeros(0), tensor=condition)
        if condition is not None:
            cy = condition.tensor.shape[1]
            if cy != self.condition_channels:
                raise ConfigError(f"{type(self).__name__} takes {self.condition_channels} condition channel(s), "
                                  f"got a condition with {cy}; check energy.target_channels against the data")
        self._condition = condition

    @contextmanager
    def bound(self, condition: Condition | Tensor | None):
        previous = self._condition
        self.bind(condition)
        try:
            yield self
        finally:
            self._condition = previous

    def forward(self, x: Tensor, condition: Condition | Tensor | None = None) -> Tensor:
        if condition is not None:
            with self.bound(condition):
                return self.forward(x)
        cond = self._condition
        if cond is None:
            raise ConfigError(f"{type(self).__name__} is a conditional energy U(x | y) and was called without a "
                              "condition: bind one (energy.bound(condition)) or use a conditional initializer "
                              "(e.g. initializer 'masked'); see docs/conditional.md")
        if x.shape[1] != self.target_channels:
            raise ConfigError(f"{type(self).__name__} models {self.target_channels}-channel images, got {x.shape[1]}")
        return self.energy(cond.clamp(x), _tile(cond.tensor, x.shape[0]))

    def energy(self, x: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - interface
        """U(x | y) for matching batches: x ``(B, C, H, W)``, y ``(B, Cy, H, W)``."""
        raise NotImplementedError


class ConditionalInitializer(InitialDistribution):
    """p0 from the condition.  ``sample(n, data=batch)`` draws the batch's
    condition (kept in ``self.condition`` for the trainer) and the chain starts;
    ``start(target, missing)`` does the same for given masks (evaluation)."""

    needs_data = True

    def __init__(self) -> None:
        super().__init__()
        self.condition: Condition | None = None

    def start(self, target: Tensor, missing: Tensor | None = None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def batch_condition(initializer: Any) -> Condition | None:
    """The condition the initializer drew with its last ``sample`` (None for
    unconditional initializers)."""
    return initializer.condition if isinstance(initializer, ConditionalInitializer) else None


def bound(energy: nn.Module, condition: Condition | None):
    """Bind ``energy`` to ``condition`` for a ``with`` block; a no-op without one."""
    if condition is None:
        return nullcontext(energy)
    if not isinstance(energy, ConditionalEnergy):
        raise ConfigError(f"the initializer draws a condition, but the energy ({type(energy).__name__}) is "
                          "unconditional; use a conditional energy such as 'conditional-convnet'")
    return energy.bound(condition)


__all__ = ["Condition", "ConditionalEnergy", "ConditionalInitializer", "batch_condition", "bound", "masked_condition"]
