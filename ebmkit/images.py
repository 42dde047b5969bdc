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


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Save ``(N, C, H, W)`` images in [-1, 1] as one PNG grid."""
    if images.dim() != 4:
        raise ValueError(f"save_grid expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    save_image(to_unit(images), path, nrow=nrow, padding=padding)
    return path


def save_rows(rows: list[Tensor], path: str | Path, padding: int = 2) -> Path:
    """Save a list of equally long image rows (each ``(M, C, H, W)``) as a grid."""
    m = rows[0].shape[0]
    if any(r.shape[0] != m for r in rows):
        raise ValueError("every row must hold the same number of images")
    return save_grid(torch.cat(rows), path, nrow=m, padding=padding)


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
