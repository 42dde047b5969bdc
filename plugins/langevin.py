"""Langevin and gradient-descent samplers.

Langevin: x <- x - step * grad_x U(x) + noise * N(0, I)
(:func:`ebmkit.sampling.langevin_step`, shared with ``mala``).

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
from ebmkit.chain_acceleration import accelerated_chain
from ebmkit.sampling import chain_memory_format, frozen, input_gradient, langevin_coefficients, langevin_step


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
    fast: bool = Field(True, description="fast path: the energy's own input gradient where it has one (see docs/performance.md)")
    channels_last: bool | None = Field(None, description="image chains in channels_last memory (None: on for CPU image chains)")
    final_noise_free: int = Field(0, ge=0, description="the last N steps add no noise (a noise-free final stretch; "
                                  "the noise is still drawn, so a seed gives the same chain up to there)")

    @model_validator(mode="after")
    def _one_form(self):
        if self.epsilon is not None and (self.step_size is not None or self.noise is not None):
            raise ValueError("give either epsilon (coupled) or step_size/noise (decoupled), not both")
        return self

    def resolved(self) -> tuple[float, float]:
        """(step, noise sd); default: the decoupled form, step 1 and noise 0.01."""
        return langevin_coefficients(self.epsilon, self.step_size, self.noise)


class LangevinSampler(Sampler):
    """Langevin dynamics, coupled (epsilon) or decoupled (step_size, noise)."""

    Params = LangevinParams

    def __init__(self, steps: int = 100, step_size: float = 1.0, noise: float = 0.01,
                 grad_clip: float | None = None, grad_clip_mode: str = "element", *, fast: bool = True,
                 channels_last: bool | None = None, final_noise_free: int = 0):
        self.steps, self.step_size, self.noise = steps, step_size, noise
        self.grad_clip, self.grad_clip_mode = grad_clip, grad_clip_mode
        self.fast, self.channels_last = fast, channels_last
        self.final_noise_free = final_noise_free

    @classmethod
    def from_params(cls, params: LangevinParams, context) -> "LangevinSampler":
        step, noise = params.resolved()
        return cls(params.steps, step, noise, params.grad_clip, params.grad_clip_mode, fast=params.fast,
                   channels_last=params.channels_last, final_noise_free=params.final_noise_free)

    def noise_at(self, k: int, k_steps: int) -> float:
        """The noise sd of step k of a k_steps chain: none in the final noise-free stretch."""
        return 0.0 if k >= k_steps - getattr(self, "final_noise_free", 0) else self.noise

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
                xi = (noise[k] if noise is not None else torch.randn_like(x)) if self.noise > 0 else None
                x = langevin_step(x, g, self.step_size, self.noise_at(k, k_steps), xi)
                if k + 1 in record:
                    trajectory[k + 1] = x.detach().clone()
            return SampleResult(x=x, grad_norm=grad_norm, trajectory=trajectory)

        # Weights frozen (no weight gradients), gradients w.r.t. x only, no
        # graph kept, x updated in place; with `fast`, the energy's own input
        # gradient and (CPU images) channels_last.  Noise is drawn in the
        # standard layout, so a seed gives the same chain either way.
        auto = None if self.fast else False  # channels_last: auto in the fast path, off in the plain one, unless set
        fmt = chain_memory_format(z, auto if self.channels_last is None else self.channels_last, energy)
        x = z.detach().clone(memory_format=fmt)
        dims = tuple(range(1, x.dim()))
        with frozen(energy), torch.no_grad():
            # GPU chain: autocast / compile / CUDA-graph capture when [performance] asks (ebmkit.chain_acceleration)
            accelerated = accelerated_chain(self, energy, x, noise=noise, steps=k_steps, record=record)
            if accelerated is not None:
                return accelerated
            gradient = input_gradient(energy, x, fast=self.fast)
            for k in range(k_steps):
                g = gradient(x)
                grad_norm[k] = torch.linalg.vector_norm(g, dim=dims).mean() if dims else g.abs().mean()
                g = self.clip(g)  # the logged norm stays the unclipped one
                xi = ((noise[k] if noise is not None else torch.randn(x.shape, dtype=x.dtype, device=x.device))
                      if self.noise > 0 else None)
                langevin_step(x, g, self.step_size, self.noise_at(k, k_steps), xi, inplace=True)
                if k + 1 in record:
                    trajectory[k + 1] = x.clone(memory_format=torch.contiguous_format)
        return SampleResult(x=x.contiguous(), grad_norm=grad_norm, trajectory=trajectory)


class GradientDescentParams(ebmkit.Params):
    steps: int = Field(100, ge=0, description="K, the number of steps")
    step_size: PositiveFloat = Field(1.0, description="coefficient of grad U")
    grad_clip: PositiveFloat | None = _grad_clip_field()
    grad_clip_mode: Literal["element", "norm"] = _grad_clip_mode_field()
    fast: bool = Field(True, description="fast path (see the langevin sampler)")
    channels_last: bool | None = Field(None, description="image chains in channels_last memory (None: on for CPU image chains)")


class GradientDescentSampler(LangevinSampler):
    """Noise-free chain: x <- x - step * grad U(x); deterministic given z."""

    Params = GradientDescentParams

    def __init__(self, steps: int = 100, step_size: float = 1.0, grad_clip: float | None = None,
                 grad_clip_mode: str = "element", *, fast: bool = True, channels_last: bool | None = None):
        super().__init__(steps, step_size, 0.0, grad_clip, grad_clip_mode, fast=fast, channels_last=channels_last)

    @classmethod
    def from_params(cls, params: GradientDescentParams, context) -> "GradientDescentSampler":
        return cls(params.steps, params.step_size, params.grad_clip, params.grad_clip_mode, fast=params.fast,
                   channels_last=params.channels_last)


@ebmkit.hookimpl
def ebmkit_samplers():
    return {"langevin": LangevinSampler, "gradient-descent": GradientDescentSampler}
