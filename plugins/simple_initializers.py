"""Noise initial distributions: uniform, gaussian, and a gaussian fitted to the data.

``fitted-gaussian`` starts chains from N(mu, Sigma) with the training set's
pixel mean and (shrunk) covariance: blurry superpositions of data rather than
white noise.  A short chain then spends its K steps sharpening instead of
first finding the data's neighbourhood -- the cheapest form of the learned or
data-based initial distributions the short-run literature uses for larger
images (Nijkamp et al. 2022, "MCMC should mix"; the cooperative and VAE starts).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import Tensor

import ebmkit
from ebmkit import BuildContext, InitialDistribution
from ebmkit.data import stack_items
from ebmkit.errors import DataError


class UniformInit(InitialDistribution):
    """Uniform noise on [low, high] (the paper: [-1, 1])."""

    class Params(ebmkit.Params):
        low: float = -1.0
        high: float = 1.0

        @model_validator(mode="after")
        def _ordered(self):
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            return self

    def __init__(self, shape: tuple[int, ...], low: float = -1.0, high: float = 1.0):
        super().__init__()
        self.shape, self.low, self.high = tuple(shape), low, high

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "UniformInit":
        return cls(context.require_shape("uniform"), **params.model_dump())

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        return torch.rand(n, *self.shape, device=self.device) * (self.high - self.low) + self.low


class GaussianInit(InitialDistribution):
    """Gaussian noise N(mean, std^2)."""

    class Params(ebmkit.Params):
        mean: float = 0.0
        std: PositiveFloat = Field(1.0)

    def __init__(self, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.shape, self.mean, self.std = tuple(shape), mean, std

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "GaussianInit":
        return cls(context.require_shape("gaussian"), **params.model_dump())

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        return torch.randn(n, *self.shape, device=self.device) * self.std + self.mean


FIT_ITEMS = 20_000  # enough items to estimate a covariance; more only costs start-up time


class FittedGaussianInit(InitialDistribution):
    """Gaussian fitted to the training data: N(mean, cov) of its pixels."""

    class Params(ebmkit.Params):
        rank: PositiveInt | None = Field(None, description="keep only the top `rank` principal components "
                                                           "(default: the full covariance)")
        shrinkage: float = Field(0.05, ge=0.0, le=1.0, description="blend of the covariance with its mean "
                                                                  "variance times the identity (Ledoit-Wolf style)")
        scale: PositiveFloat = Field(1.0, description="multiplies the standard deviations (temperature of the start)")

    def __init__(self, shape: tuple[int, ...], mean: Tensor, factor: Tensor, scale: float = 1.0):
        super().__init__()
        self.shape, self.scale = tuple(shape), scale
        self.register_buffer("mean", mean.reshape(-1).float().clone())
        self.register_buffer("factor", factor.float().clone())  # cov = factor @ factor.T

    @classmethod
    def fit(cls, data: Tensor, rank: int | None = None, shrinkage: float = 0.05, scale: float = 1.0) -> "FittedGaussianInit":
        """Fit to ``data`` (N, *shape): mean, covariance shrunk towards its
        mean variance, factorised by eigen-decomposition (kept to ``rank``)."""
        x = data.reshape(len(data), -1).double()
        if len(x) < 2:
            raise DataError(f"fitted-gaussian needs at least 2 training items, got {len(x)}")
        mean = x.mean(0)
        cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        cov = (1 - shrinkage) * cov + shrinkage * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
        values, vectors = torch.linalg.eigh(cov)
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        if rank is not None:
            values, vectors = values[:rank], vectors[:, :rank]
        return cls(tuple(data.shape[1:]), mean, vectors * values.sqrt(), scale)

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "FittedGaussianInit":
        shape = context.require_shape("fitted-gaussian")
        if context.dataset is None:  # rebuilt from a checkpoint: its buffers replace these placeholders
            d = math.prod(shape)
            return cls(shape, torch.zeros(d), torch.zeros(d, min(params.rank or d, d)), params.scale)
        data = stack_items(context.dataset, range(min(len(context.dataset), FIT_ITEMS))).float()
        return cls.fit(data, params.rank, params.shrinkage, params.scale)

    def blend(self, z1: Tensor, z2: Tensor, a: float, b: float) -> Tensor:
        """a*z1 + b*z2 about the mean: with a^2 + b^2 = 1 the blend of two
        draws is again a draw of N(mean, cov), as interpolation needs."""
        mean = self.mean.reshape(1, *self.shape).to(z1)
        return mean + a * (z1 - mean) + b * (z2 - mean)

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        z = torch.randn(n, self.factor.shape[1], device=self.factor.device)
        return (self.mean + self.scale * z @ self.factor.T).reshape(n, *self.shape)


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"uniform": UniformInit, "gaussian": GaussianInit, "fitted-gaussian": FittedGaussianInit}
