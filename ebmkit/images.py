"""Writing images: sample grids and strips as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return x.detach().float().add(1).div(2).clamp(0, 1).cpu()


READABLE_PX = 32
"""Grid cells smaller than this are enlarged (nearest) to at least this size by default."""


def grid_scale(height: int, scale: int | None = None) -> int:
    """The enlargement factor for images ``height`` px high: ``scale`` when
    given (>= 1), else the smallest whole factor that reaches READABLE_PX
    (an 8x8 digit: 4, so a grid of 64 is 274 px wide, not 82)."""
    if scale:
        return int(scale)
    return max(1, math.ceil(READABLE_PX / max(1, height)))


def enlarge(images: Tensor, scale: int) -> Tensor:
    """Each pixel repeated ``scale`` x ``scale`` times (nearest; no new values)."""
    return images if scale == 1 else images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def grid_tensor(images: Tensor, nrow: int | None = None, padding: int = 2, scale: int | None = None) -> Tensor:
    """The (C, H, W) grid in [0, 1] that :func:`save_grid` writes."""
    if images.dim() != 4:
        raise ValueError(f"save_grid expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    return make_grid(enlarge(to_unit(images), grid_scale(images.shape[-2], scale)), nrow=nrow, padding=padding)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, padding: int = 2, scale: int | None = None) -> Path:
    """Save ``(N, C, H, W)`` images in [-1, 1] as one PNG grid; small images
    are enlarged (nearest) by ``scale`` (None: to at least READABLE_PX)."""
    grid = grid_tensor(images, nrow, padding, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


def save_rows(rows: list[Tensor], path: str | Path, padding: int = 2, scale: int | None = None) -> Path:
    """Save a list of equally long image rows (each ``(M, C, H, W)``) as a grid."""
    m = rows[0].shape[0]
    if any(r.shape[0] != m for r in rows):
        raise ValueError("every row must hold the same number of images")
    return save_grid(torch.cat(rows), path, nrow=m, padding=padding, scale=scale)


def save_figure(fig, path: str | Path, dpi: int = 72) -> Path:
    """Lay out, write and close a matplotlib figure (its folder made as needed)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def grid_array(images: Tensor, nrow: int | None = None) -> Tensor:
    """The grid as an (H, W, C) float array in [0, 1], for matplotlib."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    return make_grid(to_unit(images), nrow=nrow, padding=2).permute(1, 2, 0)
