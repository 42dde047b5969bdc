"""The methods the comparison trains under one budget: the short-run EBM (ebmkit's
own Trainer) and the VAE and DCGAN baselines.

Every method answers the same three calls -- ``train_step(x)``,
``sample(n)``, ``reconstruct(x)`` -- and :func:`train` runs each on exactly the
same stream of batches (ebmkit's seeded ``batch_stream``) until the budget is
spent.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor

from ebmkit.config import ExperimentConfig
from ebmkit.data import TensorImages, batch_stream
from ebmkit.errors import DivergenceError
from ebmkit.experiment import build_experiment
from ebmkit.training.loop import Trainer

from .baselines import DCGAN, VAE
from .harness import Budget
from .reconstruction import ebm_reconstruct


class EBMMethod:
    """Algorithm 1 through :class:`ebmkit.training.loop.Trainer` (its ``step``); samples
    with ``Trainer.sample`` (the K-step short-run chain from p0)."""

    name = "ebm"
    label = "short-run EBM"

    def __init__(self, train: Tensor, config: dict[str, Any], *, iterations_hint: int, recon: dict[str, Any]) -> None:
        cfg = ExperimentConfig.model_validate(config)
        cfg.training.iterations = max(1, iterations_hint)  # the schedule's horizon; the loop below stops on the budget
        cfg.check_components()
        self.config = cfg
        self.experiment = build_experiment(cfg, dataset=TensorImages(train))
        self.trainer = Trainer(self.experiment)
        self.recon = recon
        self._snapshot: dict[str, Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    def parameters(self):
        return self.experiment.energy.parameters()

    def train_step(self, x: Tensor) -> dict[str, float]:
        if self.trainer.iteration % 25 == 0:  # a known-good copy to fall back on if training diverges
            self._snapshot = copy.deepcopy(self.trainer.unwrapped_energy.state_dict())
        return self.trainer.iterate(x)

    def restore_snapshot(self) -> int:
        if self._snapshot is not None:
            self.trainer.unwrapped_energy.load_state_dict(self._snapshot)
        return self.trainer.iteration // 25 * 25  # the iteration the snapshot was taken at

    def sample(self, n: int) -> Tensor:
        return self.trainer.sample(n)

    def reconstruct(self, x: Tensor) -> Tensor:
        exp = self.experiment
        energy = self.trainer.unwrapped_energy
        return ebm_reconstruct(energy, exp.sampler, exp.initializer, exp.shape, x, **self.recon)


class BaselineMethod:
    """A VAE or DCGAN from :mod:`benchmarks.baselines`."""

    def __init__(self, name: str, shape: tuple[int, ...], params: dict[str, Any], device: torch.device) -> None:
        cls = {"vae": VAE, "dcgan": DCGAN}[name]
        self.name, self.label = name, {"vae": "VAE", "dcgan": "DCGAN"}[name]
        self.model = cls(tuple(shape), **params).to(device)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def parameters(self):
        # What generates samples: the decoder / generator (the encoder / discriminator are training aids).
        return (self.model.decoder if self.name == "vae" else self.model.generator).parameters()

    def train_step(self, x: Tensor) -> dict[str, float]:
        return self.model.train_step(x)

    def sample(self, n: int) -> Tensor:
        return self.model.sample(n)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.model.reconstruct(x)


def train(method: Any, data: Tensor, budget: Budget, *, batch_size: int, seed: int, progress: bool = False,
          desc: str = "train") -> dict[str, Any]:
    """Train ``method`` until ``budget`` is spent, on ebmkit's seeded batch stream.

    Returns iterations, seconds, iterations per second, the last logs and,
    when the EBM diverged, where (the model is then rolled back to its last
    good snapshot, which is what gets evaluated).
    """
    stream = batch_stream(TensorImages(data), batch_size, seed=seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=budget.total, desc=desc, unit="it", dynamic_ncols=True)
    it, seconds, logs, diverged = 0, 0.0, {}, None
    start = time.perf_counter()
    while not budget.spent(it, seconds):
        x = next(stream).to(method.device)
        try:
            logs = method.train_step(x)
        except DivergenceError as exc:
            rolled_back_to = method.restore_snapshot() if hasattr(method, "restore_snapshot") else None
            diverged = {"iteration": it + 1, "message": str(exc).splitlines()[0], "evaluated_at": rolled_back_to}
            it += 1
            seconds = time.perf_counter() - start
            break
        it += 1
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.update(1)
            if it % 10 == 0:
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(logs.items())[:4] if isinstance(v, float)}, refresh=False)
    if bar is not None:
        bar.close()
    return {"iterations": it, "train_seconds": round(seconds, 3), "train_it_per_s": it / seconds if seconds else None,
            "last_logs": logs, "diverged": diverged}


def timed_samples(method: Any, n: int, batch: int) -> tuple[Tensor, float]:
    """``n`` samples in batches, and the samples per second it took."""
    parts, start = [], time.perf_counter()
    done = 0
    while done < n:
        k = min(batch, n - done)
        parts.append(method.sample(k).detach().float().cpu())
        done += k
    seconds = time.perf_counter() - start
    return torch.cat(parts), n / seconds if seconds else float("nan")
