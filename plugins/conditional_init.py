"""Initial distributions from the condition.

* ``masked`` (inpainting): each batch gets fresh masks from a mask generator;
  observed pixels are kept and the missing ones start from noise.
* ``paired`` (paired data such as facades A/B folders): each data item packs
  the target's channels and then the condition's; chains start from noise
  (or from the condition image itself).

Both keep the batch's condition in ``self.condition`` for the trainer, which
binds the conditional energy to it (see :mod:`ebmkit.conditional`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor

import ebmkit
from ebmkit import BuildContext
from ebmkit.interfaces import component_spec
from ebmkit.conditional import Condition, ConditionalInitializer, masked_condition
from ebmkit.errors import ConfigError

Fill = Literal["uniform", "gaussian", "zeros"]


def _noise(fill: str, like: Tensor) -> Tensor:
    if fill == "uniform":
        return torch.rand_like(like) * 2 - 1
    if fill == "gaussian":
        return torch.randn_like(like)
    return torch.zeros_like(like)


def _need_data(who: str, data: Tensor | None, n: int) -> Tensor:
    if data is None:
        raise ConfigError(f"initializer '{who}' starts chains from a data batch; pass data=")
    if data.shape[0] < n:
        raise ConfigError(f"initializer '{who}': asked for {n} chains but the data batch holds {data.shape[0]}")
    return data[:n]


class MaskedInit(ConditionalInitializer):
    """Inpainting p0: observed pixels kept, missing ones from noise; a fresh mask per batch."""

    class Params(ebmkit.Params):
        mask: dict[str, Any] = Field(default_factory=lambda: {"name": "centre"},
                                     description="mask generator: {name = 'centre', fraction = 0.5}, see `ebmkit plugins --kind mask`")
        fill: Fill = Field("uniform", description="missing pixels start from uniform [-1, 1], N(0, 1) or zeros")

        @field_validator("mask", mode="before")
        @classmethod
        def _named(cls, v: Any) -> Any:
            return component_spec(v, "give the mask generator's name, e.g. mask = {name = 'centre', fraction = 0.5}")

    def __init__(self, shape: tuple[int, ...], masks: ebmkit.MaskGenerator, fill: str = "uniform"):
        super().__init__()
        self.shape, self.masks, self.fill = tuple(shape), masks, fill

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "MaskedInit":
        shape = context.require_shape("masked")
        if len(shape) != 3:
            raise ValueError(f"initializer 'masked' needs images (C, H, W), got data shape {shape}")
        masks = context.build("mask", params.mask, where="initializer.mask")  # from the registry building this one
        return cls(shape, masks, params.fill)

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        target = _need_data("masked", data, n)
        missing = self.masks.sample(n, target.shape[-2], target.shape[-1], device=target.device)
        return self.start(target, missing)

    def start(self, target: Tensor, missing: Tensor | None = None) -> Tensor:
        if missing is None:
            missing = self.masks.sample(target.shape[0], target.shape[-2], target.shape[-1], device=target.device)
        self.condition = masked_condition(target, missing)
        return torch.where(self.condition.observed, target, _noise(self.fill, target))


class PairedInit(ConditionalInitializer):
    """Paired data (target channels, then condition channels): chains start from noise or the condition."""

    class Params(ebmkit.Params):
        target_channels: PositiveInt = Field(3, description="channels of the target; the rest of each item is the condition")
        fill: Literal["uniform", "gaussian", "zeros", "condition"] = Field(
            "uniform", description="chain start: noise, zeros, or the condition image (needs equal channel counts)")

    def __init__(self, shape: tuple[int, ...], target_channels: int = 3, fill: str = "uniform"):
        super().__init__()
        if len(shape) != 3 or target_channels >= shape[0]:
            raise ValueError(f"initializer 'paired' with target_channels = {target_channels} needs data that packs "
                             f"target and condition channels, got data shape {tuple(shape)}")
        if fill == "condition" and shape[0] != 2 * target_channels:
            raise ValueError(f"fill = 'condition' needs as many condition channels as target channels, got data shape {tuple(shape)}")
        self.shape, self.target_channels, self.fill = tuple(shape), target_channels, fill

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "PairedInit":
        return cls(context.require_shape("paired"), params.target_channels, params.fill)

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        batch = _need_data("paired", data, n)
        return self.start(batch)

    def start(self, target: Tensor, missing: Tensor | None = None) -> Tensor:
        """``target`` here is the packed batch (target channels, then condition channels)."""
        ct = self.target_channels
        x, y = target[:, :ct], target[:, ct:]
        self.condition = Condition(target=x, tensor=y)
        return y.clone() if self.fill == "condition" else _noise(self.fill, x)


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"masked": MaskedInit, "paired": PairedInit}
