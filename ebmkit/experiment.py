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
from .interfaces import KIND, PARTS, BuildContext, Energy, InitialDistribution, Objective, Sampler
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
    registry: Registry | None = None  # the registry the parts were built from (None: the default one)


def build_section(config: ExperimentConfig, kind: str, registry: Registry, context: BuildContext | None = None) -> Any:
    """The component a config section names, from the parameters the config
    already validated when it was checked against this registry."""
    section = KIND[kind].section
    comp = config.component(section)
    params = comp.validated_for(registry.get(kind, comp.name, where=section).cls)
    return registry.build(kind, comp.name, comp.params if params is None else params, context, where=section)


def load_dataset(config: ExperimentConfig, split: str = "train", registry: Registry | None = None) -> tuple[Dataset, tuple[int, ...]]:
    """Load and check one split of the configured dataset."""
    reg = registry or default_registry()
    source = build_section(config, "dataset", reg)
    dataset = source.load(split)
    shape = check_dataset(dataset, name=config.data.name)
    check_declared_shape(shape, source.ebmkit_spec or {}, name=config.data.name)
    return dataset, shape


def build_components(
    config: ExperimentConfig, shape: tuple[int, ...], dataset: Dataset | None = None, registry: Registry | None = None
) -> dict[str, Any]:
    """Energy, initializer, sampler and objective for data of ``shape``.

    The energy's initial weights depend only on ``training.seed``, which also
    seeds python's and numpy's RNGs.
    """
    reg = registry or default_registry()
    ctx = BuildContext(shape=tuple(shape), dataset=dataset, registry=reg)
    # Every RNG a component might draw from (plug-ins may use python's or
    # numpy's), so that a seeded run is reproducible end to end.
    torch.manual_seed(config.training.seed)
    random.seed(config.training.seed)
    np.random.seed(config.training.seed % 2**32)
    return {kind: build_section(config, kind, reg, ctx) for kind in PARTS}


def build_experiment(config: ExperimentConfig, registry: Registry | None = None, dataset: Dataset | None = None) -> Experiment:
    """Load the data and build every component of ``config``."""
    if dataset is None:
        dataset, shape = load_dataset(config, "train", registry)
    else:
        shape = check_dataset(dataset, name="(given dataset)")
    parts = build_components(config, shape, dataset, registry)
    return Experiment(config=config, shape=shape, dataset=dataset, registry=registry, **parts)


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
    return Experiment(config=config, shape=shape, dataset=dataset, checkpoint=ckpt, registry=registry, **parts)
