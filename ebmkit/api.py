"""The front door from Python: ``ebmkit.train`` and ``ebmkit.load``.

    import ebmkit

    run = ebmkit.train("digits-cpu", training={"iterations": 300}, output={"dir": "runs/quick"})
    gen = ebmkit.load(run)                  # or a run folder, a checkpoint, an exported folder, "digits"
    x = gen.generate(64, seed=0)

Both are thin: ``train`` is what ``ebmkit train`` does (config, overrides,
trainer with the config's callbacks), ``load`` is
:meth:`ebmkit.generator.ShortRunGenerator.from_checkpoint`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .generation.generator import ShortRunGenerator


@dataclass
class Run:
    """A finished (or stopped) training run."""

    dir: Path
    config: "ExperimentConfig"
    last: dict[str, float] = field(default_factory=dict)
    """The numbers of the last iteration (energies, gap, gradient norm, ...)."""
    trainer: Any = None

    @property
    def metrics(self) -> list[dict[str, float]]:
        """metrics.csv, one dict per iteration."""
        import csv

        with open(self.dir / "metrics.csv", newline="") as f:
            return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]

    def load(self, device: str = "cpu") -> "ShortRunGenerator":
        """The trained model as a generator (its newest checkpoint)."""
        return load(self.dir, device=device)

    def export(self, out: str | Path, **kwargs: Any) -> Path:
        """``ebmkit export`` of this run into the folder ``out``."""
        from .export import export

        return export(self.dir, out, **kwargs)

    def __fspath__(self) -> str:  # a Run goes wherever a run folder does
        return str(self.dir)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def config_dict(config_or_path: "str | Path | dict[str, Any] | ExperimentConfig", overrides: dict[str, Any]) -> dict[str, Any]:
    """The experiment as a plain dict with ``overrides`` applied.

    ``config_or_path``: a preset name, a TOML / YAML / JSON file, a dict, or
    an :class:`~ebmkit.config.ExperimentConfig`.  ``overrides``: sections as
    dicts (``training={"iterations": 100}``, merged key by key) or single
    values spelt ``section__key`` (``training__iterations=100``).  A
    component section that names another component (``energy={"name": "mlp"}``)
    replaces the section, since the old component's parameters do not apply."""
    from .config import ExperimentConfig, read_config_file
    from .presets import resolve_config_path

    if isinstance(config_or_path, ExperimentConfig):
        data = json.loads(config_or_path.model_dump_json())
    elif isinstance(config_or_path, dict):
        data = copy.deepcopy(config_or_path)
    elif isinstance(config_or_path, (str, Path)):
        data = read_config_file(resolve_config_path(str(config_or_path)))
    else:
        raise ConfigError(f"ebmkit.train: expected a preset name, a config file, a dict or an ExperimentConfig, "
                          f"got {type(config_or_path).__name__}")
    for key, value in overrides.items():
        parts = key.split("__")
        if len(parts) == 1 and not isinstance(value, dict):
            raise ConfigError(f"ebmkit.train: override '{key}' must be a section given as a dict "
                              f"({key}={{...}}) or spelt section__key=value")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        old = node.get(parts[-1])
        if isinstance(value, dict) and isinstance(old, dict) and value.get("name", old.get("name")) == old.get("name"):
            _merge(old, value)  # same component (or a plain section): change the keys given
        elif isinstance(value, dict) and isinstance(old, dict) and "name" in value:
            node[parts[-1]] = dict(value)  # another component: the old one's parameters do not apply
        else:
            node[parts[-1]] = value
    return data


def train(config_or_path: "str | Path | dict[str, Any] | ExperimentConfig", *, resume: bool = False,
          callbacks: list[Any] | None = None, **overrides: Any) -> Run:
    """Train an experiment and return the :class:`Run`.

    ``ebmkit.train("digits-cpu")`` is ``ebmkit train digits-cpu``;
    ``ebmkit.train("my.toml", training={"iterations": 500}, output={"dir": "runs/k60"}, sampler__steps=60)``
    overrides values as ``--set`` does.  ``resume=True`` continues from the
    run folder's newest valid checkpoint.  Extra trainer callbacks go in
    ``callbacks``; the config's own (diagnostics, trackers) are added as the
    CLI adds them."""
    from .config import apply_quick_cap, parse_config
    from .training.diagnostics import callbacks_from_config
    from .experiment import build_experiment
    from .training.loop import Trainer

    data = apply_quick_cap(config_dict(config_or_path, overrides))
    cfg = parse_config(data, source=str(config_or_path) if isinstance(config_or_path, (str, Path)) else "config")
    trainer = Trainer(build_experiment(cfg), callbacks=[*callbacks_from_config(cfg.diagnostics), *(callbacks or [])])
    last = trainer.fit(resume=resume)
    return Run(dir=Path(trainer.run_dir), config=cfg, last=last, trainer=trainer)


def load(run_or_name: "str | Path | Run", *, device: str = "cpu") -> "ShortRunGenerator":
    """A trained model as a :class:`~ebmkit.generator.ShortRunGenerator`:
    ``generate``, ``transition``, ``interpolate``, ``reconstruct``, and
    ``super_resolve`` / ``inpaint`` where the model was trained for them.

    ``run_or_name``: a :class:`Run`, a run folder (its newest checkpoint), a
    checkpoint folder, a folder written by ``ebmkit export``, or the name of
    a model shipped with ebmkit (``ebmkit.pretrained.names()``, e.g. ``"digits"``)."""
    from .generation.generator import ShortRunGenerator

    path = run_or_name.dir if isinstance(run_or_name, Run) else run_or_name
    return ShortRunGenerator.from_checkpoint(path, device=device)
