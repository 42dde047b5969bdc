"""A run's state: what its checkpoints hold, captured from the live parts and
restored into them.

:mod:`ebmkit.checkpoint` is the on-disk format (atomic folders, checksums,
loading that cannot run code); this module decides what goes in and where it
comes back to:

* ``energy``, ``initializer`` (a persistent bank, a VAE), and a stateful
  sampler or objective -- safetensors, or a weights-only ``.pt`` for a part
  that is not an ``nn.Module`` but has ``state_dict``;
* ``optimizer`` and, for an initializer that learns, ``initializer_optimizer``;
* in ``state.json``: the config, the data shape, torch's version, how each
  part was built (``components``) and whatever else the caller adds (the
  divergence guard's state).

Errors name both sides: the checkpoint's architecture and this run's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, save_checkpoint
from .config import ExperimentConfig
from .errors import CheckpointError
from .interfaces import PARTS

SECTIONS = PARTS
"""The parts whose build spec the checkpoint records (:data:`ebmkit.interfaces.PARTS`)."""


@dataclass
class RunParts:
    """The live parts of a run whose state a checkpoint carries."""

    config: ExperimentConfig
    shape: tuple[int, ...]
    energy: torch.nn.Module  # unwrapped (no DDP, no compile wrapper)
    initializer: Any
    sampler: Any
    objective: Any
    optimizer: torch.optim.Optimizer
    ema: Any = None  # an ebmkit.training.ema.WeightAverage, when [ema] is on


def save(directory: Path, iteration: int, parts: RunParts, *, initializer_state: dict[str, torch.Tensor],
         process_rng: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None,
         keep: int | None = None) -> Path:
    """Write a checkpoint of ``parts`` at ``iteration`` (``initializer_state``:
    the whole initializer, a sharded bank gathered; ``process_rng``: every
    process's RNG in a data-parallel run; ``extra``: more for state.json)."""
    modules = {"energy": parts.energy.state_dict(), "initializer": initializer_state,
               **({"process_rng": process_rng} if process_rng else {}),
               **({"energy_ema": parts.ema.state_dict()} if parts.ema is not None else {})}
    objects = {"optimizer": parts.optimizer.state_dict()}
    for section, part in (("sampler", parts.sampler), ("objective", parts.objective)):
        _component_state(section, part, modules, objects)  # stateful samplers / objectives
    initializer_optimizer = parts.initializer.optimizer_state_dict()  # an initializer that learns (a VAE)
    if initializer_optimizer is not None:
        objects["initializer_optimizer"] = initializer_optimizer
    state = {
        "config": json.loads(parts.config.model_dump_json()),
        "shape": list(parts.shape),
        "versions": {"torch": torch.__version__},
        **(extra or {}),
        # how each part was built, defaults included: error messages name both sides
        "components": {section: getattr(parts, section).ebmkit_spec for section in SECTIONS},
    }
    return save_checkpoint(directory, iteration, modules=modules, objects=objects, state=state, keep=keep)


def restore(ckpt: Checkpoint, parts: RunParts, *,
            local_initializer_state: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = lambda sd: sd) -> None:
    """Load everything ``save`` wrote back into ``parts``, after checking the
    checkpoint fits this run; then the checkpoint's RNG states.
    ``local_initializer_state`` takes this process's share of a sharded bank."""
    check_compatible(ckpt, parts.config, parts.shape)
    load_state(parts.energy, ckpt.tensors("energy"), "energy", ckpt)
    if parts.ema is not None:
        # a checkpoint from before [ema] was switched on starts the average at the trained weights
        parts.ema.load_state_dict(ckpt.tensors("energy_ema") if ckpt.has("energy_ema") else parts.energy.state_dict())
    if ckpt.has("initializer"):
        load_state(parts.initializer, local_initializer_state(ckpt.tensors("initializer")), "initializer", ckpt)
    for section, part in (("sampler", parts.sampler), ("objective", parts.objective)):
        if ckpt.has(section):
            _load_component(section, part, ckpt)
    try:
        parts.optimizer.load_state_dict(ckpt.object("optimizer"))
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {ckpt.path}: its optimiser state does not fit this optimiser: {exc}") from None
    if ckpt.has("initializer_optimizer"):
        try:
            parts.initializer.load_optimizer_state_dict(ckpt.object("initializer_optimizer"))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {ckpt.path}: its initializer's optimiser state does not fit this "
                                  f"initializer's optimiser: {exc}") from None
    ckpt.restore_rng()


def load_weights(ckpt: Checkpoint, energy: torch.nn.Module, initializer: torch.nn.Module, *, averaged: bool | None = None) -> None:
    """The trained energy and initializer (for generation: no optimiser, no
    RNG).  With ``averaged`` (default: the run's ``ema.sample``) the energy
    gets the EMA weights where the checkpoint has them."""
    if averaged is None:
        averaged = bool(((ckpt.config or {}).get("ema") or {}).get("sample", True))
    if averaged and ckpt.has("energy_ema"):
        state = {k: v for k, v in ckpt.tensors("energy_ema").items() if k != "__ema_updates__"}
        load_state(energy, state, "energy", ckpt)
    else:
        load_state(energy, ckpt.tensors("energy"), "energy", ckpt)
    if ckpt.has("initializer"):
        load_state(initializer, ckpt.tensors("initializer"), "initializer", ckpt)


def _spec_text(spec: dict[str, Any] | None) -> str:
    """'convnet (nf=8, spectral_norm=False)' from a component spec."""
    if not spec:
        return "(unknown)"
    params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"'{spec.get('name', '?')}'" + (f" ({params})" if params else "")


def _saved_spec(ckpt: Checkpoint, section: str) -> dict[str, Any] | None:
    """How the checkpoint's component was built (defaults included when recorded)."""
    return (ckpt.state.get("components") or {}).get(section) or (ckpt.config or {}).get(section)


def check_compatible(ckpt: Checkpoint, config: ExperimentConfig, shape: tuple[int, ...]) -> None:
    """A checkpoint can continue this run: same energy and data shape.
    The error names both sides."""
    theirs = _saved_spec(ckpt, "energy") or {}
    if theirs.get("name") and theirs["name"] != config.energy.name:
        raise CheckpointError(
            f"checkpoint {ckpt.path} holds energy {_spec_text(theirs)}, but this run builds energy "
            f"{_spec_text(config.energy.spec())}; resume with the checkpoint's energy, or use a new run folder"
        )
    if "shape" in ckpt.state and tuple(ckpt.state["shape"]) != tuple(shape):
        raise CheckpointError(
            f"checkpoint {ckpt.path} was trained on data of shape {tuple(ckpt.state['shape'])}, but this run's data "
            f"'{config.data.name}' yields {tuple(shape)} (check data.image_size and data.channels), or use a new run folder"
        )


def _component_state(section: str, part: Any, modules: dict, objects: dict) -> None:
    """Add a sampler's / objective's state to a checkpoint: an nn.Module goes
    in as safetensors, anything else with ``state_dict()`` as a weights-only .pt."""
    if isinstance(part, torch.nn.Module):
        sd = part.state_dict()
        if sd:
            modules[section] = sd
    elif callable(getattr(part, "state_dict", None)) and callable(getattr(part, "load_state_dict", None)):
        objects[section] = part.state_dict()


def _load_component(section: str, part: Any, ckpt: Checkpoint) -> None:
    if isinstance(part, torch.nn.Module):
        load_state(part, ckpt.tensors(section), section, ckpt)
    elif callable(getattr(part, "load_state_dict", None)):
        part.load_state_dict(ckpt.object(section))


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, ckpt: Checkpoint) -> None:
    """load_state_dict with an error that names both architectures."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        theirs = _spec_text(_saved_spec(ckpt, what))
        ours = _spec_text(getattr(module, "ebmkit_spec", None))  # any module: a part, or a plain nn.Module in tests
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) < 400 else detail[:400] + " ..."
        raise CheckpointError(
            f"checkpoint {ckpt.path} holds {what} weights of {theirs}"
            + (f" for data of shape {tuple(ckpt.state['shape'])}" if "shape" in ckpt.state else "")
            + f", which do not fit this run's {what} {ours} ({type(module).__name__}): {detail}"
        ) from None
