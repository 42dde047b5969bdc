"""2-D toy densities with exact sampling and exact log-density.

* ``gmm-circle``: equal-weight gaussians (sd ``sd``) centred on a circle.
* ``rings``: concentric rings; a point is a uniform angle and a radius
  ``r_j + sd * N(0, 1)``.  Its density, with s = |x| (a negative radius
  lands at the opposite angle), is
  mean_j [N(s; r_j, sd) + N(s; -r_j, sd)] / (2 pi s).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import Tensor

import ebmkit
from ebmkit import DataSource
from ebmkit.data import TensorImages


class ToySource(DataSource):
    """Base: a fixed sample of ``count`` points (test split: another seed)."""

    class Params(ebmkit.Params):
        count: PositiveInt = Field(10_000, description="points in the train split (test: a quarter as many)")
        seed: int = 0

    def __init__(self, count: int = 10_000, seed: int = 0, **kw):
        self.count, self.seed = count, seed

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def log_density(self, x: Tensor) -> Tensor:
        """Exact log p(x) for points (N, 2)."""
        raise NotImplementedError

    def load(self, split: str = "train") -> TensorImages:
        if split not in ("train", "test", "all"):
            raise ebmkit.errors.DataError(f"unknown split '{split}'")
        n = self.count // 4 if split == "test" else self.count
        g = torch.Generator().manual_seed(self.seed * 2 + (split == "test"))
        return TensorImages(self.sample(n, g))


def _normal_logpdf(x: Tensor, mean: float | Tensor, sd: float) -> Tensor:
    return -0.5 * ((x - mean) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))


class GaussianMixtureCircle(ToySource):
    """Equal-weight 2-D gaussians on a circle (exact sampling and density)."""

    class Params(ToySource.Params):
        modes: PositiveInt = 8
        radius: PositiveFloat = 0.7
        sd: PositiveFloat = 0.05

    def __init__(self, modes: int = 8, radius: float = 0.7, sd: float = 0.05, **kw):
        super().__init__(**kw)
        self.modes, self.radius, self.sd = modes, radius, sd

    def centres(self) -> Tensor:
        t = torch.arange(self.modes, dtype=torch.float32) * (2 * math.pi / self.modes)
        return self.radius * torch.stack([t.cos(), t.sin()], 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.randint(self.modes, (n,), generator=generator)
        return self.centres()[idx] + self.sd * torch.randn(n, 2, generator=generator)

    def log_density(self, x: Tensor) -> Tensor:
        c = self.centres().to(x)
        comp = _normal_logpdf(x[:, None, :], c[None], self.sd).sum(-1)  # (N, modes)
        return torch.logsumexp(comp, 1) - math.log(self.modes)


class Rings(ToySource):
    """Concentric rings with radial noise (exact sampling and density)."""

    class Params(ToySource.Params):
        rings: PositiveInt = 2
        radius: PositiveFloat = Field(0.35, description="radius of the innermost ring; ring j has (j+1)*radius")
        sd: PositiveFloat = 0.03

    def __init__(self, rings: int = 2, radius: float = 0.35, sd: float = 0.03, **kw):
        super().__init__(**kw)
        self.rings, self.radius, self.sd = rings, radius, sd

    def radii(self) -> Tensor:
        return self.radius * torch.arange(1, self.rings + 1, dtype=torch.float32)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        j = torch.randint(self.rings, (n,), generator=generator)
        rho = self.radii()[j] + self.sd * torch.randn(n, generator=generator)
        t = torch.rand(n, generator=generator) * (2 * math.pi)
        return rho[:, None] * torch.stack([t.cos(), t.sin()], 1)

    def log_density(self, x: Tensor) -> Tensor:
        s = x.norm(dim=1).clamp_min(1e-12)[:, None]
        r = self.radii().to(x)[None]
        radial = torch.logaddexp(_normal_logpdf(s, r, self.sd), _normal_logpdf(s, -r, self.sd))
        return torch.logsumexp(radial, 1) - math.log(self.rings) - torch.log(2 * math.pi * s[:, 0])


@ebmkit.hookimpl
def ebmkit_datasets():
    return {"gmm-circle": GaussianMixtureCircle, "rings": Rings}
