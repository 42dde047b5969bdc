"""Inpainting with a trained conditional EBM, two simple baselines, and the scores.

* :func:`ebm_fill`: several completions per image from the short-run chain
  started at the condition (observed pixels kept, missing ones from noise).
* :func:`mean_fill`: every missing pixel gets the training set's mean at
  that pixel.
* :func:`nearest_fill`: the training image closest to the observed pixels
  (squared distance over them) lends its pixels to the holes.
* :func:`inpainting_scores`: PSNR over the whole image, PSNR over the missing
  pixels only, and SSIM (scikit-image's, data range 2 on the [-1, 1] scale).

Images are ``(N, C, H, W)`` in [-1, 1]; masks are bool ``(N, 1, H, W)``, True
where a pixel is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..conditional import ConditionalEnergy, ConditionalInitializer, bound
from ..data import load_array
from ..errors import ConfigError, DataError
from ..metrics.image_quality import DATA_RANGE, psnr, ssim


def ebm_fill(energy: ConditionalEnergy, sampler: Any, initializer: ConditionalInitializer, images: Tensor,
             missing: Tensor, *, samples: int = 4, steps: int | None = None, batch_size: int = 256,
             return_starts: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``samples`` completions of each image: ``(samples, N, C, H, W)``; the
    observed pixels of every completion equal the input's.  With
    ``return_starts`` also the chain starts the completions grew from (a
    learnt proposal's own guesses, e.g. a conditional VAE's), same shape."""
    if not isinstance(energy, ConditionalEnergy) or not isinstance(initializer, ConditionalInitializer):
        raise ConfigError(f"inpainting needs a conditional model (energy 'conditional-convnet', initializer 'masked'); "
                          f"this checkpoint has {type(energy).__name__} and {type(initializer).__name__}")
    out, starts = [], []
    for _ in range(samples):
        parts, firsts = [], []
        for i in range(0, images.shape[0], batch_size):
            x, m = images[i : i + batch_size], missing[i : i + batch_size]
            z = initializer.start(x, m)
            condition = initializer.condition
            if condition is None or condition.observed is None:
                raise ConfigError(f"inpainting needs an initializer that keeps observed pixels (e.g. 'masked'), "
                                  f"not {type(initializer).__name__}")
            firsts.append(condition.clamp(z.detach()))
            with bound(energy, condition):
                parts.append(condition.clamp(sampler.run(energy, z, steps=steps).x.detach()))
        out.append(torch.cat(parts))
        starts.append(torch.cat(firsts))
    return (torch.stack(out), torch.stack(starts)) if return_starts else torch.stack(out)


def mean_fill(train: Tensor, images: Tensor, missing: Tensor) -> Tensor:
    """Missing pixels get the per-pixel mean of the training images."""
    mean = train.mean(0, keepdim=True).to(images)
    return torch.where(missing.expand_as(images), mean.expand_as(images), images)


def nearest_fill(train: Tensor, images: Tensor, missing: Tensor, *, chunk: int = 256) -> Tensor:
    """Missing pixels copied from the training image nearest on the observed pixels."""
    train = train.to(images)
    flat_train = train.flatten(1)  # (M, D)
    out = []
    for i in range(0, images.shape[0], chunk):
        x, m = images[i : i + chunk], missing[i : i + chunk].expand_as(images[i : i + chunk])
        w = (~m).flatten(1).to(x.dtype)  # (n, D): 1 where observed
        xo = x.flatten(1) * w
        # ||w*(x - t)||^2 = sum w x^2 - 2 (w x) . t + w . t^2, for every pair at once
        d = (xo * x.flatten(1)).sum(1, keepdim=True) - 2 * xo @ flat_train.T + w @ (flat_train**2).T
        nearest = train[d.argmin(1)]
        out.append(torch.where(m, nearest, x))
    return torch.cat(out)


def missing_psnr(truth: Tensor, filled: Tensor, missing: Tensor) -> float:
    """Mean over images of scikit-image's PSNR on the missing pixels only (data range 2)."""
    from skimage.metrics import peak_signal_noise_ratio

    m = missing.expand_as(truth).cpu().numpy()
    a, b = truth.detach().double().cpu().numpy(), filled.detach().double().clamp(-1, 1).cpu().numpy()
    values = [peak_signal_noise_ratio(ai[mi], bi[mi], data_range=DATA_RANGE) for ai, bi, mi in zip(a, b, m) if mi.any()]
    if not values:
        raise ConfigError("no image has a missing pixel: PSNR over the missing region is undefined")
    return float(np.mean(values))


def inpainting_scores(truth: Tensor, filled: Tensor, missing: Tensor) -> dict[str, float]:
    """``psnr`` (whole image), ``psnr_missing`` (missing pixels only), ``ssim``
    (whole image), ``mse_missing`` (per missing pixel, [-1, 1] scale).
    ``filled`` may hold several completions ``(S, N, C, H, W)``: their scores are averaged."""
    if filled.dim() == 5:
        per = [inpainting_scores(truth, f, missing) for f in filled]
        return {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    m = missing.expand_as(truth)
    err = (truth.double() - filled.double().clamp(-1, 1))[m]
    return {"psnr": psnr(truth, filled), "psnr_missing": missing_psnr(truth, filled, missing), "ssim": ssim(truth, filled),
            "mse_missing": float(err.pow(2).mean())}


def masked_view(images: Tensor, missing: Tensor, value: float = 0.0) -> Tensor:
    """The input as a person sees it: missing pixels painted ``value`` (0 = grey on [-1, 1])."""
    return torch.where(missing.expand_as(images), torch.full_like(images, value), images)


def load_mask_file(path: str | Path, height: int, width: int) -> Tensor:
    """A mask from a PNG (white = missing, resized to the images) or a .npy/.pt array (nonzero = missing);
    ``(1, 1, H, W)`` bool, or ``(N, 1, H, W)`` when the array holds one mask per image."""
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz", ".pt"):
        m = load_array(path, what="mask") != 0
    elif not path.is_file():
        raise DataError(f"mask file not found: {path}")
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                m = torch.from_numpy(np.asarray(im.convert("L").resize((width, height), Image.NEAREST)) > 127)
        except (OSError, ValueError, SyntaxError) as exc:  # a corrupt or truncated image file
            raise DataError(f"cannot read mask file {path}: {' '.join(str(exc).split())[:300]}") from None
    while m.dim() < 4:
        m = m.unsqueeze(0)
    if tuple(m.shape[-2:]) != (height, width):
        raise DataError(f"mask {path} is {m.shape[-2]}x{m.shape[-1]}, the images are {height}x{width}")
    return m[:, :1].bool()


__all__ = ["ebm_fill", "mean_fill", "nearest_fill", "missing_psnr", "inpainting_scores", "masked_view", "load_mask_file"]
