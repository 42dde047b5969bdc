"""Chain initialisations from the anatomy paper: a persistent bank and data.

* ``persistent``: a bank of chain states.  Each batch starts from rows drawn
  without replacement and writes its finished chains back into those rows
  (:meth:`update`), so chains continue across iterations.  The bank is a
  buffer: it moves with the device, is saved in checkpoints and, in a
  data-parallel run, is sharded row-wise across processes.
* ``data``: the chains start at the current data batch plus gaussian noise.

``uniform`` and ``gaussian`` live in :mod:`ebmkit_plugins.simple_initializers`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor

import ebmkit
from ebmkit import BuildContext, InitialDistribution
from ebmkit.data import stack_items
from ebmkit.errors import DataError

DEFAULT_BANK = 10_000  # when neither `size` nor a dataset gives one (a checkpoint's bank then wins)


def _noise(kind: str, n: int, shape: tuple[int, ...], scale: float) -> Tensor:
    if kind == "gaussian":
        return scale * torch.randn(n, *shape)
    return scale * (2 * torch.rand(n, *shape) - 1)


class PersistentInit(InitialDistribution):
    """Persistent chains: a bank of states, drawn rows restart where they stopped."""

    sharded_buffers = ("bank",)

    class Params(ebmkit.Params):
        size: PositiveInt | None = Field(None, description="chains in the bank (default: one per training item)")
        start: Literal["uniform", "gaussian", "data"] = Field(
            "uniform", description="what fills the bank: uniform on [-scale, scale], N(0, scale^2), or the training data")
        scale: float = Field(1.0, gt=0.0, description="scale of the starting / rejuvenation noise")
        reinit: float = Field(0.0, ge=0.0, le=1.0, description="probability that a drawn chain restarts from fresh noise")

    def __init__(self, shape: tuple[int, ...], size: int = DEFAULT_BANK, start: str = "uniform", scale: float = 1.0,
                 reinit: float = 0.0, dataset: Any = None):
        super().__init__()
        self.shape, self.start, self.scale, self.reinit = tuple(shape), start, scale, reinit
        if start == "data" and dataset is not None:
            idx = torch.arange(size) % len(dataset)
            bank = stack_items(dataset, idx).float()
        else:  # `data` without a dataset (rebuilding from a checkpoint): the checkpoint's bank replaces this
            bank = _noise("gaussian" if start == "gaussian" else "uniform", size, self.shape, scale)
        self.register_buffer("bank", bank)
        self._rows: Tensor | None = None

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "PersistentInit":
        shape = context.require_shape("persistent")
        size = params.size or (len(context.dataset) if context.dataset is not None else DEFAULT_BANK)
        return cls(shape, size, params.start, params.scale, params.reinit, dataset=context.dataset)

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        m = len(self.bank)
        if m == 0:
            raise DataError("the persistent bank on this process is empty: use a bank with at least one row per process")
        # distinct rows when the bank is large enough, so the write-back never collides
        rows = torch.randperm(m, device=self.bank.device)[:n] if n <= m else torch.randint(m, (n,), device=self.bank.device)
        z = self.bank[rows].clone()
        if self.reinit > 0:
            fresh = torch.rand(n, device=z.device) < self.reinit
            if fresh.any():
                kind = "gaussian" if self.start == "gaussian" else "uniform"
                z[fresh] = _noise(kind, int(fresh.sum()), self.shape, self.scale).to(z)
        self._rows = rows
        return z

    def update(self, samples: Tensor) -> dict[str, float]:
        if self._rows is None or len(self._rows) != len(samples):
            return {}
        self.bank[self._rows] = samples.detach().to(self.bank.dtype)
        self._rows = None
        return {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A bank adopts the checkpoint's number of chains (e.g. rebuilt without the dataset that sized it).
        saved = state_dict.get(prefix + "bank")
        if saved is not None and saved.shape[1:] == self.bank.shape[1:] and len(saved) != len(self.bank):
            self.bank = torch.empty_like(saved, dtype=self.bank.dtype, device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class DataInit(InitialDistribution):
    """Chains start at data plus gaussian noise (the current batch)."""

    needs_data = True

    class Params(ebmkit.Params):
        noise: float = Field(0.03, ge=0.0, description="sd of the gaussian noise added to the data")

    def __init__(self, noise: float = 0.03, dataset: Any = None):
        super().__init__()
        self.noise, self.dataset = noise, dataset

    @classmethod
    def from_params(cls, params, context: BuildContext) -> "DataInit":
        return cls(params.noise, dataset=context.dataset)

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        if data is None:
            if self.dataset is None:
                raise DataError("initializer 'data' needs data: pass data=batch (or build it with the training set)")
            idx = torch.randint(len(self.dataset), (n,))
            data = stack_items(self.dataset, idx)
        data = data.to(self.device)
        if len(data) < n:  # fewer data than chains: reuse rows
            data = data[torch.randint(len(data), (n,), device=data.device)]
        z = data[:n].detach().clone().float()
        return z + self.noise * torch.randn_like(z) if self.noise > 0 else z


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"persistent": PersistentInit, "data": DataInit}
