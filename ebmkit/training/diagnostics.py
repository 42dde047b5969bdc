"""The anatomy paper's learning diagnostics, as a trainer callback.

Recorded every iteration (``diagnostics.csv``):

* ``d_st`` = mean U(data) - mean U(short-run samples), in the units of the
  loss: times the objective's ``loss_scale`` (2/eps^2 under the anatomy
  recipe), i.e. for the energy the chain samples.  It oscillates around 0
  when learning is stable; its sign says which side the model pushes.
* ``r_t`` = step * mean over the chain (steps and chains) of the per-sample
  ||grad_x U||, step = eps^2/2 in the coupled form: the typical size of the
  gradient part of one Langevin update, to compare with the noise sd: far
  above it, the chain is gradient-driven (noise negligible, as in
  non-convergent short-run learning); of its order or below, noise matters
  and long chains can mix.

Plotted as traces plus autocorrelations (``diagnostics.png``) at intervals and
at the end.  Optional long-run chains (thousands of steps from data or from
the initializer's states) show the model's steady state, and on 2-D toys
landscape plots and MMD / KL to the true density (``toy_metrics.csv``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import DiagnosticsConfig
from ..images import save_figure
from ..sampling import input_gradient, seeded
from .callbacks import Callback, MetricsLog

if TYPE_CHECKING:
    from .loop import Trainer

COLUMNS = ("iteration", "d_st", "r_t", "energy_data", "energy_samples", "acceptance", "lr")


# -- the two diagnostics, by definition ---------------------------------------------------


def energy_difference(energy: nn.Module, data: Tensor, samples: Tensor, scale: float = 1.0) -> float:
    """d_st = scale * (mean U(data) - mean U(samples))."""
    with torch.no_grad():
        return scale * float(energy(data).mean() - energy(samples).mean())


def per_sample_grad_norm(energy: nn.Module, x: Tensor) -> Tensor:
    """||grad_x U(x)|| for each sample of ``x`` (B,), by plain autograd."""
    return input_gradient(energy, x, fast=False)(x).flatten(1).norm(dim=1)


def gradient_magnitude(step: float, grad_norm: Tensor) -> float:
    """r_t = step * mean of the per-sample gradient norms (any shape: per step,
    per step and chain, ...).  ``step`` is eps^2/2 in the coupled form."""
    return step * float(grad_norm.float().mean())


def chain_gradient_magnitude(energy: nn.Module, states: list[Tensor], step: float) -> float:
    """r_t of a fixed chain given as its states x_0 .. x_{K-1} (the points
    where the gradient is taken)."""
    return gradient_magnitude(step, torch.stack([per_sample_grad_norm(energy, x) for x in states]))


def autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags 0..max_lag (1 at lag 0; 0 for a constant)."""
    x = np.asarray(series, dtype=float)
    x = x[np.isfinite(x)]
    x = x - x.mean() if len(x) else x
    n = len(x)
    max_lag = max(0, min(max_lag, n - 1))
    var = float(x @ x)
    if n == 0 or var == 0:
        return np.r_[1.0, np.zeros(max_lag)]
    return np.array([float(x[: n - k] @ x[k:]) / var for k in range(max_lag + 1)])


# -- plots --------------------------------------------------------------------------------


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a diagnostics CSV as float arrays (blank -> nan)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]) for k in rows[0]}


def plot_diagnostics(columns: dict[str, np.ndarray], path: Path, *, max_lag: int = 100, title: str = "") -> Path:
    """Traces of d_st and r_t (top) and their autocorrelations (bottom), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(8, 5.2))
    it = columns.get("iteration", np.arange(len(columns.get("d_st", []))))
    for j, (key, label) in enumerate((("d_st", "d_st = E_data[U] - E_samples[U]"), ("r_t", "r_t = step * mean |grad U|"))):
        y = columns.get(key, np.array([]))
        axes[0, j].plot(it, y, lw=0.7)
        if key == "d_st":
            axes[0, j].axhline(0.0, color="k", lw=0.5)
        axes[0, j].set_title(label, fontsize=9)
        axes[0, j].set_xlabel("iteration", fontsize=8)
        acf = autocorrelation(y, max_lag)
        axes[1, j].bar(np.arange(len(acf)), acf, width=1.0)
        axes[1, j].set_title(f"autocorrelation of {key}", fontsize=9)
        axes[1, j].set_xlabel("lag (iterations)", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


# -- the callback ---------------------------------------------------------------------------


class Diagnostics(Callback):
    """Records d_st and r_t every iteration; plots, long runs and toy
    landscapes at the configured intervals (see :class:`~ebmkit.config.DiagnosticsConfig`)."""

    def __init__(self, cfg: DiagnosticsConfig | None = None) -> None:
        self.cfg = cfg or DiagnosticsConfig(enabled=True)
        self._toy: Any = None
        self._last = 0

    # paths
    def _dir(self, trainer: "Trainer") -> Path:
        return trainer.run_dir / "diagnostics"

    def on_train_start(self, trainer: "Trainer") -> None:
        self.csv = MetricsLog(trainer.run_dir / "diagnostics.csv", enabled=trainer.is_main)
        self.long_csv = MetricsLog(self._dir(trainer) / "longrun.csv", enabled=trainer.is_main)
        self.toy_csv = MetricsLog(trainer.run_dir / "toy_metrics.csv", enabled=trainer.is_main)
        if trainer.is_main:
            self._dir(trainer).mkdir(parents=True, exist_ok=True)
        self._truncate(trainer.iteration)

    def _truncate(self, iteration: int) -> None:
        for log in (self.csv, self.long_csv, self.toy_csv):  # a resumed / rolled-back run reads as one run
            log.truncate_after(iteration)
        self._last = iteration

    def row(self, trainer: "Trainer", logs: dict[str, float]) -> dict[str, Any]:
        scale = float(trainer.objective.loss_scale)  # declared by Objective (2/eps^2 under the anatomy recipe)
        step = trainer.sampler.step_size  # declared by Sampler; None for a chain that is not Langevin-type
        out: dict[str, Any] = {"iteration": int(logs["iteration"])}
        out["d_st"] = scale * logs["gap"] if "gap" in logs else ""
        out["r_t"] = float(step) * logs["chain_grad_norm"] if step is not None and "chain_grad_norm" in logs else ""
        for key in COLUMNS[3:]:
            out[key] = logs.get(key, "")
        return out

    def on_step_end(self, trainer: "Trainer", logs: dict[str, float]) -> None:
        if trainer.iteration <= self._last:  # the divergence guard rolled back to an earlier checkpoint
            self._truncate(trainer.iteration - 1)
        self._last = trainer.iteration
        self.csv.append(self.row(trainer, logs))
        i, c = trainer.iteration, self.cfg
        if c.plot_every and i % c.plot_every == 0:
            self.plot(trainer)
        if c.long_run_every and i % c.long_run_every == 0:
            self.long_run(trainer)
        if c.landscape_every and i % c.landscape_every == 0:
            self.landscape(trainer)

    def on_train_end(self, trainer: "Trainer") -> None:
        self.plot(trainer)
        if self.cfg.long_run_every and trainer.iteration % self.cfg.long_run_every:
            self.long_run(trainer)
        if not (self.cfg.landscape_every and trainer.iteration % self.cfg.landscape_every == 0):
            self.landscape(trainer)

    # outputs
    def plot(self, trainer: "Trainer") -> Path | None:
        if not trainer.is_main or not self.csv.path.exists():
            return None
        return plot_diagnostics(read_csv(self.csv.path), trainer.run_dir / "diagnostics.png", max_lag=self.cfg.acf_lags,
                                title=f"{trainer.config.data.name}, iteration {trainer.iteration}")

    def _forked(self, trainer: "Trainer", fn):
        """Run ``fn`` on a forked RNG so that the training stream is unaffected."""
        with seeded(trainer.config.training.seed + 11 + trainer.iteration, trainer.device):
            return fn()

    def long_run(self, trainer: "Trainer") -> Path | None:
        """Long chains from data or the initializer; samples as PNG, energies in longrun.csv."""
        if not trainer.is_main:
            return None
        c, energy = self.cfg, trainer.unwrapped_energy

        def run():
            n = c.long_run_chains
            if c.long_run_from == "data":
                z = trainer.data_batch(min(n, len(trainer.experiment.dataset)))
            else:
                data = trainer.data_batch(n) if trainer.initializer.needs_data else None
                z = trainer.initializer.sample(n, data=data)
            x = trainer.sampler.run(energy, z, steps=c.long_run_steps).x.detach()
            with torch.no_grad():
                return z, x, float(energy(z).mean()), float(energy(x).mean())

        z, x, u0, u1 = self._forked(trainer, run)
        name = f"iter-{trainer.iteration:08d}.png"
        path = self._dir(trainer) / "longrun" / name
        row: dict[str, Any] = {"iteration": trainer.iteration, "steps": c.long_run_steps, "from": c.long_run_from,
                               "energy_start": u0, "energy_end": u1}
        if x.dim() == 4:
            from ..images import save_grid

            save_grid(x, path)
        elif x.dim() == 2 and x.shape[1] == 2:
            from .landscape import scatter

            scatter(path, x, extent=self._extent(trainer), title=f"{c.long_run_steps}-step chains, iteration {trainer.iteration}")
            toy = self._toy_source(trainer)
            if toy is not None:
                from ..metrics.toy import mmd

                ref = toy.sample(len(x), torch.Generator().manual_seed(trainer.config.training.seed + 5))
                row["mmd"] = mmd(x.float().cpu(), ref, c.mmd_bandwidth)
        else:
            path = path.with_suffix(".pt")
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(x.cpu(), path)
        self.long_csv.append(row)
        return path

    # 2-D toys
    def _toy_source(self, trainer: "Trainer"):
        if self._toy is None:
            from ..registry import default_registry

            cfg = trainer.config.data
            registry = trainer.experiment.registry or default_registry()  # the registry the run was built from
            try:
                source = registry.build("dataset", cfg.name, cfg.params, where="data")
            except Exception:  # a dataset given in code, not by name: no true density to compare with
                source = None
            self._toy = source if callable(getattr(source, "log_density", None)) else False
        return self._toy or None

    def _extent(self, trainer: "Trainer") -> float:
        if self.cfg.extent:
            return float(self.cfg.extent)
        data = getattr(trainer.experiment.dataset, "data", None)
        return 1.2 * float(data.abs().max()) if data is not None else 1.5

    def landscape(self, trainer: "Trainer") -> dict[str, float] | None:
        """2-D toys: landscape PNG and MMD / KL of short-run samples (and of exp(-U)) to the truth."""
        if not trainer.is_main or tuple(trainer.experiment.shape) != (2,):
            return None
        toy = self._toy_source(trainer)
        if toy is None:
            return None
        from .landscape import landscape_panels, plot_landscape, sampler_beta
        from ..metrics.toy import energy_log_density, toy_distances

        c, energy = self.cfg, trainer.unwrapped_energy
        extent, beta = self._extent(trainer), sampler_beta(trainer.sampler)
        samples = self._forked(trainer, lambda: trainer.sample(c.landscape_samples)).float().cpu()
        reference = toy.sample(len(samples), torch.Generator().manual_seed(trainer.config.training.seed + 5))
        was_training = energy.training
        energy.eval()
        try:
            metrics = toy_distances(toy.log_density, samples, reference, extent=extent, resolution=c.resolution,
                                    mmd_bandwidth=c.mmd_bandwidth, kde_bandwidth=c.kde_bandwidth,
                                    model_log_density=lambda p: energy_log_density(energy, p, beta))
            panels = landscape_panels(extent=extent, resolution=c.resolution, log_density=toy.log_density, energy=energy,
                                      beta=beta, samples={"short-run samples (KDE)": samples}, kde_bandwidth=c.kde_bandwidth)
        finally:
            energy.train(was_training)
        plot_landscape(self._dir(trainer) / "landscape" / f"iter-{trainer.iteration:08d}.png", panels, extent=extent,
                       title=f"iteration {trainer.iteration}: MMD {metrics['mmd']:.4f}, KL(true||samples) "
                             f"{metrics['kl_samples']:.3f}, KL(true||exp(-U)) {metrics['kl_model']:.3f}")
        self.toy_csv.append({"iteration": trainer.iteration, **metrics})
        return metrics


def callbacks_from_config(cfg: DiagnosticsConfig) -> list[Callback]:
    """The callbacks a ``[diagnostics]`` section asks for (none unless enabled)."""
    return [Diagnostics(cfg)] if cfg.enabled else []
