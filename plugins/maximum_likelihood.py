"""Algorithm 1's objective: maximum likelihood with short-run negatives.

loss = mean U(x_data + sigma * N(0, I)) - mean U(x_samples)

Its gradient in theta is the paper's learning gradient; the samples come in
detached, so nothing flows back into the chain.

Stabilisers (all off by default; the paper's recipe uses none of them; see
docs/recipes.md for when to reach for each):

* ``energy_penalty`` alpha: adds alpha * (mean U(data)^2 + mean U(samples)^2),
  which keeps the energies near 0 so that they cannot run away together;
* ``gap_cap`` c: the gap term becomes c * tanh(gap / c) -- the same as the gap
  while |gap| << c, bounded by c, its gradient shrinking by 1 - tanh^2(gap/c);
* ``data_noise_final``: anneals sigma linearly from ``data_noise`` to this
  value over the last ``(1 - data_noise_anneal_start)`` of the run (the paper
  anneals sigma near the end).

``epsilon_scale`` eps (the anatomy paper's recipe) multiplies the whole loss
by 2 / eps^2; the logged ``gap`` stays unscaled.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor, nn

import ebmkit
from ebmkit import Objective, ObjectiveOutput


class MaximumLikelihood(Objective):
    """Algorithm 1: mean U(data + sigma*noise) - mean U(samples)."""

    class Params(ebmkit.Params):
        data_noise: float = Field(0.03, ge=0.0, description="sigma: sd of the noise added to data (the paper: 0.03)")
        epsilon_scale: float | None = Field(None, gt=0.0, description="anatomy recipe: multiply the loss by 2/epsilon^2 "
                                            "(epsilon: the Langevin noise sd); the logged gap stays unscaled")
        energy_penalty: float = Field(0.0, ge=0.0, description="alpha: adds alpha*(mean U(data)^2 + mean U(samples)^2) (0: off)")
        gap_cap: PositiveFloat | None = Field(None, description="c: the gap term becomes c*tanh(gap/c) (None: off)")
        data_noise_final: float | None = Field(None, ge=0.0, description="anneal sigma linearly to this near the end (None: off)")
        data_noise_anneal_start: float = Field(0.8, ge=0.0, lt=1.0, description="fraction of the run before sigma anneals")

    def __init__(self, data_noise: float = 0.03, epsilon_scale: float | None = None, energy_penalty: float = 0.0,
                 gap_cap: float | None = None, data_noise_final: float | None = None, data_noise_anneal_start: float = 0.8):
        self.data_noise = data_noise
        self.data_noise_start = data_noise  # the configured sigma; data_noise is the current one
        # The anatomy paper's loss scaling: the loss is then d_st of the energy the chain samples, (2/eps^2) U.
        self.loss_scale = 2.0 / epsilon_scale**2 if epsilon_scale else 1.0
        self.energy_penalty, self.gap_cap = energy_penalty, gap_cap
        self.data_noise_final, self.data_noise_anneal_start = data_noise_final, data_noise_anneal_start

    def set_progress(self, iteration: int, total: int) -> dict[str, float]:
        """Anneal sigma: constant until ``data_noise_anneal_start * total``,
        then linear to ``data_noise_final`` at the last iteration."""
        if self.data_noise_final is None:
            return {}
        begin = self.data_noise_anneal_start * total
        t = min(1.0, max(0.0, (iteration - begin) / max(1.0, total - 1 - begin)))
        self.data_noise = self.data_noise_start + t * (self.data_noise_final - self.data_noise_start)
        return {"data_noise": self.data_noise}

    def energies(self, energy: nn.Module, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
        """U of the (smoothed) data and of the samples, in one forward pass."""
        if self.data_noise > 0:
            positive = positive + self.data_noise * torch.randn_like(positive)
        u = energy(torch.cat([positive, negative.detach()]))
        return u[: positive.shape[0]], u[positive.shape[0] :]

    def __call__(self, energy: nn.Module, positive: Tensor, negative: Tensor) -> ObjectiveOutput:
        u_pos, u_neg = self.energies(energy, positive, negative)
        gap = u_pos.mean() - u_neg.mean()
        logs = {"energy_data": u_pos.mean().item(), "energy_samples": u_neg.mean().item(), "gap": gap.item()}
        loss = gap
        if self.gap_cap is not None:  # bounded gap term; the logged gap stays the raw one
            loss = self.gap_cap * torch.tanh(gap / self.gap_cap)
        if self.energy_penalty > 0:
            penalty = self.energy_penalty * (u_pos.pow(2).mean() + u_neg.pow(2).mean())
            loss = loss + penalty
            logs["energy_penalty"] = penalty.item()
        if self.loss_scale != 1.0:  # anatomy scaling of the whole loss (gap term and any penalty)
            loss = loss * self.loss_scale
        return ObjectiveOutput(loss=loss, logs=logs, gap=logs["gap"])


@ebmkit.hookimpl
def ebmkit_objectives():
    return {"maximum-likelihood": MaximumLikelihood}
