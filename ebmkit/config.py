"""The experiment configuration: one pydantic model, read from TOML, YAML or JSON.

A component section names the component and gives its parameters flat::

    [energy]
    name = "convnet"
    nf = 32

The parameters are validated by that component's own ``Params`` model (see
:meth:`ExperimentConfig.check_components`), so a typo or out-of-range value
names its field, e.g. ``energy.nf``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, PrivateAttr, create_model, field_validator, model_validator

from .errors import ConfigError, validated
from .interfaces import KINDS, component_spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(BaseModel):
    """``name`` picks a registered component; every other key is its parameter."""

    model_config = ConfigDict(extra="allow")
    name: str
    _checked: tuple[Any, dict[str, Any], BaseModel] | None = PrivateAttr(None)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    def keep_validated(self, cls: type, params: BaseModel) -> None:
        """Remember the component class and its validated ``Params``, so that building does not validate again."""
        self._checked = (cls, self.params, params)

    def validated_for(self, cls: type) -> BaseModel | None:
        """The kept ``Params`` when they were validated for ``cls`` from the parameters as they are now."""
        if self._checked is not None and self._checked[0] is cls and self._checked[1] == self.params:
            return self._checked[2]
        return None


class ScheduleConfig(_Strict):
    """Learning-rate schedule: a pure function of the iteration, so a resumed
    run continues on the same curve.

    factor(i) = warm-up(i) * decay(i), where warm-up rises linearly from 0 to 1
    over ``warmup`` iterations and decay is

    * ``none``: 1;
    * ``multiplicative``: ``gamma ** (i // every)`` (the anatomy paper's decay);
    * ``cosine``: from 1 down to 0 over the run, after ``start`` (a fraction);
    * ``linear``: from 1 down to 0 over the run, after ``start`` (the short-run
      paper's annealing near the end).

    The learning rate never goes below ``min_lr``.
    """

    warmup: int = Field(0, ge=0, description="linear warm-up iterations")
    decay: Literal["none", "multiplicative", "cosine", "linear"] = "none"
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="multiplicative: factor per `every` iterations")
    every: PositiveInt = Field(1000, description="multiplicative: iterations between decays")
    start: float = Field(0.0, ge=0.0, lt=1.0, description="cosine/linear: fraction of the run before decay begins")
    min_lr: float = Field(0.0, ge=0.0, description="floor for the learning rate")


class OptimizerConfig(_Strict):
    """torch.optim optimiser for the energy's parameters."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.0, ge=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: PositiveFloat | None = Field(None, description="clip the parameters' gradient norm to this value")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    scale_lr: Literal["none", "linear", "sqrt"] = Field(
        "none", description="data-parallel runs: multiply lr by the process count (linear) or its square root (sqrt)"
    )
    epsilon_scale: PositiveFloat | None = Field(
        None, description="anatomy recipe (with sgd): multiply lr and schedule.min_lr by epsilon^2/2, "
                          "epsilon being the Langevin noise sd"
    )

    def lr_multiplier(self) -> float:
        """epsilon^2/2 under the anatomy recipe's scaling, else 1."""
        return self.epsilon_scale**2 / 2.0 if self.epsilon_scale else 1.0

    def effective_schedule(self) -> ScheduleConfig:
        """The schedule with ``min_lr`` in the same (scaled) units as ``lr``."""
        m = self.lr_multiplier()
        return self.schedule if m == 1.0 else self.schedule.model_copy(update={"min_lr": self.schedule.min_lr * m})


class DivergenceConfig(_Strict):
    """When a run counts as diverged, and what the trainer does then
    (``[training.divergence]``; see docs/reliability.md and
    :mod:`ebmkit.divergence`).

    Non-finite energies, loss, samples, chain gradients or parameter
    gradients always count.  The energy gap d = mean U(data) - mean U(samples)
    counts as exploding at iteration t when

        |d_t| > max_gap,  or
        |d_t| > max(gap_floor, gap_factor * median(|d| over the last gap_window
                                                  iterations with |d| <= gap_floor))

    (the relative rule only once gap_window such iterations have been seen;
    gaps above the floor are left out of the median so that a slow climb
    cannot raise its own threshold).
    """

    action: Literal["stop", "rollback"] = Field(
        "stop", description="stop: end the run with a message; rollback: reload the last good checkpoint, lower the lr, go on"
    )
    max_gap: PositiveFloat | None = Field(1e4, description="absolute limit on |gap| (None: no absolute limit)")
    gap_factor: PositiveFloat | None = Field(100.0, description="relative limit: multiple of the recent median |gap| (None: off)")
    gap_window: PositiveInt = Field(50, description="iterations in the running median")
    gap_floor: float = Field(10.0, ge=0.0, description="|gap| at or below this never trips the relative rule; "
                             "only such gaps enter the running median")
    lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="rollback: multiply the learning rate by this")
    max_rollbacks: int = Field(3, ge=0, description="rollback: give up (stop) after this many")


class TrainingConfig(_Strict):
    """The trainer loop."""

    iterations: PositiveInt = 1000
    batch_size: PositiveInt = 64
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    num_workers: int = Field(0, ge=0)
    log_every: PositiveInt = 10
    sample_every: int = Field(500, ge=0, description="write a sample grid every N iterations (0: only at the end)")
    checkpoint_every: int = Field(500, ge=0, description="checkpoint every N iterations (0: only at the end)")
    keep_checkpoints: PositiveInt = 3
    progress: bool = True
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)


class EMAConfig(_Strict):
    """``[ema]``: an exponential moving average of the energy's weights
    (:mod:`ebmkit.training.ema`; what it buys is measured in docs/quality.md)."""

    decay: float | None = Field(None, gt=0.0, lt=1.0, description="EMA decay per iteration, e.g. 0.99 (None: off)")
    sample: bool = Field(True, description="draw sample grids, evaluations and a loaded run's samples with the "
                         "averaged weights (training chains always use the live weights)")


class EvaluationConfig(_Strict):
    """``[evaluation]``: sample quality measured while training
    (:mod:`ebmkit.training.evaluation`, docs/quality.md)."""

    every: int = Field(0, ge=0, description="evaluate every N iterations and at the last (0: off)")
    samples: int = Field(500, ge=2, description="samples per evaluation, from the same chain starts and noise each time")
    metrics: list[Literal["classifier", "fid"]] = Field(
        default_factory=lambda: ["classifier"],
        description="'classifier' (labelled image sets: recognisable share, coverage, Fréchet distance in its features) "
                    "and/or 'fid' (Inception, needs its weights on disk)")
    seed: int = Field(0, description="seed of the fixed chain starts and noise")
    keep_best: Literal["recognisable", "coverage", "fd", "fid"] | None = Field(
        None, description="keep the checkpoint with the best value of this score so far in RUN/best/")

    @model_validator(mode="after")
    def _best_is_measured(self):
        needs = "fid" if self.keep_best == "fid" else "classifier"
        if self.keep_best and needs not in self.metrics:
            raise ValueError(f"keep_best = '{self.keep_best}' needs '{needs}' in metrics (now {self.metrics})")
        return self


class DiagnosticsConfig(_Strict):
    """The anatomy paper's diagnostics (``[diagnostics]``; see docs/anatomy.md
    and :mod:`ebmkit.diagnostics`): d_st and r_t every iteration in
    ``diagnostics.csv``, trace + autocorrelation plots, long-run chains and,
    for 2-D data, landscape plots with MMD / KL to the true density."""

    enabled: bool = Field(False, description="record the diagnostics (`ebmkit train` adds the callback)")
    plot_every: int = Field(0, ge=0, description="write diagnostics.png every N iterations (0: only at the end)")
    acf_lags: PositiveInt = Field(100, description="largest lag of the autocorrelation plots")
    long_run_every: int = Field(0, ge=0, description="run long chains every N iterations and at the end (0: never)")
    long_run_steps: PositiveInt = Field(2000, description="steps of a long-run chain")
    long_run_chains: PositiveInt = Field(64, description="chains in a long run")
    long_run_from: Literal["data", "initializer"] = Field(
        "data", description="long runs start at training data or at the initializer's draws (e.g. persistent states)")
    landscape_every: int = Field(0, ge=0, description="2-D data: landscape PNG and MMD / KL every N iterations and at "
                                 "the end (0: only at the end)")
    landscape_samples: PositiveInt = Field(2000, description="2-D data: short-run samples for the KDE and the MMD")
    extent: PositiveFloat | None = Field(None, description="2-D data: half-width of the plotting / KL grid "
                                         "(default: 1.2 x the largest |coordinate| of the data)")
    resolution: PositiveInt = Field(100, description="2-D data: grid cells per side")
    mmd_bandwidth: PositiveFloat = Field(0.1, description="2-D data: gaussian-kernel bandwidth of the MMD")
    kde_bandwidth: PositiveFloat = Field(0.05, description="2-D data: bandwidth of the samples' KDE")


class PerformanceConfig(_Strict):
    """Speed settings of the run (``[performance]``; docs/performance.md).
    The sampler's fast path is the sampler's ``fast`` / ``channels_last``;
    mixed precision is ``training.mixed_precision``."""

    threads: PositiveInt | Literal["auto"] | None = Field(
        "auto", description="torch CPU threads: a number, auto (from the energy's size and the free cores; one thread "
                            "for small nets, see docs/performance.md), or None (torch's default, one per core)")
    channels_last: bool | None = Field(
        None, description="keep the energy's weights channels_last (None: on for image data on CPU when the energy "
              "takes that format, e.g. convnet)")
    compile: bool = Field(False, description="torch.compile the energy (meant for GPUs; not measured on the CPU)")
    # The GPU chain (ebmkit.chain_acceleration); "auto"/None: off on a CPU, ebmkit.gpu_defaults on CUDA.
    chain_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype of the chain's energy gradient; x and its update stay fp32 (fp16: loss scaling)")
    chain_compile: bool | None = Field(None, description="torch.compile the energy's forward/input gradient for the chain")
    chain_cuda_graph: bool | None = Field(None, description="capture the K-step chain as a CUDA graph and replay it per chain")
    cudnn_benchmark: bool | None = Field(None, description="CUDA runs: cuDNN's autotuner for the convolutions")


class LoggingConfig(_Strict):
    """Experiment tracking through accelerate's trackers (``[logging]``;
    :mod:`ebmkit.tracking`).  metrics.csv is written either way."""

    trackers: list[str] = Field(
        default_factory=list, description="accelerate trackers: tensorboard, wandb, mlflow, comet_ml, aim, clearml, "
                                          "dvclive, swanlab, trackio (each needs its own package)")
    project: str = Field("ebmkit", description="project (wandb) / experiment (mlflow) name; the run is named after "
                                               "its folder")
    images: bool = Field(True, description="send the sample grids to the trackers as images")


class OutputConfig(_Strict):
    dir: Path = Path("runs/experiment")
    grid_size: PositiveInt = 64
    grid_scale: int = Field(0, ge=0, description="enlarge grid cells by this factor (nearest); 0: auto, small images "
                                                 "grow to at least 32 px")


SECTIONS = {k.section: k.name for k in KINDS if k.section}
"""Config section -> registry kind (from :data:`ebmkit.interfaces.KINDS`)."""

_ComponentSections = create_model(
    "_ComponentSections", __base__=_Strict,
    **{k.section: (ComponentConfig, Field(default_factory=lambda k=k: ComponentConfig(name=k.default), description=k.doc))
       for k in KINDS if k.section},
)


class ExperimentConfig(_ComponentSections):
    """Everything one training run needs.

    One section per component kind with a config section (``data``,
    ``energy``, ``initializer``, ``sampler``, ``objective``: made from
    :data:`ebmkit.interfaces.KINDS`), each a :class:`ComponentConfig`, then
    the run's own sections."""

    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    ema: EMAConfig = Field(default_factory=EMAConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator(*SECTIONS, mode="before")
    @classmethod
    def _name_only(cls, v: Any) -> Any:
        return component_spec(v)  # the short form `sampler = "langevin"` too

    def component(self, section: str) -> ComponentConfig:
        return getattr(self, section)

    def check_components(self, registry: Any = None) -> None:
        """Validate every component section against its plug-in's ``Params``;
        the validated parameters are kept for building."""
        from .registry import default_registry

        registry = registry or default_registry()
        problems = []
        for section, kind in SECTIONS.items():
            comp = self.component(section)
            try:
                reg = registry.get(kind, comp.name)
            except ConfigError as exc:
                problems.append(f"{section}.name: {exc}")
                continue
            try:
                comp.keep_validated(reg.cls, registry.validate(kind, comp.name, comp.params, where=section))
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("invalid configuration:\n" + "\n".join(problems))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML, YAML or JSON file into a dict (no validation)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file in UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start}); "
                          "a config file is TOML, YAML or JSON text saved as UTF-8") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format '{suffix}'; use .toml, .yaml/.yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    if suffix in (".yaml", ".yml", ".json") and not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a table of sections, not a {type(data).__name__}")
    return data


def parse_value(raw: str) -> Any:
    """A value given on the command line: parsed as TOML (``0.5``, ``true``,
    ``[1, 2]``, ``'text'``), else kept as the plain string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as TOML, else a string)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        value = parse_value(raw)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return data


def parse_config(data: dict[str, Any], *, source: str = "config", registry: Any = None, check: bool = True) -> ExperimentConfig:
    """Validate a dict into an :class:`ExperimentConfig`; errors name the field."""
    cfg = validated(ExperimentConfig, data, heading=f"{source}: invalid configuration")
    if check:
        try:
            cfg.check_components(registry)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return cfg


QUICK_ENV = "EBMKIT_DOCS_ITERATIONS"
"""When set to N, every config read for training runs at most N iterations
(sample grids and checkpoints at most every N) with chains of at most
QUICK_STEPS steps: the documentation's examples run in seconds under test
(tests/test_docs_examples.py).  Not for real runs."""
QUICK_STEPS = 20


def quick_cap() -> int | None:
    """N from ``$EBMKIT_DOCS_ITERATIONS``, or None."""
    import os

    raw = os.environ.get(QUICK_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def apply_quick_cap(data: dict[str, Any]) -> dict[str, Any]:
    """``training.iterations`` (and the grid / checkpoint intervals) capped at :func:`quick_cap`."""
    cap = quick_cap()
    if cap is None:
        return data
    t = data.setdefault("training", {})
    t["iterations"] = min(int(t.get("iterations", cap)), cap)
    for key in ("sample_every", "checkpoint_every"):
        t[key] = min(int(t.get(key, 500)), cap)

    def short_chains(node: Any) -> None:  # `steps` of the sampler and of any sampler nested in it
        if isinstance(node, dict):
            if isinstance(node.get("steps"), int):
                node["steps"] = min(node["steps"], QUICK_STEPS)
            for v in node.values():
                short_chains(v)

    short_chains(data.get("sampler"))
    return data


def load_config(path: str | Path, overrides: list[str] | None = None, registry: Any = None) -> ExperimentConfig:
    """Read, override and validate an experiment file."""
    data = apply_quick_cap(apply_overrides(read_config_file(path), overrides or []))
    return parse_config(data, source=str(path), registry=registry)
