"""A sampler that holds the observed pixels fixed (inpainting).

``clamped`` wraps any registered sampler (``inner``).  While the energy is
bound to a condition with observed pixels, the chain starts from the clamped
z and every state it returns is clamped again (clamp puts the known values
back), so the observed pixels of the result equal the known ones exactly.
A conditional energy already reads x through the same clamp, so its gradient
at observed pixels is zero and only the missing pixels move under it; the
inner sampler's noise, which would jitter the observed pixels, is undone.
With no condition bound it is the inner sampler unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from torch import Tensor, nn

import ebmkit
from ebmkit import SampleResult, Sampler
from ebmkit.interfaces import component_spec
from ebmkit.conditional import ConditionalEnergy


class ClampedSampler(Sampler):
    """Any sampler (inner) with the observed pixels of a bound condition held fixed."""

    class Params(ebmkit.Params):
        inner: dict[str, Any] = Field(default_factory=lambda: {"name": "langevin"},
                                      description="the sampler to wrap: {name = 'langevin', steps = 40, ...}")

        @field_validator("inner", mode="before")
        @classmethod
        def _named(cls, v: Any) -> Any:
            v = component_spec(v, "give the wrapped sampler's name, e.g. inner = {name = 'langevin', steps = 40}")
            if isinstance(v, dict) and v["name"] == "clamped":
                raise ValueError("'clamped' cannot wrap itself")
            return v

    def __init__(self, inner: Sampler):
        self.inner = inner

    @classmethod
    def from_params(cls, params, context) -> "ClampedSampler":
        return cls(context.build("sampler", params.inner, where="sampler.inner"))  # from the registry building this one

    @property
    def steps(self) -> int:
        return self.inner.steps

    @property
    def step_size(self) -> float | None:  # the inner chain's update rule is this chain's
        return self.inner.step_size

    @property
    def noise(self) -> float | None:
        return self.inner.noise

    def set_progress(self, iteration: int, total: int) -> dict[str, float]:
        return self.inner.set_progress(iteration, total)

    def run(self, energy: nn.Module, z: Tensor, **kw: Any) -> SampleResult:
        condition = energy.condition if isinstance(energy, ConditionalEnergy) else None
        if condition is None or condition.observed is None:
            return self.inner.run(energy, z, **kw)
        result = self.inner.run(energy, condition.clamp(z), **kw)
        result.x = condition.clamp(result.x)
        result.trajectory = {k: condition.clamp(v) for k, v in result.trajectory.items()}
        return result


@ebmkit.hookimpl
def ebmkit_samplers():
    return {"clamped": ClampedSampler}
