"""Distances between samples and a known 2-D density (the toy datasets).

* :func:`mmd`: maximum mean discrepancy with the gaussian kernel
  k(a, b) = exp(-|a - b|^2 / (2 h^2)), bandwidth h stated by the caller
  (default 0.1).  The biased (V-statistic) estimate of MMD^2, so two equal
  sample sets give exactly 0; the square root is returned.
* :func:`kl_on_grid`: KL(p || q) between two densities discretised on a
  regular grid: each is normalised over the grid cells (p_i ~ f(x_i)), then
  sum_i p_i log(p_i / q_i).  With a fine grid over the mass this is the
  continuous KL up to discretisation error.
* :func:`kde_log_density`: a gaussian kernel density estimate, to put
  samples on the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

DEFAULT_BANDWIDTH = 0.1


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    return (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None] - 2 * x @ y.T).clamp_min(0)


def mmd(x: Tensor, y: Tensor, bandwidth: float = DEFAULT_BANDWIDTH) -> float:
    """sqrt of the biased MMD^2 estimate between samples ``x`` (N, D) and ``y`` (M, D),
    gaussian kernel of bandwidth ``bandwidth``."""
    # kernels in float32 (fast), their means in float64
    x, y = x.detach().float().flatten(1).cpu(), y.detach().float().flatten(1).cpu()
    g = -1.0 / (2 * bandwidth**2)
    kxx = (_sq_dists(x, x) * g).exp().double().mean()
    kyy = (_sq_dists(y, y) * g).exp().double().mean()
    kxy = (_sq_dists(x, y) * g).exp().double().mean()
    return float((kxx + kyy - 2 * kxy).clamp_min(0).sqrt())


def grid(extent: float, resolution: int = 100) -> tuple[Tensor, Tensor]:
    """Cell centres of a ``resolution`` x ``resolution`` grid on [-extent, extent]^2:
    (points (R*R, 2), axis (R,)).  Row-major with y as the row, for imshow."""
    step = 2 * extent / resolution
    axis = -extent + step * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1), axis


def normalise_on_grid(log_f: Tensor) -> Tensor:
    """Probabilities of the grid cells from unnormalised log-density values."""
    return torch.softmax(log_f.double().flatten(), 0)


def kl_on_grid(log_p: Tensor, log_q: Tensor) -> float:
    """KL(p || q) of two densities given as (unnormalised) log values on the same grid."""
    lp = torch.log_softmax(log_p.double().flatten(), 0)
    lq = torch.log_softmax(log_q.double().flatten(), 0)
    return float((lp.exp() * (lp - lq)).sum())


def kde_log_density(samples: Tensor, points: Tensor, bandwidth: float = DEFAULT_BANDWIDTH, chunk: int = 4096) -> Tensor:
    """log of the gaussian KDE of ``samples`` (N, D) at ``points`` (M, D)."""
    s = samples.detach().float().flatten(1).cpu()
    d = s.shape[1]
    norm = math.log(s.shape[0]) + d * math.log(bandwidth * math.sqrt(2 * math.pi))
    out = []
    for p in points.float().cpu().split(chunk):  # float32 kernels: fast, and ample for a density on a grid
        out.append(torch.logsumexp(-_sq_dists(p, s) / (2 * bandwidth**2), 1).double() - norm)
    return torch.cat(out)


def energy_log_density(energy: Callable[[Tensor], Tensor], points: Tensor, beta: float = 1.0, chunk: int = 4096) -> Tensor:
    """-beta U(x) on ``points`` (the model's unnormalised log density), computed without gradients."""
    try:
        dtype = next(energy.parameters()).dtype  # type: ignore[union-attr]
        device = next(energy.parameters()).device  # type: ignore[union-attr]
    except (AttributeError, StopIteration):
        dtype, device = torch.float32, torch.device("cpu")
    with torch.no_grad():
        return torch.cat([-beta * energy(p.to(device, dtype)).double().cpu() for p in points.split(chunk)])


def toy_distances(
    log_density: Callable[[Tensor], Tensor],
    samples: Tensor,
    reference: Tensor,
    *,
    extent: float,
    resolution: int = 100,
    mmd_bandwidth: float = DEFAULT_BANDWIDTH,
    kde_bandwidth: float = 0.05,
    model_log_density: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """MMD(samples, reference) and KL(true || KDE(samples)) on the grid;
    with ``model_log_density`` also KL(true || model) (e.g. exp(-U) on the grid).

    ``reference``: exact samples of the true distribution (as many as ``samples``).
    """
    points, _ = grid(extent, resolution)
    log_p = log_density(points.float()).double()
    out = {
        "mmd": mmd(samples, reference, mmd_bandwidth),
        "kl_samples": kl_on_grid(log_p, kde_log_density(samples, points, kde_bandwidth)),
    }
    if model_log_density is not None:
        out["kl_model"] = kl_on_grid(log_p, model_log_density(points.float()))
    return out
