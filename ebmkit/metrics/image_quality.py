"""Reconstruction quality: MSE per pixel, PSNR and SSIM.

All take ebmkit images ``(N, C, H, W)`` in [-1, 1].  The MSE per pixel is
reported on that scale: the mean over images, channels and pixels of
(x - y)^2 -- divide by 4 for the [0, 1] scale.  PSNR does not depend on the
scale (data range 2 here).  SSIM is the standard one: computed on images
brought to [0, 1] with data range 1, as every published SSIM is (its
constants C1 = (0.01 L)^2 and C2 = (0.03 L)^2 assume black = 0; on the
[-1, 1] scale flat grey 0 vs 0.1 would score 0.04 instead of 0.996).  PSNR
and SSIM are scikit-image's (``skimage.metrics``), per image and averaged.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

DATA_RANGE = 2.0


def _pair(x: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    if x.shape != y.shape:
        raise ValueError(f"images and reconstructions differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    return x.detach().double().cpu().numpy(), y.detach().double().cpu().numpy()


def mse_per_pixel(x: Tensor, y: Tensor) -> float:
    """Mean of (x - y)^2 over images, channels and pixels ([-1, 1] scale)."""
    a, b = _pair(x, y)
    return float(np.mean((a - b) ** 2))


def psnr(x: Tensor, y: Tensor) -> float:
    """Mean over images of scikit-image's PSNR (dB), data range 2."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _pair(x, y)
    b = np.clip(b, -1.0, 1.0)
    return float(np.mean([peak_signal_noise_ratio(ai, bi, data_range=DATA_RANGE) for ai, bi in zip(a, b)]))


def ssim(x: Tensor, y: Tensor) -> float:
    """Mean over images of scikit-image's SSIM (channels averaged), on the
    [0, 1] scale with data range 1.

    The window is 7x7, or the largest odd size that fits smaller images.
    """
    from skimage.metrics import structural_similarity

    a, b = _pair(x, y)
    a, b = (a + 1.0) / 2.0, (np.clip(b, -1.0, 1.0) + 1.0) / 2.0  # [-1, 1] -> [0, 1]
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {a.shape[-2]}x{a.shape[-1]}")
    return float(np.mean([
        structural_similarity(ai, bi, data_range=1.0, channel_axis=0, win_size=win) for ai, bi in zip(a, b)
    ]))


def reconstruction_quality(x: Tensor, y: Tensor) -> dict[str, float]:
    """MSE per pixel, PSNR and SSIM of reconstructions ``y`` of images ``x``."""
    return {"mse": mse_per_pixel(x, y), "psnr": psnr(x, y), "ssim": ssim(x, y)}


__all__ = ["mse_per_pixel", "psnr", "ssim", "reconstruction_quality", "DATA_RANGE"]
