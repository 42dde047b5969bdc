"""The four interfaces every part of ebmkit is built from.

Sign convention -- the only one used anywhere in ebmkit:

    U(x) is an *energy*: low energy means likely.  The model density is
    p(x) = exp(-U(x)) / Z.  Langevin moves downhill,
    x <- x - step * grad_x U(x) + noise * N(0, I), and the maximum-likelihood
    loss is mean U(data) - mean U(samples).

Each interface is also a *component*: it declares its parameters as a pydantic
model in ``Params`` and is built by ``from_params(params, context)``.  The
registry validates a user's parameters against ``Params`` before building, so
a component never sees unvalidated input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class Params(BaseModel):
    """Base for a component's parameters: unknown fields are errors, so a
    typo in a config names the field instead of being ignored."""

    model_config = ConfigDict(extra="forbid")


def component_spec(value: Any, missing_name: str | None = None) -> Any:
    """A component given by name -- ``"langevin"`` or ``{name = "langevin", steps = 40}`` --
    as a dict ``{"name": ..., **params}``.  With ``missing_name``, a dict without
    a string ``name`` is an error with that message; anything else is left for
    pydantic to reject.  Config sections and plug-ins that nest another
    component (a wrapped sampler, a mask generator) share this one reading."""
    if isinstance(value, str):
        return {"name": value}
    if missing_name is not None and isinstance(value, dict) and not isinstance(value.get("name"), str):
        raise ValueError(missing_name)
    return value


@dataclass
class BuildContext:
    """What a component may need beyond its own parameters.

    ``shape`` is the per-sample shape of the data, e.g. ``(1, 32, 32)`` or
    ``(2,)``; ``dataset`` is the training set (a ``torch.utils.data.Dataset``
    of tensors in [-1, 1]) for components that start from data;
    ``registry`` is the registry building this component (set by
    :meth:`ebmkit.registry.Registry.build`): a component that builds another
    one (a wrapped sampler, a mask generator) does so through :meth:`build`.
    """

    shape: tuple[int, ...] | None = None
    dataset: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    registry: Any = None

    def build(self, kind: str, spec: dict[str, Any], *, where: str) -> Any:
        """Build the nested component ``spec`` (``{"name": ..., **params}``)
        from the same registry, with this context; ``where`` names its config field."""
        if self.registry is None:
            raise ValueError(f"{where}: a nested component is built through the registry building this one; "
                             "build through a Registry (Registry.build, ebmkit.create), which sets context.registry")
        params = dict(spec)
        name = params.pop("name")
        return self.registry.build(kind, name, params, self, where=where)

    def require_shape(self, who: str) -> tuple[int, ...]:
        if self.shape is None:
            raise ValueError(f"{who} needs the data shape: pass shape=(C, H, W) (or (D,) for vectors)")
        return tuple(self.shape)


class Component:
    """Mixin giving every component a ``Params`` model and a builder."""

    Params: ClassVar[type[BaseModel]] = Params
    ebmkit_spec: dict[str, Any] | None = None
    """How the registry built it: ``{"name": ..., **validated params}``
    (defaults included); checkpoints record it and errors quote it.  ``None``
    for a component made directly in code."""

    @classmethod
    def from_params(cls, params: BaseModel, context: BuildContext) -> Any:
        """Build from validated parameters.  Override when the context matters."""
        return cls(**params.model_dump())

    def set_progress(self, iteration: int, total: int) -> dict[str, float]:
        """Called by the trainer before each iteration (``iteration`` counts
        from 0).  Components that anneal a value with training time override
        it and return the current values, which are logged."""
        return {}


class Energy(nn.Module, Component):
    """U(x): maps a batch ``(B, *shape)`` to energies ``(B,)``; low = likely."""

    channels_last_ok: ClassVar[bool] = False
    """True when ``forward`` accepts image batches in channels_last memory
    (it never ``.view``s its input): samplers may then pick that format for
    CPU chains on their own (see docs/performance.md)."""

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def input_grad_fn(self, like: Tensor) -> Callable[[Tensor], Tensor] | None:
        """Optional fast path for samplers: a function ``x -> grad_x sum U(x)``
        (no graph kept) for tensors like ``like``, valid while the weights do
        not change.  ``None`` (the default) means: use autograd.  Samplers
        reach it through :func:`ebmkit.sampling.input_gradient`."""
        return None


class InitialDistribution(nn.Module, Component):
    """p0: draws the chain starts z for a batch.

    It is a module so that state (a persistent bank, a VAE) moves with the
    device and is saved with checkpoints.  Set ``needs_data = True`` when
    ``sample`` reads the ``data`` batch or the training set.
    """

    needs_data: ClassVar[bool] = False
    sharded_buffers: ClassVar[tuple[str, ...]] = ()
    """Buffers whose rows are independent chains (a persistent bank).  In a
    data-parallel run each process keeps only its contiguous share of their
    rows, checkpoints hold them whole, and a resume re-splits them at any
    process count (see :mod:`ebmkit.distributed`).  Read a bank's length from
    the buffer itself (``len(self.bank)``), not from a stored size."""

    def __init__(self) -> None:
        super().__init__()
        # A zero-size buffer that follows .to(device), so stateless
        # initializers still know where to draw.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:  # pragma: no cover
        """Draw ``n`` starts.  ``data`` is the current positive batch, for
        initializers that start from (or condition on) data."""
        raise NotImplementedError

    def update(self, samples: Tensor) -> dict[str, float]:
        """Feedback from the finished chains of the last ``sample`` call.

        A persistent bank writes them back; an amortised sampler learns from
        them.  Returns numbers worth logging.  The default keeps nothing.
        """
        return {}

    def optimizer_state_dict(self) -> dict[str, Any] | None:
        """State of the initializer's own optimiser, for initializers that
        learn (a VAE proposal).  The trainer saves it in the checkpoint beside
        its own optimiser and hands it back on resume.  By default: the state
        of ``self.optimizer`` when that is a torch optimiser, else ``None``
        (nothing to save), so an initializer that learns only sets ``self.optimizer``."""
        opt = getattr(self, "optimizer", None)
        return opt.state_dict() if isinstance(opt, torch.optim.Optimizer) else None

    def blend(self, z1: Tensor, z2: Tensor, a: float, b: float) -> Tensor:
        """The start ``a*z1 + b*z2`` that latent interpolation visits (the
        generator calls it with a = rho, b = sqrt(1 - rho^2)).  This keeps a
        centred gaussian p0 unchanged; an initializer centred elsewhere
        (``fitted-gaussian``) blends about its centre instead."""
        return a * z1 + b * z2

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`optimizer_state_dict` returned."""
        opt = getattr(self, "optimizer", None)
        if isinstance(opt, torch.optim.Optimizer):
            opt.load_state_dict(state)

    @property
    def device(self) -> torch.device:
        return self._anchor.device


@dataclass
class SampleResult:
    """What a sampler returns.

    ``x``: the final samples.  ``trajectory``: the chain at the recorded steps
    as ``{step: tensor}`` (step 0 is z).  ``grad_norm``: per step, the mean
    over the batch of ||grad_x U|| (shape ``(K,)``).  ``acceptance``: the
    mean acceptance rate, for samplers that accept or reject.
    """

    x: Tensor
    grad_norm: Tensor
    trajectory: dict[int, Tensor] = field(default_factory=dict)
    acceptance: float | None = None
    stats: dict[str, float] = field(default_factory=dict)


class Sampler(Component):
    """M: runs K steps of a chain from z against an energy.

    ``step_size`` and ``noise`` are the coefficients of a Langevin-type update
    x <- x - step_size * grad U + noise * N(0, I) (see
    :func:`ebmkit.sampling.langevin_step`); a sampler of another kind leaves
    them ``None``.  The anatomy diagnostics and the landscape plots read them.
    """

    steps: int
    step_size: float | None = None
    noise: float | None = None

    def run(
        self,
        energy: nn.Module,
        z: Tensor,
        *,
        noise: Tensor | None = None,
        keep_graph: bool = False,
        record: tuple[int, ...] = (),
        steps: int | None = None,
    ) -> SampleResult:  # pragma: no cover - interface
        """Run the chain.

        ``noise``: the standard-normal draws to use, shape ``(K, *z.shape)``;
        fixing it makes the chain a deterministic function of z.
        ``keep_graph``: keep the autograd graph through every step, so that a
        loss on the result can be differentiated with respect to z (and the
        noise, and the energy's parameters).
        ``record``: steps whose states go into ``SampleResult.trajectory``.
        ``steps``: override K for this call.
        """
        raise NotImplementedError


@dataclass
class ObjectiveOutput:
    """The loss to minimise and the numbers worth logging.

    ``gap``: the energy gap mean U(data) - mean U(samples) of this batch, in
    the energy's own units (before any ``loss_scale``), for objectives that
    have one: the divergence guard's gap rule and the d_st diagnostic read it
    (and the trainer logs it as ``gap``).  ``None``: no gap.
    """

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)
    gap: float | None = None


class Objective(Component):
    """Turns (energy, positive batch, negative batch) into a loss.

    ``loss_scale``: the factor the loss carries on top of the gap (2/eps^2
    under the anatomy recipe), so that d_st = loss_scale * gap."""

    loss_scale: float = 1.0

    def __call__(self, energy: nn.Module, positive: Tensor, negative: Tensor) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError


class DataSource(Component):
    """A named dataset: ``load(split)`` returns a ``torch.utils.data.Dataset``
    whose items are tensors scaled to [-1, 1] (images ``(C, H, W)``, vectors
    ``(D,)``).  Splits are ``"train"`` and ``"test"``."""

    def load(self, split: str = "train") -> torch.utils.data.Dataset:  # pragma: no cover
        raise NotImplementedError

    def labels(self, split: str = "train") -> Tensor | None:
        """Class labels ``(N,)`` aligned with ``load(split)``, for sets that
        have them (the classifier metrics use them); None otherwise."""
        return None


class MaskGenerator(Component):
    """Draws inpainting masks: ``sample(n, height, width)`` returns a bool
    tensor ``(n, 1, height, width)``, True where a pixel is *missing* (to be
    filled in) and False where it is observed.  ``generator`` makes the draw
    reproducible (held-out evaluation sets use fixed masks)."""

    def sample(self, n: int, height: int, width: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def expected_coverage(self, height: int, width: int) -> float | None:
        """The expected fraction of missing pixels, when it is known in closed form."""
        return None


@dataclass(frozen=True)
class Kind:
    """One kind of component: its name, the interface its classes subclass,
    the pluggy hook that registers them, and the config section that names
    one (``None``: built on demand, e.g. a mask generator named by another
    component).  ``part``: built for the data's shape as a part of every run
    (checkpointed, set_progress each iteration); ``default``: the component a
    config without that section gets."""

    name: str
    base: type
    hook: str
    section: str | None
    default: str | None
    part: bool
    doc: str


KINDS: tuple[Kind, ...] = (
    Kind("dataset", DataSource, "ebmkit_datasets", "data", "mnist5k", False,
         "Data-source classes (named datasets scaled to [-1, 1])."),
    Kind("energy", Energy, "ebmkit_energies", "energy", "convnet", True, "Energy classes, U(x): (B, *shape) -> (B,)."),
    Kind("initializer", InitialDistribution, "ebmkit_initializers", "initializer", "uniform", True,
         "Initial-distribution classes (p0 of the chains)."),
    Kind("sampler", Sampler, "ebmkit_samplers", "sampler", "langevin", True, "Sampler classes (the K-step chains)."),
    Kind("objective", Objective, "ebmkit_objectives", "objective", "maximum-likelihood", True,
         "Objective classes (losses for the energy)."),
    Kind("mask", MaskGenerator, "ebmkit_masks", None, None, False,
         "Mask-generator classes (which pixels an inpainting task hides)."),
)
"""The kinds of component, declared once: the registry's hooks and type
checks, the hook specifications, the config's component sections, the parts
of an experiment and the CLI's ``--kind`` choices all come from this table."""

KIND = {k.name: k for k in KINDS}
"""The table by kind name."""

PARTS = tuple(k.name for k in KINDS if k.part)
"""The kinds built as the parts of every run, in build order."""
