"""An exponential moving average of the energy's weights (``[ema]``).

theta_ema <- decay * theta_ema + (1 - decay) * theta after every optimiser
step, starting from the weights after the first step (torch.optim.swa_utils'
EMA, buffers averaged too).  The average is
kept beside the trained weights, saved in checkpoints as ``energy_ema`` and,
with ``ema.sample = true``, used wherever the run draws samples outside
training: the sample grids, the ``[evaluation]`` section, and every
inference verb of a loaded run.  Training chains always use the live
weights: the short-run chain and the energy learn together (docs/quality.md
measures what the average does to samples).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """The EMA copy of one module."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema.decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged module, of the same class as the trained one."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.averaged.update_parameters(module)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the module's own names, plus the update count."""
        return {**self.module.state_dict(), "__ema_updates__": self.averaged.n_averaged.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        count = state.pop("__ema_updates__", None)
        self.module.load_state_dict(state)
        if count is not None:
            self.averaged.n_averaged.copy_(count)
