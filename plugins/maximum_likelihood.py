"""Algorithm 1's objective: maximum likelihood with short-run negatives.

loss = mean U(x_data + sigma * N(0, I)) - mean U(x_samples)

Its gradient in theta is the paper's learning gradient; the samples come in
detached, so nothing flows back into the chain.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

import ebmkit
from ebmkit import Objective, ObjectiveOutput


class MaximumLikelihood(Objective):
    """Algorithm 1: mean U(data + sigma*noise) - mean U(samples)."""

    class Params(ebmkit.Params):
        data_noise: float = Field(0.03, ge=0.0, description="sigma: sd of the noise added to data (the paper: 0.03)")
        epsilon_scale: float | None = Field(None, gt=0.0, description="anatomy recipe: multiply the loss by 2/epsilon^2 "
                                            "(epsilon: the Langevin noise sd); the logged gap stays unscaled")

    def __init__(self, data_noise: float = 0.03, epsilon_scale: float | None = None):
        self.data_noise = data_noise
        # The anatomy paper's loss scaling: the loss is then d_st of the energy the chain samples, (2/eps^2) U.
        self.loss_scale = 2.0 / epsilon_scale**2 if epsilon_scale else 1.0

    def energies(self, energy: nn.Module, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
        """U of the (smoothed) data and of the samples, in one forward pass."""
        if self.data_noise > 0:
            positive = positive + self.data_noise * torch.randn_like(positive)
        u = energy(torch.cat([positive, negative.detach()]))
        return u[: positive.shape[0]], u[positive.shape[0] :]

    def __call__(self, energy: nn.Module, positive: Tensor, negative: Tensor) -> ObjectiveOutput:
        u_pos, u_neg = self.energies(energy, positive, negative)
        gap = u_pos.mean() - u_neg.mean()
        return ObjectiveOutput(
            loss=gap * self.loss_scale if self.loss_scale != 1.0 else gap,
            logs={"energy_data": u_pos.mean().item(), "energy_samples": u_neg.mean().item(), "gap": gap.item()},
        )


@ebmkit.hookimpl
def ebmkit_objectives():
    return {"maximum-likelihood": MaximumLikelihood}
