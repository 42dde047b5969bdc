"""Super-resolution start: p0 is the low-resolution image brought up to full size.

The short-run paper (section 5.4) learns super-resolution with the unchanged
Algorithm 1: only the chain start changes.  For a data batch x this
initializer averages x down to ``size`` x ``size`` pixels (block means),
brings that back to full size (``upsample``: pixel repetition by default, so
averaging the start down again returns the low-resolution image exactly) and
adds ``noise`` * N(0, I), so that one image gives different chains.

    [initializer]
    name = "lowres"
    size = 4          # 4x4, 8x8 or 16x16: must divide the image side
    noise = 0.1
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor

import ebmkit
from ebmkit import BuildContext, InitialDistribution


class LowResolutionInit(InitialDistribution):
    """Chains start at the data's low-resolution version, brought up to full size (super-resolution)."""

    needs_data = True

    class Params(ebmkit.Params):
        size: PositiveInt = Field(8, description="side of the low-resolution image; must divide the image side")
        upsample: Literal["nearest", "bilinear", "bicubic"] = Field(
            "nearest", description="how the low-resolution image is brought to full size")
        noise: float = Field(0.0, ge=0.0, description="sd of the Gaussian noise added to the start")

    def __init__(self, shape: tuple[int, ...], size: int = 8, upsample: str = "nearest", noise: float = 0.0):
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"lowres needs image data (C, H, W), got shape {tuple(shape)}")
        if shape[1] % size or shape[2] % size:
            raise ValueError(f"lowres size {size} must divide the image size {shape[1]}x{shape[2]}")
        self.shape, self.size, self.upsample, self.noise = tuple(shape), size, upsample, noise

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "LowResolutionInit":
        return cls(context.require_shape("lowres"), **params.model_dump())

    def low_resolution(self, data: Tensor) -> Tensor:
        """Block means: ``(N, C, size, size)``."""
        self._check(data)
        return F.adaptive_avg_pool2d(data, self.size)

    def upsampled_low_resolution(self, data: Tensor) -> Tensor:
        """The low-resolution image at full size, without noise."""
        low = self.low_resolution(data)
        kw = {} if self.upsample == "nearest" else {"align_corners": False}
        return F.interpolate(low, size=self.shape[1:], mode=self.upsample, **kw)

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        if data is None:
            raise ValueError("lowres starts from the low-resolution data: call sample(n, data=images)")
        if data.shape[0] < n:
            raise ValueError(f"lowres needs {n} images to start {n} chains, got {data.shape[0]}")
        z = self.upsampled_low_resolution(data[:n].to(self.device))
        if self.noise > 0:
            z = z + self.noise * torch.randn_like(z)
        return z

    def _check(self, data: Tensor) -> None:
        if tuple(data.shape[1:]) != self.shape:
            raise ValueError(f"lowres was built for images of shape {self.shape}, got a batch of {tuple(data.shape[1:])}")


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"lowres": LowResolutionInit}
