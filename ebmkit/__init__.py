"""ebmkit: energy-based models learned with short-run MCMC.

Energy convention everywhere: U(x), low energy = likely, p(x) ~ exp(-U(x)).
See :mod:`ebmkit.interfaces` for the four interfaces and
:mod:`ebmkit.registry` for building components by name.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from . import errors, moved
from .hookspecs import hookimpl, hookspec
from .interfaces import (
    BuildContext,
    Component,
    DataSource,
    Energy,
    InitialDistribution,
    MaskGenerator,
    Objective,
    ObjectiveOutput,
    Params,
    SampleResult,
    Sampler,
)
from .registry import (
    Registry,
    create,
    create_dataset,
    create_energy,
    create_initializer,
    create_mask,
    create_objective,
    create_sampler,
    default_registry,
)

__version__ = "0.1.0"

moved.install()  # the flat layout's module paths (ebmkit.trainer, ebmkit.generator, ...) still import

# Heavier parts load on first use, so `import ebmkit` stays quick for plug-ins.
_LAZY = {
    "ExperimentConfig": "ebmkit.config",
    "load_config": "ebmkit.config",
    "Experiment": "ebmkit.experiment",
    "build_experiment": "ebmkit.experiment",
    "Trainer": "ebmkit.training.loop",
    "save_grid": "ebmkit.images",
    "load_trained": "ebmkit.experiment",
    "ShortRunGenerator": "ebmkit.generation.generator",
    # the front door (ebmkit.api): train a config, load a trained model
    "train": "ebmkit.api",
    "load": "ebmkit.api",
    "Run": "ebmkit.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ebmkit' has no attribute '{name}'")


__all__ = [
    "BuildContext", "Component", "DataSource", "Energy", "InitialDistribution", "MaskGenerator", "Objective", "ObjectiveOutput",
    "Params", "Registry", "SampleResult", "Sampler", "create", "create_dataset", "create_energy",
    "create_initializer", "create_mask", "create_objective", "create_sampler", "default_registry", "errors", "hookimpl",
    "hookspec", *_LAZY,
]
