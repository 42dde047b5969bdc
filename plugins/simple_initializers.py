"""Noise initial distributions: uniform and gaussian."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat, model_validator
from torch import Tensor

import ebmkit
from ebmkit import BuildContext, InitialDistribution


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


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"uniform": UniformInit, "gaussian": GaussianInit}
