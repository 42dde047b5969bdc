"""Inpainting masks: which pixels a conditional task hides.

Every generator returns a bool tensor ``(n, 1, H, W)``, True where a pixel is
missing.  Sizes are fractions of the image side (or of its pixel count), so
one config serves 16x16 digits and 256x256 photos alike.

* ``centre`` (alias ``center``): one square hole in the middle.
* ``random-blocks``: ``count`` square holes placed uniformly at random (they may overlap).
* ``random-pixels``: exactly round(fraction * H * W) pixels per image, chosen at random.
* ``half``: the left, right, top or bottom half (or one of them at random).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor

import ebmkit
from ebmkit import MaskGenerator


def _side(fraction: float, length: int) -> int:
    return min(length, max(1, round(fraction * length)))


class CentreBlock(MaskGenerator):
    """A square hole in the centre; its side is `fraction` of the image side."""

    class Params(ebmkit.Params):
        fraction: float = Field(0.5, gt=0.0, le=1.0, description="side of the hole / side of the image")

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction

    def sample(self, n, height, width, *, generator=None, device=None) -> Tensor:
        sh, sw = _side(self.fraction, height), _side(self.fraction, width)
        top, left = (height - sh) // 2, (width - sw) // 2
        mask = torch.zeros(n, 1, height, width, dtype=torch.bool, device=device)
        mask[..., top : top + sh, left : left + sw] = True
        return mask

    def expected_coverage(self, height, width) -> float:
        return _side(self.fraction, height) * _side(self.fraction, width) / (height * width)


class RandomBlocks(MaskGenerator):
    """`count` square holes at uniformly random places (they may overlap)."""

    class Params(ebmkit.Params):
        count: PositiveInt = Field(3, description="holes per image")
        fraction: float = Field(0.25, gt=0.0, le=1.0, description="side of each hole / side of the image")

    def __init__(self, count: int = 3, fraction: float = 0.25):
        self.count, self.fraction = count, fraction

    def sample(self, n, height, width, *, generator=None, device=None) -> Tensor:
        sh, sw = _side(self.fraction, height), _side(self.fraction, width)
        top = torch.randint(0, height - sh + 1, (n, self.count, 1), generator=generator)
        left = torch.randint(0, width - sw + 1, (n, self.count, 1), generator=generator)
        rows, cols = torch.arange(height), torch.arange(width)
        in_rows = (rows >= top) & (rows < top + sh)  # (n, count, H)
        in_cols = (cols >= left) & (cols < left + sw)  # (n, count, W)
        return (in_rows[..., :, None] & in_cols[..., None, :]).any(1, keepdim=True).to(device)

    def expected_coverage(self, height, width) -> float:
        # A pixel escapes one block with probability 1 - P(row covered) P(col covered); blocks are independent.
        sh, sw = _side(self.fraction, height), _side(self.fraction, width)

        def covered(length: int, side: int) -> Tensor:
            starts = torch.arange(length - side + 1)
            return ((torch.arange(length)[:, None] >= starts) & (torch.arange(length)[:, None] < starts + side)).double().mean(1)

        p = covered(height, sh)[:, None] * covered(width, sw)[None, :]
        return float((1 - (1 - p) ** self.count).mean())


class RandomPixels(MaskGenerator):
    """Exactly round(fraction * H * W) missing pixels per image, at random."""

    class Params(ebmkit.Params):
        fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of the pixels that are missing")

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction

    def sample(self, n, height, width, *, generator=None, device=None) -> Tensor:
        k = round(self.fraction * height * width)
        ranks = torch.rand(n, height * width, generator=generator).argsort(1).argsort(1)  # a random permutation per image
        return (ranks < k).view(n, 1, height, width).to(device)

    def expected_coverage(self, height, width) -> float:
        return round(self.fraction * height * width) / (height * width)


SIDES = ("left", "right", "top", "bottom")


class HalfImage(MaskGenerator):
    """Half the image missing: left, right, top, bottom, or one of them at random."""

    class Params(ebmkit.Params):
        side: Literal["left", "right", "top", "bottom", "random"] = Field("bottom", description="which half is missing")

    def __init__(self, side: str = "bottom"):
        self.side = side

    def sample(self, n, height, width, *, generator=None, device=None) -> Tensor:
        if self.side == "random":
            picks = torch.randint(0, 4, (n,), generator=generator).tolist()
        else:
            picks = [SIDES.index(self.side)] * n
        mask = torch.zeros(n, 1, height, width, dtype=torch.bool)
        for i, s in enumerate(picks):
            rows, cols = _half(SIDES[s], height, width)
            mask[i, :, rows, cols] = True
        return mask.to(device)

    def expected_coverage(self, height, width) -> float:
        sides = SIDES if self.side == "random" else (self.side,)
        areas = []
        for s in sides:
            rows, cols = _half(s, height, width)
            areas.append(len(range(height)[rows]) * len(range(width)[cols]))
        return sum(areas) / len(areas) / (height * width)


def _half(side: str, height: int, width: int) -> tuple[slice, slice]:
    """(rows, cols) of the missing half; with an odd side the missing half is the smaller one."""
    h2, w2 = height // 2, width // 2
    return {
        "left": (slice(None), slice(0, w2)),
        "right": (slice(None), slice(width - w2, width)),
        "top": (slice(0, h2), slice(None)),
        "bottom": (slice(height - h2, height), slice(None)),
    }[side]


@ebmkit.hookimpl
def ebmkit_masks():
    return {"centre": CentreBlock, "center": CentreBlock, "random-blocks": RandomBlocks, "random-pixels": RandomPixels,
            "half": HalfImage}
