"""The anatomy paper's non-local ConvNet energy (Nijkamp et al. 2020).

Three stages of [3x3 conv -> LeakyReLU -> 2x2 max-pool] with widths nf, 2nf,
4nf; the second and third stages begin with a non-local block (Wang et al.
2018, "Non-local Neural Networks": embedded-gaussian attention over all
positions, added back to its input).  Two linear layers (8nf, then 1) read
the final (4nf, H/8, W/8) map.  LeakyReLU slope 0.05, as in the paper.

Non-local blocks let every pixel's energy gradient depend on the whole image,
which the paper found to give more realistic long-run (steady-state) samples.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt
from torch import Tensor, nn

import ebmkit
from ebmkit import BuildContext, Energy


class NonLocalBlock(nn.Module):
    """x + W(softmax(theta(x)^T phi(x)) g(x)); keys and values max-pooled 2x2."""

    def __init__(self, channels: int, subsample: bool = True):
        super().__init__()
        inner = max(1, channels // 2)
        self.theta = nn.Conv2d(channels, inner, 1)
        pool = [nn.MaxPool2d(2)] if subsample else []
        self.phi = nn.Sequential(nn.Conv2d(channels, inner, 1), *pool)
        self.g = nn.Sequential(nn.Conv2d(channels, inner, 1), *pool)
        self.out = nn.Conv2d(inner, channels, 1)
        # Zero-initialised output: the block starts as the identity.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)      # (B, HW, C')
        k = self.phi(x).flatten(2)                         # (B, C', hw)
        v = self.g(x).flatten(2).transpose(1, 2)           # (B, hw, C')
        y = (q @ k).softmax(-1) @ v                        # (B, HW, C')
        return x + self.out(y.transpose(1, 2).reshape(b, -1, h, w))


class NonLocalEnergy(Energy):
    """Anatomy paper's non-local ConvNet energy (images, H and W multiples of 8)."""

    class Params(ebmkit.Params):
        nf: PositiveInt = Field(32, description="base width (the paper: 32)")
        negative_slope: float = Field(0.05, ge=0.0, description="LeakyReLU slope (the paper: 0.05)")

    def __init__(self, channels: int, height: int, width: int, nf: int = 32, negative_slope: float = 0.05):
        super().__init__()
        if height % 8 or width % 8 or height < 8 or width < 8:
            raise ValueError(f"nonlocal needs image sides that are multiples of 8 (>= 8), got {height}x{width}")
        act = lambda: nn.LeakyReLU(negative_slope)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(channels, nf, 3, 1, 1), act(), nn.MaxPool2d(2),
            NonLocalBlock(nf), nn.Conv2d(nf, 2 * nf, 3, 1, 1), act(), nn.MaxPool2d(2),
            NonLocalBlock(2 * nf), nn.Conv2d(2 * nf, 4 * nf, 3, 1, 1), act(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Linear(4 * nf * (height // 8) * (width // 8), 8 * nf), act(), nn.Linear(8 * nf, 1))

    @classmethod
    def from_params(cls, params: Params, context: BuildContext) -> "NonLocalEnergy":
        shape = context.require_shape("nonlocal")
        if len(shape) != 3:
            raise ValueError(f"nonlocal needs images (C, H, W), got data shape {shape}")
        return cls(shape[0], shape[1], shape[2], **params.model_dump())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).flatten()


@ebmkit.hookimpl
def ebmkit_energies():
    return {"nonlocal": NonLocalEnergy}
