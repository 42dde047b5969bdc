"""Landscape plots for 2-D toys: the true density, the learned density
exp(-beta U) normalised on a grid, and the density of short-run samples (a
gaussian kernel density estimate), side by side as one PNG.

beta = 2 step / noise^2 is the inverse temperature the Langevin chain with
that step and noise targets (1 in the coupled form); see
:func:`sampler_beta`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from ..images import save_figure
from ..metrics.toy import energy_log_density, grid, kde_log_density, normalise_on_grid


def sampler_beta(sampler) -> float:
    """Inverse temperature of the distribution a Langevin-type sampler targets."""
    beta = getattr(sampler, "beta", None)  # a sampler that states its target (mala)
    if beta is not None:
        return float(beta)
    step, noise = sampler.step_size, sampler.noise  # declared by Sampler
    if step and noise:
        return 2.0 * float(step) / float(noise) ** 2
    return 1.0


def landscape_panels(
    *,
    extent: float,
    resolution: int = 100,
    log_density: Callable[[Tensor], Tensor] | None = None,
    energy=None,
    beta: float = 1.0,
    samples: dict[str, Tensor] | None = None,
    kde_bandwidth: float = 0.05,
) -> dict[str, Tensor]:
    """Grid probabilities (resolution x resolution, y as rows) for each panel:
    "true density", "learned exp(-U)", and one KDE per entry of ``samples``."""
    points, _ = grid(extent, resolution)
    panels: dict[str, Tensor] = {}
    if log_density is not None:
        panels["true density"] = normalise_on_grid(log_density(points.float()))
    if energy is not None:
        panels["learned exp(-U)"] = normalise_on_grid(energy_log_density(energy, points, beta))
    for name, x in (samples or {}).items():
        panels[name] = normalise_on_grid(kde_log_density(x, points, kde_bandwidth))
    return {k: v.reshape(resolution, resolution) for k, v in panels.items()}


def plot_landscape(path: str | Path, panels: dict[str, Tensor], *, extent: float, title: str = "") -> Path:
    """Write the panels of :func:`landscape_panels` side by side as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (name, p) in zip(axes[0], panels.items()):
        ax.imshow(p.numpy(), origin="lower", extent=(-extent, extent, -extent, extent), cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def scatter(path: str | Path, x: Tensor, *, extent: float | None = None, title: str = "") -> Path:
    """2-D samples as a scatter plot PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5)
    if extent:
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


__all__ = ["landscape_panels", "plot_landscape", "sampler_beta", "scatter"]
