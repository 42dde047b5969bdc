"""Conditional ConvNet energy U(x | y): the paper's ConvNet on [x, y] stacked as channels.

The condition enters as extra input channels, so the network is the
unconditional ConvNet (Tables 6-8) with a wider first layer.

* Inpainting (the default, ``target_channels`` unset): the data holds only the
  targets; y is the masked image and the observed mask (C + 1 channels).
* Paired data (``target_channels`` = Ct): each data item packs Ct target
  channels followed by the condition's channels (see the ``paired-folders``
  dataset); y is the condition image.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import Tensor

import ebmkit
from ebmkit import BuildContext
from ebmkit.conditional import ConditionalEnergy
from ebmkit_plugins.convnet import ConvNetEnergy


class ConditionalConvNet(ConditionalEnergy):
    """Paper ConvNet taking the condition (masked image + mask, or a paired image) as extra channels."""

    class Params(ConvNetEnergy.Params):  # the ConvNet's own parameters, plus how the channels split
        nf: PositiveInt = Field(32, description="base width")
        target_channels: PositiveInt | None = Field(
            None, description="paired data: channels of the target (the rest of each item is the condition); "
                              "unset: inpainting, y = masked image + mask")

    def __init__(self, channels: int, condition_channels: int, image_size: int, nf: int = 32,
                 negative_slope: float = 0.2, spectral_norm: bool = False):
        super().__init__()
        self.target_channels, self.condition_channels = channels, condition_channels
        self.net = ConvNetEnergy(channels + condition_channels, image_size, nf, negative_slope, spectral_norm)

    @classmethod
    def from_params(cls, params: Params, context: BuildContext) -> "ConditionalConvNet":
        shape = context.require_shape("conditional-convnet")
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"conditional-convnet needs square images (C, H, H), got data shape {shape}")
        kw = params.model_dump(exclude={"target_channels"})
        if params.target_channels is None:
            return cls(shape[0], shape[0] + 1, shape[1], **kw)
        if params.target_channels >= shape[0]:
            raise ValueError(f"target_channels = {params.target_channels} leaves no condition channels in data of "
                             f"shape {shape} (paired data packs target then condition channels)")
        return cls(params.target_channels, shape[0] - params.target_channels, shape[1], **kw)

    def energy(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([x, y], 1))


@ebmkit.hookimpl
def ebmkit_energies():
    return {"conditional-convnet": ConditionalConvNet}
