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
    of tensors in [-1, 1]) for components that start from data.
    """

    shape: tuple[int, ...] | None = None
    dataset: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def require_shape(self, who: str) -> tuple[int, ...]:
        if self.shape is None:
            raise ValueError(f"{who} needs the data shape: pass shape=(C, H, W) (or (D,) for vectors)")
        return tuple(self.shape)


class Component:
    """Mixin giving every component a ``Params`` model and a builder."""

    Params: ClassVar[type[BaseModel]] = Params

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
    """M: runs K steps of a chain from z against an energy."""

    steps: int

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
    """The loss to minimise and the numbers worth logging."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Objective(Component):
    """Turns (energy, positive batch, negative batch) into a loss."""

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


KINDS = ("energy", "initializer", "sampler", "objective", "dataset", "mask")
"""The kinds of component the registry knows, in the order they are built."""
