"""Experiment tracking through accelerate's trackers: the ``[logging]`` section.

    [logging]
    trackers = ["tensorboard"]      # or "wandb", "mlflow", "comet_ml", "aim", ...

accelerate owns the trackers (``Accelerator(log_with=...)``, ``init_trackers``,
``log``); this module decides what goes to them: every number the trainer
logs per iteration (energies, gap, gradient norms, learning rate, and any
evaluation metric a callback adds) every ``training.log_every`` iterations,
the resolved config as hyper-parameters, and each sample grid as an image.
TensorBoard writes into the run folder (``RUN/tensorboard/``); the hosted
trackers name the run after its folder.  metrics.csv is written either way.

A tracker whose package is missing stops the run before it starts, with the
``pip install`` line that adds it (TensorBoard is the extra
``shortrun-ebm[tensorboard]``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from .config import ExperimentConfig, LoggingConfig

INSTALL = {
    "tensorboard": "pip install 'shortrun-ebm[tensorboard]'",
    "wandb": "pip install wandb",
    "mlflow": "pip install mlflow",
    "comet_ml": "pip install comet_ml",
    "aim": "pip install aim",
    "clearml": "pip install clearml",
    "dvclive": "pip install dvclive",
    "swanlab": "pip install swanlab",
    "trackio": "pip install trackio",
}
"""Tracker name -> how to install what it needs."""

TENSORBOARD_DIR = "tensorboard"
"""TensorBoard's folder inside the run folder."""


def check_trackers(names: list[str]) -> list[str]:
    """The tracker names, checked: each known to accelerate and importable
    here (accelerate itself would skip a missing one silently)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    out = []
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(f"logging.trackers: unknown tracker '{name}'; known: {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
        if name not in available:
            raise ConfigError(f"logging.trackers: '{name}' needs its package, which is not installed: "
                              f"{INSTALL.get(name, 'pip install ' + name)}")
        if name not in out:
            out.append(name)
    return out


def accelerator_kwargs(config: "LoggingConfig", run_dir: str | Path) -> dict[str, Any]:
    """What ``Accelerator(...)`` needs for ``config``'s trackers (nothing without any).
    TensorBoard goes in as an instance so that its events land in
    ``RUN/tensorboard/`` whatever the project is called."""
    names = check_trackers(list(config.trackers))
    if not names:
        return {}
    log_with: list[Any] = []
    for name in names:
        if name == "tensorboard":
            from accelerate.tracking import TensorBoardTracker

            log_with.append(TensorBoardTracker(TENSORBOARD_DIR, str(run_dir)))
        else:
            log_with.append(name)
    return {"log_with": log_with, "project_dir": str(run_dir)}


def flat_config(config: "ExperimentConfig") -> dict[str, Any]:
    """The config as ``section.key -> value`` with values every tracker takes
    (bool, int, float, str; lists and None as text)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (bool, int, float, str)):
            out[prefix] = node
        else:
            out[prefix] = json.dumps(node)

    walk("", json.loads(config.model_dump_json()))
    return out


def scalars(logs: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of one iteration's logs, less the step counter."""
    return {k: float(v) for k, v in logs.items()
            if k != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Tracking:
    """A trainer callback that feeds accelerate's trackers.

    The trainer builds its Accelerator with :func:`accelerator_kwargs` and
    adds this callback when ``[logging] trackers`` is not empty; Python code
    that builds its own Trainer can do the same."""

    def __init__(self, config: "LoggingConfig") -> None:
        self.config = config

    def on_train_start(self, trainer: Any) -> None:
        acc = trainer.accelerator
        run = Path(trainer.run_dir).name
        acc.init_trackers(self.config.project, config=flat_config(trainer.config),
                          init_kwargs={"wandb": {"name": run}, "mlflow": {"run_name": run}, "comet_ml": {"run_name": run}})

    def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        t = trainer.config.training
        evaluated = any(k.startswith(("eval", "quality")) for k in logs)  # an evaluation's numbers, whenever they come
        if trainer.iteration % t.log_every == 0 or trainer.iteration == t.iterations or evaluated:
            trainer.accelerator.log(scalars(logs), step=trainer.iteration)

    def on_samples(self, trainer: Any, images: "Tensor", path: Path | None) -> None:
        """A sample grid, as the PNG shows it, to every tracker that takes images."""
        if not (self.config.images and trainer.accelerator.is_main_process):
            return
        from .images import grid_tensor

        grid = grid_tensor(images, scale=trainer.config.output.grid_scale or None)  # (C, H, W) in [0, 1]
        log_images(trainer.accelerator.trackers, "samples", grid, trainer.iteration, path)

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        trainer.accelerator.end_training()


def log_images(trackers: list[Any], key: str, grid: "Tensor", step: int, path: Path | None = None) -> None:
    """Each tracker in the form it takes: TensorBoard an NCHW float array,
    MLflow the PNG as an artifact, the others (wandb, ...) an HWC uint8 image."""
    import numpy as np

    chw = grid.detach().float().clamp(0, 1).cpu().numpy()
    hwc = (chw.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    for tracker in trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({key: chw[None]}, step=step, dataformats="NCHW")
        elif tracker.name == "mlflow":
            if path is not None:
                tracker.log_artifact(str(path), artifact_path="samples")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({key: [hwc]}, step=step)
