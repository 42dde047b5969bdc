"""The short-run paper's ConvNet energies (Nijkamp et al. 2019, Tables 6-8).

3x3 conv (nf) -> 4x4 stride-2 convs, channels doubling up to 8*nf, until the
map is 4x4 -> 4x4 conv to one number; LeakyReLU(0.2) after every hidden conv.
32 px: nf, 2nf, 4nf, 8nf (Table 6); 64 px: one more 8nf layer (Table 7);
128 px: two more (Table 8).  Any power-of-two size >= 8 and any channel count.
"""

from __future__ import annotations

import math

from pydantic import Field, PositiveInt
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

import ebmkit
from ebmkit import BuildContext, Energy


class ConvNetEnergy(Energy):
    """Paper ConvNet energy (Tables 6-8): 32/64/128 px, width nf."""

    class Params(ebmkit.Params):
        nf: PositiveInt = Field(64, description="base width; the paper uses 32, 64 or 128")
        negative_slope: float = Field(0.2, ge=0.0, description="LeakyReLU slope")
        spectral_norm: bool = Field(False, description="spectral normalisation of every conv (a stabiliser)")

    def __init__(self, channels: int, image_size: int, nf: int = 64, negative_slope: float = 0.2, spectral_norm: bool = False):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"convnet needs a power-of-two image size >= 8, got {image_size}")
        act = lambda: nn.LeakyReLU(negative_slope)  # noqa: E731
        layers: list[nn.Module] = [nn.Conv2d(channels, nf, 3, 1, 1), act()]
        width, size = nf, image_size
        while size > 4:
            out = min(width * 2, 8 * nf)
            layers += [nn.Conv2d(width, out, 4, 2, 1), act()]
            width, size = out, size // 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0))
        if spectral_norm:
            layers = [_sn(m) for m in layers]
        self.net = nn.Sequential(*layers)
        self.depth = int(math.log2(image_size // 4))

    @classmethod
    def from_params(cls, params: Params, context: BuildContext) -> "ConvNetEnergy":
        shape = context.require_shape("convnet")
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"convnet needs square images (C, H, H), got data shape {shape}")
        return cls(shape[0], shape[1], **params.model_dump())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


def _sn(m: nn.Module) -> nn.Module:
    return spectral_norm(m) if isinstance(m, nn.Conv2d) else m


@ebmkit.hookimpl
def ebmkit_energies():
    return {"convnet": ConvNetEnergy}
