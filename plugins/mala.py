"""Metropolis-adjusted Langevin (MALA).

Each step proposes the Langevin move y = x - step * grad U(x) + noise * xi and
accepts it with the Metropolis-Hastings probability, so the chain leaves its
target exactly invariant (plain Langevin only approximately).

The target is the distribution the Langevin chain with the same step and
noise approximates, p(x) ~ exp(-beta U(x)) with beta = 2 step / noise^2:

* coupled form (``epsilon``): step = epsilon^2/2, noise = epsilon, beta = 1;
* decoupled form (``step_size``, ``noise``): beta = 2 step / noise^2, e.g. the
  anatomy paper's step 1 with noise epsilon (its energy is scaled by 2/eps^2).

log alpha = -beta [U(y) - U(x)] - (|x - y + step g(y)|^2 - |y - x + step g(x)|^2) / (2 noise^2)
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat, model_validator
from torch import Tensor, nn

import ebmkit
from ebmkit import SampleResult, Sampler
from ebmkit.sampling import frozen, langevin_coefficients, langevin_step


class MALAParams(ebmkit.Params):
    steps: int = Field(100, ge=0, description="K, the number of steps")
    epsilon: PositiveFloat | None = Field(None, description="coupled form: step = epsilon^2/2, noise = epsilon (target exp(-U))")
    step_size: PositiveFloat | None = Field(None, description="decoupled form: coefficient of grad U")
    noise: PositiveFloat | None = Field(None, description="decoupled form: sd of the proposal noise")

    @model_validator(mode="after")
    def _one_form(self):
        if self.epsilon is not None and (self.step_size is not None or self.noise is not None):
            raise ValueError("give either epsilon (coupled) or step_size and noise (decoupled), not both")
        if self.epsilon is None and (self.step_size is None) != (self.noise is None):
            raise ValueError("the decoupled form needs both step_size and noise")
        return self

    def resolved(self) -> tuple[float, float]:
        """(step, noise sd); default: coupled with epsilon = 0.01 (the langevin
        sampler's rule, :func:`ebmkit.sampling.langevin_coefficients`)."""
        return langevin_coefficients(self.epsilon, self.step_size, self.noise, default_epsilon=0.01)


class MALASampler(Sampler):
    """Metropolis-adjusted Langevin: Langevin proposals, exact accept/reject; reports acceptance."""

    Params = MALAParams

    def __init__(self, steps: int = 100, step_size: float = 5e-5, noise: float = 0.01):
        self.steps, self.step_size, self.noise = steps, step_size, noise
        self.beta = 2.0 * step_size / noise**2  # the target is exp(-beta U)

    @classmethod
    def from_params(cls, params: MALAParams, context) -> "MALASampler":
        step, noise = params.resolved()
        return cls(params.steps, step, noise)

    def _energy_and_grad(self, energy: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        u = energy(x)
        (g,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), g

    def run(self, energy: nn.Module, z: Tensor, *, noise: Tensor | None = None, keep_graph: bool = False,
            record: tuple[int, ...] = (), steps: int | None = None) -> SampleResult:
        if keep_graph:
            raise ValueError("the mala sampler's accept/reject step is not differentiable; use 'langevin' "
                             "or 'gradient-descent' where the graph through the chain is needed")
        k_steps = self.steps if steps is None else steps
        if noise is not None and noise.shape[0] < k_steps:
            raise ValueError(f"noise has {noise.shape[0]} steps, the chain needs {k_steps}")
        grad_norm = torch.zeros(k_steps, device=z.device)
        trajectory: dict[int, Tensor] = {0: z.detach().clone()} if 0 in record else {}
        accepted = torch.zeros((), device=z.device)
        s, sd, beta = self.step_size, self.noise, self.beta
        x = z.detach().clone()
        view = (-1,) + (1,) * (x.dim() - 1)
        with frozen(energy), torch.enable_grad():
            u_x, g_x = self._energy_and_grad(energy, x)
            for k in range(k_steps):
                grad_norm[k] = g_x.flatten(1).norm(dim=1).mean()
                xi = noise[k] if noise is not None else torch.randn_like(x)
                y = langevin_step(x, g_x, s, sd, xi)  # the proposal: one Langevin move
                u_y, g_y = self._energy_and_grad(energy, y)
                with torch.no_grad():
                    forward = (y - x + s * g_x).flatten(1).pow(2).sum(1)   # -2 sd^2 log q(y | x)
                    backward = (x - y + s * g_y).flatten(1).pow(2).sum(1)  # -2 sd^2 log q(x | y)
                    log_alpha = -beta * (u_y - u_x) - (backward - forward) / (2 * sd**2)
                    accept = torch.rand_like(log_alpha).log() < log_alpha
                    accepted += accept.float().mean()
                    x = torch.where(accept.view(view), y, x)
                    u_x = torch.where(accept, u_y, u_x)
                    g_x = torch.where(accept.view(view), g_y, g_x)
                if k + 1 in record:
                    trajectory[k + 1] = x.detach().clone()
        acceptance = float(accepted / k_steps) if k_steps else 1.0
        return SampleResult(x=x.detach(), grad_norm=grad_norm, trajectory=trajectory, acceptance=acceptance)


@ebmkit.hookimpl
def ebmkit_samplers():
    return {"mala": MALASampler}
