"""Build every part of an experiment from its config."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import ExperimentConfig
from .data import check_dataset, check_declared_shape
from .interfaces import BuildContext, Energy, InitialDistribution, Objective, Sampler
from .registry import Registry, default_registry


@dataclass
class Experiment:
    """The built parts of one run.  Algorithm 1 needs nothing else."""

    config: ExperimentConfig
    shape: tuple[int, ...]
    energy: Energy
    initializer: InitialDistribution
    sampler: Sampler
    objective: Objective
    dataset: Dataset | None = None
    checkpoint: Any = None


def load_dataset(config: ExperimentConfig, split: str = "train", registry: Registry | None = None) -> tuple[Dataset, tuple[int, ...]]:
    """Load and check one split of the configured dataset."""
    reg = registry or default_registry()
    source = reg.build("dataset", config.data.name, config.data.params, where="data")
    dataset = source.load(split)
    shape = check_dataset(dataset, name=config.data.name)
    check_declared_shape(shape, getattr(source, "ebmkit_spec", {}), name=config.data.name)
    return dataset, shape


def build_components(
    config: ExperimentConfig, shape: tuple[int, ...], dataset: Dataset | None = None, registry: Registry | None = None
) -> dict[str, Any]:
    """Energy, initializer, sampler and objective for data of ``shape``.

    The energy's initial weights depend only on ``training.seed``, which also
    seeds python's and numpy's RNGs.
    """
    reg = registry or default_registry()
    ctx = BuildContext(shape=tuple(shape), dataset=dataset)
    # Every RNG a component might draw from (plug-ins may use python's or
    # numpy's), so that a seeded run is reproducible end to end.
    torch.manual_seed(config.training.seed)
    random.seed(config.training.seed)
    np.random.seed(config.training.seed % 2**32)
    return {
        section: reg.build(kind, getattr(config, section).name, getattr(config, section).params, ctx, where=section)
        for section, kind in (("energy", "energy"), ("initializer", "initializer"), ("sampler", "sampler"), ("objective", "objective"))
    }


def build_experiment(config: ExperimentConfig, registry: Registry | None = None, dataset: Dataset | None = None) -> Experiment:
    """Load the data and build every component of ``config``."""
    if dataset is None:
        dataset, shape = load_dataset(config, "train", registry)
    else:
        shape = check_dataset(dataset, name="(given dataset)")
    parts = build_components(config, shape, dataset, registry)
    return Experiment(config=config, shape=shape, dataset=dataset, **parts)


def load_trained(path, *, device: str | torch.device = "cpu", registry: Registry | None = None, with_data: bool | None = None) -> Experiment:
    """Rebuild an experiment from a checkpoint (a checkpoint or run folder)
    with its trained weights.  The dataset is loaded only when the
    initializer needs it (or ``with_data=True``)."""
    from .checkpoint import find_checkpoint
    from .config import parse_config
    from .errors import CheckpointError
    from .run_state import load_weights

    ckpt = find_checkpoint(path)
    if not ckpt.config or "shape" not in ckpt.state:
        raise CheckpointError(f"checkpoint {ckpt.path} holds no experiment config; was it written by ebmkit's trainer?")
    config = parse_config(ckpt.config, source=f"{ckpt.path}/state.json", registry=registry)
    shape = tuple(ckpt.state["shape"])
    parts = build_components(config, shape, None, registry)
    dataset = None
    if with_data or (with_data is None and getattr(parts["initializer"], "needs_data", False)):
        dataset, data_shape = load_dataset(config, "train", registry)
        if tuple(data_shape) != shape:
            raise CheckpointError(f"checkpoint {ckpt.path} was trained on data of shape {shape}, but its dataset "
                                  f"'{config.data.name}' now yields {tuple(data_shape)}")
        parts = build_components(config, shape, dataset, registry)
    load_weights(ckpt, parts["energy"], parts["initializer"])
    parts["energy"].to(device).eval()
    parts["initializer"].to(device).eval()  # a trained proposal (a VAE) draws with its running statistics
    return Experiment(config=config, shape=shape, dataset=dataset, checkpoint=ckpt, **parts)
