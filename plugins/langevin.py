"""Langevin and gradient-descent samplers.

Langevin: x <- x - step * grad_x U(x) + noise * N(0, I).

* coupled (textbook): give ``epsilon``; step = epsilon^2 / 2, noise = epsilon.
* decoupled (the short-run paper's recipe): give ``step_size`` and ``noise``
  (default 1 and 0.01).

Gradient descent is the same chain without noise, so x_K is a deterministic
function of z.

Stabiliser (off by default; the paper's recipe does not clip): ``grad_clip``
replaces grad U by a clipped g before the step --

* ``grad_clip_mode = "element"``: g = clamp(grad U, -c, c) per element;
* ``grad_clip_mode = "norm"``: g_i = grad_i * min(1, c / ||grad_i||) per sample.

The logged gradient norms are those of the unclipped gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, model_validator
from torch import Tensor, nn

import ebmkit
from ebmkit import SampleResult, Sampler
from ebmkit.sampling import frozen


def _grad_clip_field():
    return Field(None, description="clip grad_x U before each step (None: off)")


def _grad_clip_mode_field():
    return Field("element", description="clip per element ('element') or each sample's gradient norm ('norm')")


def clip_gradient(g: Tensor, clip: float | None, mode: str = "element") -> Tensor:
    """grad U clipped per element to [-clip, clip], or per sample to norm <= clip
    (differentiable, so it also works with keep_graph)."""
    if clip is None:
        return g
    if mode == "element":
        return g.clamp(-clip, clip)
    norm = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))
    return g * (clip / norm.clamp_min(1e-12)).clamp(max=1.0)


class LangevinParams(ebmkit.Params):
    steps: int = Field(100, ge=0, description="K, the number of steps")
    step_size: PositiveFloat | None = Field(None, description="coefficient of grad U (decoupled form)")
    noise: float | None = Field(None, ge=0.0, description="sd of the added noise (decoupled form)")
    epsilon: PositiveFloat | None = Field(None, description="coupled form: step = epsilon^2/2, noise = epsilon")
    grad_clip: PositiveFloat | None = _grad_clip_field()
    grad_clip_mode: Literal["element", "norm"] = _grad_clip_mode_field()

    @model_validator(mode="after")
    def _one_form(self):
        if self.epsilon is not None and (self.step_size is not None or self.noise is not None):
            raise ValueError("give either epsilon (coupled) or step_size/noise (decoupled), not both")
        return self

    def resolved(self) -> tuple[float, float]:
        """(step, noise sd)."""
        if self.epsilon is not None:
            return self.epsilon**2 / 2.0, self.epsilon
        return (1.0 if self.step_size is None else self.step_size), (0.01 if self.noise is None else self.noise)


class LangevinSampler(Sampler):
    """Langevin dynamics, coupled (epsilon) or decoupled (step_size, noise)."""

    Params = LangevinParams

    def __init__(self, steps: int = 100, step_size: float = 1.0, noise: float = 0.01,
                 grad_clip: float | None = None, grad_clip_mode: str = "element"):
        self.steps, self.step_size, self.noise = steps, step_size, noise
        self.grad_clip, self.grad_clip_mode = grad_clip, grad_clip_mode

    @classmethod
    def from_params(cls, params: LangevinParams, context) -> "LangevinSampler":
        step, noise = params.resolved()
        return cls(params.steps, step, noise, params.grad_clip, params.grad_clip_mode)

    def clip(self, g: Tensor) -> Tensor:
        """The gradient the step uses (a subclass built without calling __init__ clips nothing)."""
        return clip_gradient(g, getattr(self, "grad_clip", None), getattr(self, "grad_clip_mode", "element"))

    def run(self, energy: nn.Module, z: Tensor, *, noise: Tensor | None = None, keep_graph: bool = False,
            record: tuple[int, ...] = (), steps: int | None = None) -> SampleResult:
        k_steps = self.steps if steps is None else steps
        if noise is not None and noise.shape[0] < k_steps:
            raise ValueError(f"noise has {noise.shape[0]} steps, the chain needs {k_steps}")
        grad_norm = torch.zeros(k_steps, device=z.device)
        trajectory: dict[int, Tensor] = {}
        if 0 in record:
            trajectory[0] = z.detach().clone()
        if keep_graph:
            x = z if z.requires_grad else z.detach().requires_grad_(True)
            for k in range(k_steps):
                (g,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
                grad_norm[k] = g.detach().flatten(1).norm(dim=1).mean()
                g = self.clip(g)
                x = x - self.step_size * g
                if self.noise > 0:
                    x = x + self.noise * (noise[k] if noise is not None else torch.randn_like(x))
                if k + 1 in record:
                    trajectory[k + 1] = x.detach().clone()
            return SampleResult(x=x, grad_norm=grad_norm, trajectory=trajectory)

        x = z.detach().clone().requires_grad_(True)
        with frozen(energy), torch.enable_grad():
            for k in range(k_steps):
                (g,) = torch.autograd.grad(energy(x).sum(), x)
                with torch.no_grad():
                    grad_norm[k] = g.flatten(1).norm(dim=1).mean()
                    g = self.clip(g)
                    x.sub_(g, alpha=self.step_size)
                    if self.noise > 0:
                        x.add_(noise[k] if noise is not None else torch.randn_like(x), alpha=self.noise)
                if k + 1 in record:
                    trajectory[k + 1] = x.detach().clone()
        return SampleResult(x=x.detach(), grad_norm=grad_norm, trajectory=trajectory)


class GradientDescentParams(ebmkit.Params):
    steps: int = Field(100, ge=0, description="K, the number of steps")
    step_size: PositiveFloat = Field(1.0, description="coefficient of grad U")
    grad_clip: PositiveFloat | None = _grad_clip_field()
    grad_clip_mode: Literal["element", "norm"] = _grad_clip_mode_field()


class GradientDescentSampler(LangevinSampler):
    """Noise-free chain: x <- x - step * grad U(x); deterministic given z."""

    Params = GradientDescentParams

    def __init__(self, steps: int = 100, step_size: float = 1.0, grad_clip: float | None = None,
                 grad_clip_mode: str = "element"):
        super().__init__(steps, step_size, 0.0, grad_clip, grad_clip_mode)

    @classmethod
    def from_params(cls, params: GradientDescentParams, context) -> "GradientDescentSampler":
        return cls(params.steps, params.step_size, params.grad_clip, params.grad_clip_mode)


@ebmkit.hookimpl
def ebmkit_samplers():
    return {"langevin": LangevinSampler, "gradient-descent": GradientDescentSampler}
