"""The learned short-run sampler as a generator: x = M_theta(z), z ~ p0.

Short-run MCMC that is never run to convergence is still a valid model of its
own: the K-step chain started from p0 is a generator (a flow, when the noise
is fixed).  :class:`ShortRunGenerator` wraps a trained energy, its sampler and
its initial distribution and offers the paper's four uses:

* :meth:`~ShortRunGenerator.generate` and :meth:`~ShortRunGenerator.transition`
  -- samples, and the chain at chosen steps from z to x_K (Figure 1);
* :meth:`~ShortRunGenerator.interpolate` -- M(z_rho) for
  z_rho = rho*z1 + sqrt(1 - rho^2)*z2 (Figure 6);
* :meth:`~ShortRunGenerator.reconstruct` -- argmin_z ||x - M(z)||^2 by
  gradient descent through all K steps, optionally with the per-step noise
  (Table 2, Figure 7), with gradient checkpointing through the chain;
* :meth:`~ShortRunGenerator.super_resolve` -- the chain from a low-resolution
  start (an initializer that reads data, e.g. the ``lowres`` plug-in; Figure 8).

The noise-free map M(z) is the sampler run with its noise set to zero
(``Sampler.run(noise=zeros)``), so any sampler that honours the ``noise``
argument works; the trained Langevin chain with fixed noise draws e is
M(z; e).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..conditional import batch_condition, bound
from ..config import quick_cap
from ..data import random_batch
from ..errors import ConfigError, DataError, validated
from ..interfaces import InitialDistribution, Params, SampleResult, Sampler
from ..sampling import frozen, seeded


class ReconstructParams(Params):
    """How :meth:`ShortRunGenerator.reconstruct` fits z (and the noise)."""

    iterations: PositiveInt = Field(200, description="optimiser steps on z (the paper: 200)")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="torch.optim optimiser for z")
    lr: PositiveFloat = Field(0.05, description="learning rate of the optimiser")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd only")
    infer_noise: bool = Field(False, description="also fit the K per-step noise draws of the Langevin chain")
    noise_prior: float = Field(1.0, ge=0.0, description="weight of the N(0, I) prior 0.5*||e||^2 on inferred noise; "
                               "0 lets the noise absorb any residual")
    checkpoint_every: int = Field(0, ge=0, description="gradient checkpointing: keep the graph of only this many "
                                  "steps at a time and recompute the rest in backward (0: off; 1: least memory)")
    record: tuple[NonNegativeInt, ...] = Field((), description="optimiser iterations at which M(z) goes into the path "
                                    "(0 = the start); the last iteration is always recorded")
    seed: int = Field(0, description="seeds the starting z drawn from p0")


@dataclass
class Reconstruction:
    """What :meth:`ShortRunGenerator.reconstruct` returns.

    ``x``: M(z*), the reconstructions; ``z``: the fitted chain starts;
    ``noise``: the fitted per-step noise ``(K, N, *shape)`` (None unless
    inferred); ``mse_per_pixel``: mean of (x - M(z*))^2 over everything
    ([-1, 1] scale); ``losses``: that MSE before each iteration and after the
    last (length iterations + 1); ``path``: ``{iteration: M(z_t)}``.
    """

    x: Tensor
    z: Tensor
    noise: Tensor | None
    mse_per_pixel: float
    losses: list[float]
    path: dict[int, Tensor] = field(default_factory=dict)
    seconds: float = 0.0


def progress_bar(items, enabled: bool | str, desc: str, **kwargs: Any):
    """``items`` wrapped in a tqdm bar on stderr when ``enabled`` (gone when done), else a bar that shows nothing."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, **kwargs)


def interpolation_weights(rhos: Sequence[float]) -> list[tuple[float, float]]:
    """(rho, sqrt(1 - rho^2)) for each rho in [0, 1]."""
    out = []
    for rho in rhos:
        rho = float(rho)
        if not 0.0 <= rho <= 1.0:
            raise ConfigError(f"interpolation rho must lie in [0, 1], got {rho}")
        out.append((rho, math.sqrt(1.0 - rho * rho)))
    return out


def evenly_spaced_steps(k: int, count: int) -> tuple[int, ...]:
    """``count`` steps from 0 to K inclusive, evenly spread (no repeats)."""
    if count < 2:
        return (k,)
    return tuple(sorted({round(i * k / (count - 1)) for i in range(count)}))


class ShortRunGenerator:
    """x = M_theta(z): the K-step chain of a trained energy as a generator.

    Build it from a checkpoint with :meth:`from_checkpoint`, or from the parts.
    The energy is put in eval mode (unless ``eval_mode=False``: the trainer's
    view of a model in training); its weights never change here.  Every chain
    it runs goes through :meth:`chain`, and every fresh sample through
    :meth:`draw`: the trainer's grids, ``ebmkit sample`` and :meth:`generate`
    are one path.  ``autocast``: a context factory for mixed precision
    (the trainer passes accelerate's).
    """

    def __init__(self, energy: nn.Module, sampler: Sampler, initializer: InitialDistribution, shape: tuple[int, ...], *,
                 dataset: Any = None, eval_mode: bool = True, autocast: Any = None) -> None:
        self.energy, self.sampler, self.initializer = (energy.eval() if eval_mode else energy), sampler, initializer
        self.shape, self.dataset = tuple(shape), dataset
        self.autocast = autocast or nullcontext
        self.experiment: Any = None  # the loaded Experiment, when built by from_checkpoint

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu", with_data: bool | None = None
                        ) -> "ShortRunGenerator":
        """Rebuild from a checkpoint or run folder (see :func:`ebmkit.experiment.load_trained`)."""
        from ..experiment import load_trained

        exp = load_trained(path, device=device, with_data=with_data)
        gen = cls(exp.energy, exp.sampler, exp.initializer, exp.shape, dataset=exp.dataset)
        gen.experiment = exp
        return gen

    # -- basics ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        try:
            return next(self.energy.parameters()).device
        except StopIteration:
            return self.initializer.device

    @property
    def steps(self) -> int:
        """K, the chain length the sampler was trained with."""
        return int(self.sampler.steps)

    def chain(self, z: Tensor, **run: Any) -> SampleResult:
        """The sampler's chain from ``z`` against the energy (keyword arguments
        as :meth:`~ebmkit.interfaces.Sampler.run`), bound to the condition the
        initializer drew last (conditional models), under ``autocast``."""
        with bound(self.energy, batch_condition(self.initializer)), self.autocast():
            return self.sampler.run(self.energy, z, **run)

    def draw(self, n: int, *, steps: int | None = None, data: Tensor | None = None) -> Tensor:
        """n fresh samples from the RNG's current state: z ~ p0 (for an
        initializer that reads data, ``data`` or a batch of the dataset picked
        at random), then the chain."""
        if self.initializer.needs_data and data is None:
            data = self.data_batch(n)
        z = self.initializer.sample(n, data=data).to(self.device)
        return self.chain(z, steps=steps).x.detach()

    def sample_z(self, n: int, *, seed: int | None = None, data: Tensor | None = None) -> Tensor:
        """n chain starts z ~ p0 (``data`` for initializers that start from data)."""
        if self.initializer.needs_data and data is None:
            data = self.data_batch(n, seed=0 if seed is None else seed)
        with seeded(seed, self.device):
            return self.initializer.sample(n, data=data).to(self.device)

    def data_batch(self, n: int, *, seed: int | None = None) -> Tensor:
        """n items of the dataset picked at random (under ``seed``, else torch's global RNG)."""
        if self.dataset is None:
            raise DataError(f"initializer '{type(self.initializer).__name__}' starts from data: pass data=... "
                            "(or build the generator with the dataset)")
        g = None if seed is None else torch.Generator().manual_seed(seed)
        return random_batch(self.dataset, n, generator=g, device=self.device)

    def zero_noise(self, z: Tensor, steps: int | None = None) -> Tensor:
        """Noise of zeros for every step, shape ``(K, *z.shape)``, without the memory (a broadcast view)."""
        k = self.steps if steps is None else steps
        return z.new_zeros((1, *z.shape)).expand(k, *z.shape)

    def draw_noise(self, z: Tensor, *, seed: int | None = None, steps: int | None = None) -> Tensor:
        """Standard-normal noise for every step, ``(K, *z.shape)``: hold it fixed to make the
        Langevin chain a deterministic function of z."""
        k = self.steps if steps is None else steps
        with seeded(seed, self.device):
            return torch.randn(k, *z.shape, device=z.device, dtype=z.dtype)

    def map(self, z: Tensor, noise: Tensor | None = None, *, keep_graph: bool = False, checkpoint_every: int = 0,
            steps: int | None = None) -> Tensor:
        """M(z; e): the chain from z with the noise draws e (None: the noise-free chain).

        ``keep_graph`` keeps the graph through all steps, so a loss on the
        result differentiates back to z and e; ``checkpoint_every`` > 0 keeps
        only that many steps' graph at a time and recomputes them during the
        backward pass (same gradient, memory of one segment); the result then
        supports ``.backward()`` (not ``torch.autograd.grad``) and z or the
        noise must require grad.
        """
        k = self.steps if steps is None else steps
        noise = self.zero_noise(z, k) if noise is None else noise
        if noise.shape[0] < k or tuple(noise.shape[1:]) != tuple(z.shape):
            raise ValueError(f"noise must have shape (K={k}, *{tuple(z.shape)}), got {tuple(noise.shape)}")
        if not keep_graph:
            return self.chain(z, noise=noise, steps=k).x
        if not checkpoint_every:
            return self.chain(z, noise=noise, keep_graph=True, steps=k).x
        x = z
        for start in range(0, k, checkpoint_every):
            segment = noise[start:min(k, start + checkpoint_every)]
            # Reentrant checkpointing: the non-reentrant kind recomputes nested
            # double-backward graphs over and over (measured here: a 20-step
            # segment took 10x the memory and 14x the time of no checkpointing).
            x = checkpoint(self._segment, x, segment, use_reentrant=True)
        return x

    def _segment(self, x: Tensor, noise: Tensor) -> Tensor:
        # The reentrant checkpoint runs its forward under no_grad; a chain step needs grad_x U.
        with torch.enable_grad():
            return self.chain(x, noise=noise, keep_graph=True, steps=noise.shape[0]).x

    # -- 1. synthesis ----------------------------------------------------------------------
    def generate(self, n: int, *, seed: int | None = 0, batch_size: int = 256, steps: int | None = None,
                 data: Tensor | None = None, progress: bool = False) -> Tensor:
        """n samples x = M(z) of the trained chain (with its noise), z ~ p0.
        ``progress``: a progress bar over the batches (stderr)."""
        if n < 1 or batch_size < 1:
            raise ConfigError(f"n and batch_size must be positive, got {n} and {batch_size}")
        if self.initializer.needs_data and data is None:
            data = self.data_batch(n, seed=0 if seed is None else seed)
        parts = []
        with seeded(seed, self.device):
            for start in progress_bar(range(0, n, batch_size), progress, "generate", unit="batch"):
                m = min(batch_size, n - start)
                chunk = None if data is None else data[start:start + m].to(self.device)
                parts.append(self.draw(m, steps=steps, data=chunk))
        return torch.cat(parts)

    def transition(self, n: int, *, steps: Sequence[int] | None = None, seed: int | None = 0,
                   data: Tensor | None = None) -> tuple[tuple[int, ...], Tensor]:
        """The chain at chosen steps (default: 8 from 0 to K) for n chains.

        Returns the steps and the states ``(n, len(steps), *shape)``: row i is
        chain i from z (step 0) to x_K (the paper's Figure 1).
        """
        k = self.steps
        record = tuple(sorted(set(steps))) if steps is not None else evenly_spaced_steps(k, 8)
        if not record or min(record) < 0 or max(record) > k:
            raise ConfigError(f"transition steps must lie in [0, K={k}], got {list(steps or [])}")
        with seeded(seed, self.device):
            z = self.sample_z(n, data=data)
            out = self.chain(z, record=record)
        return record, torch.stack([out.trajectory[s] for s in record], dim=1)

    # -- 2. interpolation -----------------------------------------------------------------
    def interpolate(self, z1: Tensor, z2: Tensor, rhos: Sequence[float], *, noise: Tensor | None = None) -> Tensor:
        """M(z_rho) for z_rho = rho*z1 + sqrt(1 - rho^2)*z2, for each rho
        (about the initializer's centre: :meth:`InitialDistribution.blend`).

        ``noise`` ``(K, *z1.shape)``: the Langevin noise held fixed along the
        path (None: the noise-free chain).  Returns ``(len(rhos), *z1.shape)``.
        Each rho runs as its own batch of the same size as z1, so rho = 1 and
        rho = 0 give exactly M(z1) and M(z2) (a different batch size could
        change the last bits of the convolutions).
        """
        if z1.shape != z2.shape:
            raise ValueError(f"z1 and z2 differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
        rows = [self.map(self.initializer.blend(z1, z2, rho, s), noise) for rho, s in interpolation_weights(rhos)]
        return torch.stack(rows).detach()

    # -- 3. reconstruction ----------------------------------------------------------------
    def reconstruct(self, x: Tensor, *, progress: bool | str = False, **params: Any) -> Reconstruction:
        """Fit z (and optionally the per-step noise) so that M(z) matches x.

        Minimises sum_i ||x_i - M(z_i; e_i)||^2 (+ noise_prior * 0.5*||e||^2)
        by gradient descent through all K steps; keyword arguments are
        :class:`ReconstructParams` (``iterations=200``, ``optimizer="adam"``,
        ``lr``, ``infer_noise``, ``checkpoint_every``, ``record``, ``seed``).
        z starts from p0; an initializer that reads data (``lowres``) starts
        it from x itself, as in training.  ``progress``: a progress bar over
        the iterations (a string labels it).
        """
        p = validated(ReconstructParams, params, heading="bad reconstruct parameters", prefix="reconstruct")
        cap = quick_cap()  # documentation examples under test run a few steps
        if cap is not None and p.iterations > cap:
            p = p.model_copy(update={"iterations": cap})
        x = self._check_images(x).to(self.device)
        k = self.steps
        z = self.sample_z(x.shape[0], seed=p.seed, data=x if self.initializer.needs_data else None)
        z = z.detach().clone().requires_grad_(True)
        variables = [z]
        noise = None
        if p.infer_noise:
            noise = torch.zeros(k, *x.shape, device=self.device, requires_grad=True)
            variables.append(noise)
        opt = (torch.optim.Adam(variables, lr=p.lr) if p.optimizer == "adam"
               else torch.optim.SGD(variables, lr=p.lr, momentum=p.momentum))
        record = set(p.record) | {p.iterations}
        path: dict[int, Tensor] = {}
        losses: list[float] = []
        start = time.perf_counter()
        with frozen(self.energy):
            bar = progress_bar(range(p.iterations), progress, progress if isinstance(progress, str) else "reconstruct",
                               unit="it")
            for it in bar:
                x_hat = self.map(z, noise, keep_graph=True, checkpoint_every=p.checkpoint_every)
                sq = (x_hat - x).pow(2)
                losses.append(sq.mean().item())
                if it % 10 == 0:
                    bar.set_postfix({"mse": f"{losses[-1]:.4g}"}, refresh=False)
                if it in record:
                    path[it] = x_hat.detach().clone()
                loss = sq.flatten(1).sum(1).sum()
                if noise is not None and p.noise_prior > 0:
                    loss = loss + p.noise_prior * 0.5 * noise.pow(2).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            x_hat = self.map(z.detach(), None if noise is None else noise.detach())
        mse = (x_hat - x).pow(2).mean().item()
        losses.append(mse)
        path[p.iterations] = x_hat
        return Reconstruction(x=x_hat, z=z.detach(), noise=None if noise is None else noise.detach(),
                              mse_per_pixel=mse, losses=losses, path=dict(sorted(path.items())),
                              seconds=time.perf_counter() - start)

    def _check_images(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DataError(f"images must have shape (N, {', '.join(map(str, self.shape))}) like the training data, got {got}")
        return x.float()

    # -- 4. super-resolution --------------------------------------------------------------
    def to_full_size(self, images: Tensor) -> Tensor:
        """Low-resolution images (a side that divides the model's) brought to full
        size by pixel repetition; full-size images pass through."""
        if images.dim() != 4 or images.shape[1] != self.shape[0]:
            raise DataError(f"images must have shape (N, {self.shape[0]}, h, w), got {tuple(images.shape)}")
        size = tuple(self.shape[1:])
        h, w = images.shape[-2:]
        if (h, w) == size:
            return images.float()
        if size[0] % h or size[1] % w:
            raise DataError(f"a {h}x{w} image does not scale evenly to the model's {size[0]}x{size[1]}")
        return F.interpolate(images.float(), size=size, mode="nearest")

    def super_resolve(self, images: Tensor, *, seeds: Sequence[int] = (0, 1, 2), steps: int | None = None) -> Tensor:
        """Upsample each image once per seed: the trained chain from p0(. | image).

        ``images`` are full-size (the initializer makes them low-resolution, as
        in training) or already low-resolution.  Returns ``(len(seeds), N, *shape)``.
        """
        if not self.initializer.needs_data:
            raise ConfigError(f"super-resolution needs an initializer that starts from the low-resolution image "
                              f"(e.g. 'lowres'); this model's is '{type(self.initializer).__name__}'")
        data = self.to_full_size(images).to(self.device)
        outs = []
        for seed in seeds:
            with seeded(seed, self.device):
                z = self.initializer.sample(data.shape[0], data=data)
                outs.append(self.chain(z, steps=steps).x.detach())
        return torch.stack(outs)

    def low_resolution_start(self, images: Tensor) -> Tensor:
        """The noise-free chain start for ``images`` (what p0 sees), for figures."""
        data = self.to_full_size(images).to(self.device)
        show = getattr(self.initializer, "upsampled_low_resolution", None)
        if callable(show):
            return show(data)
        with seeded(0, self.device):
            return self.initializer.sample(data.shape[0], data=data)

    # -- 5. inpainting -------------------------------------------------------------------
    def inpaint(self, images: Tensor, missing: Tensor, *, seeds: Sequence[int] = (0, 1, 2), steps: int | None = None) -> Tensor:
        """Fill in the missing pixels once per seed with a conditional model
        (``conditional-convnet`` + ``masked`` or ``conditional-vae``).

        ``missing`` is bool ``(N, 1, H, W)`` (or ``(1, 1, H, W)`` for all), True
        where a pixel is hidden.  Returns ``(len(seeds), N, *shape)``; observed
        pixels come back exactly as given."""
        from .inpainting import ebm_fill

        data = self._check_images(images).to(self.device)
        missing = torch.as_tensor(missing, device=self.device).bool()
        if missing.dim() == 4 and missing.shape[0] == 1 and data.shape[0] > 1:
            missing = missing.expand(data.shape[0], -1, -1, -1)
        outs = []
        for seed in seeds:
            with seeded(seed, self.device):
                outs.append(ebm_fill(self.energy, self.sampler, self.initializer, data, missing, samples=1, steps=steps)[0])
        return torch.stack(outs)


__all__ = ["ShortRunGenerator", "Reconstruction", "ReconstructParams", "interpolation_weights", "evenly_spaced_steps",
           "seeded"]
