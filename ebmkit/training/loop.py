"""The training loop: Algorithm 1 of the short-run paper, on accelerate.

One iteration (:meth:`Trainer.step`)::

    z    = initializer.sample(B, data=x)          # chain starts, z ~ p0
    neg  = sampler.run(energy, z).x               # K steps of short-run MCMC
    out  = objective(energy, x, neg)              # mean U(x) - mean U(neg)
    optimizer.zero_grad(); backward(out.loss); optimizer.step()
    initializer.update(neg)                       # e.g. a persistent bank

accelerate owns the device, mixed precision and multiple processes: launched
on N processes (``ebmkit train --num-processes N``, ``accelerate launch``,
``torchrun``) the run is data-parallel -- see :mod:`ebmkit.distributed`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .. import distributed, performance, run_state, tracking
from ..chain_acceleration import ChainSettings, chain_settings
from ..checkpoint import Checkpoint, atomic_write, find_checkpoint, list_checkpoints, recover_interrupted
from ..conditional import batch_condition, bound
from ..config import ExperimentConfig, OptimizerConfig
from ..data import batch_stream, check_batch_size, random_batch
from ..errors import ConfigError, DivergenceError, EbmkitError
from ..experiment import Experiment
from ..generation.generator import ShortRunGenerator
from ..images import save_grid
from ..interfaces import PARTS
from ..interrupts import Interrupted, StopRequest, signal_name
from ..run_folder import RunFolderError, check_target, claim, quarantine_note, resumable_checkpoint
from ..sampling import seeded
from .callbacks import Callback, MetricsLog, writing
from .divergence import DivergenceGuard, Rollback
from .ema import WeightAverage
from .evaluation import QualityEvaluation
from .schedule import LearningRate

log = logging.getLogger("ebmkit")

_BAR_QUALITY = {"eval_recognisable": "rec", "eval_coverage": "cov", "eval_fd": "FD", "eval_fid": "FID"}
"""[evaluation] numbers shown on the progress bar, and their short names."""


def make_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_accelerator(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> Accelerator:
    t = cfg.training
    if t.device == "cuda":  # accelerate would quietly fall back to the CPU
        from ..devices import check_device

        check_device("cuda", what="training.device")
    use_cpu = t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available())
    trackers = tracking.accelerator_kwargs(cfg.logging, run_dir or cfg.output.dir)  # [logging] trackers
    return Accelerator(cpu=use_cpu, mixed_precision=t.mixed_precision, **trackers)


class Trainer:
    """Trains an :class:`~ebmkit.experiment.Experiment` with Algorithm 1.

    Code that drives the loop itself (a benchmark under a time budget) calls
    :meth:`iterate` on the batches of :meth:`batches`; callbacks read the
    public members (``iteration``, ``run_dir``, ``is_main``, ``config``,
    ``experiment``, the parts, :meth:`sample`, :meth:`data_batch`,
    :attr:`unwrapped_energy`, :attr:`device`).
    """

    def __init__(self, experiment: Experiment, *, accelerator: Accelerator | None = None, run_dir: str | Path | None = None,
                 callbacks: list[Callback] | None = None):
        self.experiment = experiment
        self.config = cfg = experiment.config
        self.chain_settings = ChainSettings.from_config(cfg.performance)
        self.run_dir = Path(run_dir or cfg.output.dir)
        self.accelerator = accelerator or make_accelerator(cfg, self.run_dir)
        self.threads = performance.apply_threads(cfg.performance.threads, energy=experiment.energy, shape=experiment.shape,
                                                 batch=cfg.training.batch_size, device=self.accelerator.device)
        performance.apply_cudnn_benchmark(cfg.performance.cudnn_benchmark, self.accelerator.device)
        self.sampler = experiment.sampler
        self.objective = experiment.objective
        if not any(p.requires_grad for p in experiment.energy.parameters()):
            raise ConfigError(
                f"energy '{cfg.energy.name}' has no trainable parameters: training learns the energy's weights, so it "
                "needs at least one torch.nn.Parameter (a plug-in energy registers its weights as nn.Parameter, "
                "not as plain tensors)")
        self.initializer = experiment.initializer.to(self.accelerator.device)
        distributed.shard_module(self.initializer, self.accelerator)  # each process keeps its share of a bank
        lr = distributed.scaled_lr(cfg.optimizer.lr * cfg.optimizer.lr_multiplier(), cfg.optimizer.scale_lr,
                                   self.accelerator.num_processes)
        channels_last = performance.wants_channels_last(cfg.performance.channels_last, experiment.shape, self.accelerator.device,
                                                        experiment.energy)
        energy = performance.prepare_energy(experiment.energy.to(self.accelerator.device), channels_last=channels_last,
                                            compile=cfg.performance.compile)
        optimizer = make_optimizer(cfg.optimizer.model_copy(update={"lr": lr}), energy.parameters())
        self.energy, self.optimizer = self.accelerator.prepare(energy, optimizer)
        # [ema]: the averaged weights, for samples drawn outside training (docs/quality.md)
        self.ema = WeightAverage(self.unwrapped_energy, cfg.ema.decay) if cfg.ema.decay else None
        distributed.seed_processes(cfg.training.seed, self.accelerator)  # own chains per process, same weights
        # Divergence checks (ebmkit.training.divergence); under fp16 loss
        # scaling an overflowing gradient is routine, so it is not checked.
        self.divergence = DivergenceGuard(cfg.training.divergence, scaled_gradients=self.accelerator.scaler is not None)
        # The one writer of the learning rate: configured x the guard's factor x the schedule.
        self.learning_rate = LearningRate(self.optimizer, cfg.optimizer.effective_schedule(), cfg.training.iterations)
        self._checkpoint_iteration: int | None = None  # iteration of the last checkpoint saved or loaded
        # [evaluation] first, so that the callbacks after it (tracking) see its numbers in the logs
        self.callbacks = ([QualityEvaluation(cfg.evaluation)] if cfg.evaluation.every else []) + list(callbacks or [])
        if cfg.logging.trackers and not any(isinstance(cb, tracking.Tracking) for cb in self.callbacks):
            self.callbacks.append(tracking.Tracking(cfg.logging))
        self.iteration = 0
        self.is_main = self.accelerator.is_main_process
        self.metrics = MetricsLog(self.run_dir / "metrics.csv", enabled=self.is_main)

    # -- public view of the run -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped_energy(self) -> torch.nn.Module:
        """The energy itself (without a data-parallel or compile wrapper), for chains and plots."""
        return self.accelerator.unwrap_model(self.energy)

    def part(self, kind: str) -> Any:
        """The run's component of ``kind`` (one of :data:`ebmkit.interfaces.PARTS`); the energy unwrapped."""
        return self.unwrapped_energy if kind == "energy" else getattr(self, kind)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def base_lrs(self) -> list[float]:
        """The learning rates the schedule multiplies now: configured x the divergence guard's factor."""
        return self.learning_rate.bases(self.divergence.lr_scale)

    # -- Algorithm 1 ---------------------------------------------------------------
    def step(self, x: torch.Tensor) -> dict[str, float]:
        """One learning iteration on the positive batch ``x`` (the counter stays; see :meth:`iterate`)."""
        acc = self.accelerator
        total = self.config.training.iterations
        logs: dict[str, float] = {"lr": self.learning_rate.apply(self.iteration, self.divergence.lr_scale)}
        for kind in PARTS:  # components that anneal a value with training time
            logs.update(self.part(kind).set_progress(self.iteration, total))
        z = self.initializer.sample(x.shape[0], data=x)
        condition = batch_condition(self.initializer)  # conditional tasks: y drawn with z (docs/conditional.md)
        if condition is not None:
            x = condition.target  # the positives are the targets (paired data packs the condition beside them)
        with bound(acc.unwrap_model(self.energy), condition):  # energy(x) means U(x | y) until the loss is built
            with acc.autocast(), chain_settings(self.chain_settings):  # the GPU chain's options ([performance])
                chain = self.sampler.run(acc.unwrap_model(self.energy), z)
            negative = chain.x.detach()
            with acc.autocast():
                out = self.objective(self.energy, x, negative)
        self._check_forward_together(out, chain)  # before the weights move
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(out.loss)
        grad_norm = acc.clip_grad_norm_(self.energy.parameters(), self.config.optimizer.grad_clip or math.inf)
        self.divergence.check_gradients(self.iteration + 1, grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.unwrapped_energy)
        logs.update({"loss": out.loss.item(), **out.logs, "grad_norm": float(grad_norm)})
        if out.gap is not None:
            logs.setdefault("gap", float(out.gap))  # the declared gap is logged even if the objective did not
        logs["chain_grad_norm"] = float(chain.grad_norm.mean()) if chain.grad_norm.numel() else 0.0
        if chain.acceptance is not None:
            logs["acceptance"] = chain.acceptance
        logs.update(chain.stats)
        logs.update(self.initializer.update(negative))
        logs = distributed.mean_over_processes(logs, acc)  # logged numbers describe the global batch
        logs["global_batch"] = x.shape[0] * acc.num_processes
        self._check_finite(logs)
        return logs

    def iterate(self, x: torch.Tensor) -> dict[str, float]:
        """:meth:`step` on ``x``, then the iteration counter moves on: one
        iteration of :meth:`fit` without its logging, callbacks and checkpoints.
        A :class:`~ebmkit.errors.DivergenceError` leaves the counter where it was."""
        logs = self.step(x)
        self.iteration += 1
        return logs

    def _check_forward_together(self, out, chain) -> None:
        """The divergence guard's forward check, decided by all processes at once."""
        problem: DivergenceError | None = None
        try:
            self.divergence.check_forward(self.iteration + 1, out, chain)
        except DivergenceError as exc:
            problem = exc
        if distributed.any_process(problem is not None, self.accelerator):
            raise problem or DivergenceError(
                f"training diverged at iteration {self.iteration + 1} on another process", iteration=self.iteration + 1,
                reason="diverged on another process")

    def _check_finite(self, logs: dict[str, float]) -> None:
        self.divergence.check_logs(self.iteration + 1, logs)

    # -- the loop ----------------------------------------------------------------------
    def fit(self, *, resume: bool | str | Path = False, overwrite: bool = False) -> dict[str, float]:
        """Train until ``training.iterations``; returns the last logged numbers.

        Nothing is written before every check has passed: the batch size
        against the data, the run folder (no live run may hold it, and one
        that holds a run is used only with ``resume`` -- continue it -- or
        ``overwrite`` -- move it aside to ``RUN.old-<date>-<time>``), and with
        ``resume`` a valid checkpoint that fits this run.  Then the main
        process locks the folder (``RUN/.lock``, :mod:`ebmkit.run_folder`)
        until the run ends.  SIGINT / SIGTERM end the run after the current
        iteration with a checkpoint of it (:class:`~ebmkit.interrupts.Interrupted`)."""
        t = self.config.training
        check_batch_size(len(self.experiment.dataset), t.batch_size, self.accelerator.num_processes)
        self._on_main_together(self._check_folder, resume, overwrite)
        lock = self._on_main_together(claim, self.run_dir, resume=bool(resume), overwrite=overwrite)
        try:
            with StopRequest(announce=self.is_main) as stop:
                return self._fit(resume, stop)
        finally:
            if lock is not None:
                lock.release()

    def _on_main_together(self, fn, *args, **kwargs):
        """``fn`` on the main process; if it fails, every process stops (none is left waiting at a collective)."""
        result, problem = None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except EbmkitError as exc:
                problem = exc
        if distributed.any_process(problem is not None, self.accelerator):
            raise problem or RunFolderError("stopped: the main process refused to start the run (see its message)")
        return result

    def _check_folder(self, resume: bool | str | Path, overwrite: bool) -> None:
        """Read-only checks of the run folder and of the checkpoint to resume from (before any write)."""
        with warnings.catch_warnings(record=True) as seen:  # resume() repeats them; show them once
            warnings.simplefilter("always")
            try:
                ckpt = check_target(self.run_dir, resume=bool(resume), overwrite=overwrite, checkpoint=resume is True)
                if resume and resume is not True:
                    ckpt = find_checkpoint(resume)
                if ckpt is not None:
                    run_state.check_compatible(ckpt, self.config, self.experiment.shape)
            except EbmkitError:
                for w in seen:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                raise

    def _fit(self, resume: bool | str | Path, stop: StopRequest) -> dict[str, float]:
        cfg, t = self.config, self.config.training
        if resume:
            self.resume(None if resume is True else resume)
            distributed.check_same_iteration(self.iteration, self.run_dir, self.accelerator)
        if self.is_main:
            with writing(self.run_dir / "config.json"):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(self.run_dir / "config.json", cfg.model_dump_json(indent=1).encode())
            self.metrics.truncate_after(self.iteration)
            tqdm.write("ebmkit: " + distributed.describe(self.accelerator, t.batch_size, self.base_lrs[0], cfg.optimizer.lr,
                                                       cfg.optimizer.scale_lr)
                       + (f"; {self.threads} CPU thread{'s' if self.threads > 1 else ''}"
                          + (" (auto)" if cfg.performance.threads == "auto" else "")
                          if self.accelerator.device.type == "cpu" else ""), file=sys.stderr)
        batches = self.batches()
        bar = tqdm(total=t.iterations, initial=self.iteration, disable=not (t.progress and self.is_main), desc="train",
                   dynamic_ncols=True)
        last: dict[str, float] = {}
        quality: dict[str, float] = {}  # the latest [evaluation] numbers, kept on the bar between evaluations
        start_time = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_start(self)
        if self.divergence.wants_first_checkpoint(self.iteration, self.checkpoint_dir):
            self.save()  # rollbacks need a checkpoint to roll back to
        while self.iteration < t.iterations:
            x = next(batches).to(self.accelerator.device, non_blocking=True)
            try:
                logs = self.iterate(x)
            except DivergenceError as exc:
                self._roll_back(exc)  # raises, unless the guard chose a good checkpoint to go back to
                batches, bar.n = self.batches(), self.iteration
                continue
            last = {"iteration": self.iteration, "time": round(time.perf_counter() - start_time, 3), **logs}
            for cb in self.callbacks:  # a callback may add numbers to the row ([evaluation] does)
                cb.on_step_end(self, last)
            self.metrics.append(last)
            quality.update({k: v for k, v in last.items() if k in _BAR_QUALITY})
            if self.iteration % t.log_every == 0 or self.iteration == t.iterations:
                bar.set_postfix(
                    ({"E+": f"{logs['energy_data']:.3g}", "E-": f"{logs['energy_samples']:.3g}",
                      "gap": f"{logs['gap']:.3g}", "|g|": f"{logs['grad_norm']:.3g}"} if "gap" in logs else
                     {"loss": f"{logs['loss']:.3g}"}) | {_BAR_QUALITY[k]: f"{v:.3g}" for k, v in quality.items()},
                    refresh=False,
                )
            bar.update(1)
            if t.sample_every and self.iteration % t.sample_every == 0:
                self.write_samples(f"iter-{self.iteration:08d}.png")
            if t.checkpoint_every and self.iteration % t.checkpoint_every == 0:
                self.save()
            if distributed.any_process(stop.requested, self.accelerator):  # SIGINT / SIGTERM: stop here, saved
                bar.close()
                self._stop_on_signal(stop.signum)
        bar.close()
        if self._checkpoint_iteration != self.iteration:
            self.save()
        self.write_samples("final.png")
        for cb in self.callbacks:
            cb.on_train_end(self)
        return last

    def _stop_on_signal(self, signum: int | None) -> None:
        """Checkpoint the iteration reached and end the run with :class:`Interrupted`."""
        import signal

        if self._checkpoint_iteration != self.iteration:
            self.save()
        signum = signum or signal.SIGTERM  # a process told by another one that a signal arrived there
        path = self.checkpoint_dir / f"iter-{self.iteration:08d}"
        raise Interrupted(f"stopped by {signal_name(signum)} after iteration {self.iteration}; checkpoint {path} written.",
                          signum=signum, iteration=self.iteration, checkpoint=path)

    def _roll_back(self, err: DivergenceError) -> None:
        """The guard decides (a checkpoint and a learning-rate factor, or it
        raises); the loop acts: reload, lower the rate, forget the rows past it."""
        rollback: Rollback = self.divergence.decide(err, self.checkpoint_dir, iteration=self.iteration,
                                                    is_main=self.is_main, barrier=self.accelerator.wait_for_everyone,
                                                    log_event=self._log_event)
        self.resume(rollback.checkpoint.path)
        self.divergence.accept(rollback)  # after the reload, which restored the guard's state of that checkpoint
        if self.is_main:
            self.metrics.truncate_after(self.iteration)
        self._log_event(rollback.event(lr=self.base_lrs[0]))
        warnings.warn(rollback.warning(lr=self.base_lrs[0]), RuntimeWarning, stacklevel=2)

    def _log_event(self, event: dict[str, Any]) -> None:
        """One line of ``events.jsonl`` (main process)."""
        if not self.is_main:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "events.jsonl", "a") as f:
                f.write(json.dumps(event) + "\n")
        except OSError:  # the message still reaches the user through the warning / error
            pass

    def batches(self):
        """The batch stream from the current iteration on (a pure function of seed and iteration)."""
        t = self.config.training
        return batch_stream(
            self.experiment.dataset, t.batch_size, seed=t.seed, start=self.iteration, num_workers=t.num_workers,
            rank=self.accelerator.process_index, world=self.accelerator.num_processes, name=self.config.data.name,
            shape=self.experiment.shape,
        )

    # -- samples -------------------------------------------------------------------------
    @property
    def sampling_energy(self) -> torch.nn.Module:
        """The energy samples are drawn with outside training: the EMA weights
        when ``[ema]`` is on with ``sample = true``, else the live ones."""
        if self.ema is not None and self.config.ema.sample:
            return self.ema.module
        return self.unwrapped_energy

    @property
    def generator(self) -> ShortRunGenerator:
        """The model as it stands, as a generator: the one inference path
        (modes untouched, under accelerate's autocast; the EMA weights where
        the run samples with them)."""
        return ShortRunGenerator(self.sampling_energy, self.sampler, self.initializer, self.experiment.shape,
                                 dataset=self.experiment.dataset, eval_mode=False, autocast=self.accelerator.autocast)

    def sample(self, n: int) -> torch.Tensor:
        """n fresh short-run samples from the current model."""
        with chain_settings(self.chain_settings):  # the GPU chain's options ([performance])
            return self.generator.draw(n)

    def data_batch(self, n: int) -> torch.Tensor:
        """n training items drawn at random (torch's global RNG), on the run's device."""
        return random_batch(self.experiment.dataset, n, device=self.device)

    def write_samples(self, name: str) -> Path | None:
        """A grid from the same chain starts every time (a fixed seed, on a
        forked RNG so that the training stream is unaffected).  The initializer
        draws in eval mode, as a loaded checkpoint does: a grid is an
        observation, and a train-mode draw would move a VAE proposal's
        batch-norm statistics (on the main process only)."""
        if not self.is_main or len(self.experiment.shape) != 3:
            return None
        was_training = self.initializer.training
        self.initializer.eval()
        try:
            with seeded(self.config.training.seed + 7, self.accelerator.device):
                samples = self.sample(self.config.output.grid_size)
        finally:
            self.initializer.train(was_training)
        with writing(self.run_dir / "samples" / name):
            path = save_grid(samples, self.run_dir / "samples" / name, scale=self.config.output.grid_scale or None)
        for cb in self.callbacks:
            cb.on_samples(self, samples, path)
        return path

    # -- checkpoints -------------------------------------------------------------------
    def _parts(self) -> run_state.RunParts:
        return run_state.RunParts(self.config, self.experiment.shape, self.unwrapped_energy, self.initializer, self.sampler,
                                  self.objective, self.optimizer, ema=self.ema)

    def save_copy(self, directory: Path) -> Path:
        """A checkpoint of the run as it stands into ``directory`` (keeping
        only that one), outside the run's own checkpoints: ``RUN/best/``.
        Single-process runs (a data-parallel run's bank is spread over processes)."""
        return run_state.save(directory, self.iteration, self._parts(), initializer_state=self.initializer.state_dict(),
                              extra={"divergence": self.divergence.state_dict()}, keep=1)

    def save(self) -> Path | None:
        """Write a checkpoint of everything needed to resume (main process only)."""
        self.accelerator.wait_for_everyone()
        initializer_state = distributed.full_state_dict(self.initializer, self.accelerator)  # a sharded bank, whole
        process_rng = distributed.gather_rng_states(self.accelerator)
        # Every process records the save: fit() decides on a final save from it,
        # and a process that disagreed would wait alone at the barrier above.
        self._checkpoint_iteration = self.iteration
        if not self.is_main:
            return None
        path = run_state.save(self.checkpoint_dir, self.iteration, self._parts(), initializer_state=initializer_state,
                              process_rng=process_rng, extra={"divergence": self.divergence.state_dict()},
                              keep=self.config.training.keep_checkpoints)
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
        return path

    def resume(self, path: str | Path | None = None) -> Checkpoint | None:
        """Load the newest valid checkpoint of this run (or ``path``): weights,
        initializer (e.g. a persistent bank, a VAE and its optimiser),
        stateful sampler / objective, optimiser, RNG states, iteration and the divergence guard's state.

        No checkpoint in the run folder, or checkpoints that all fail their
        checks, is an error that says what the folder holds -- never a silent
        restart.  Checkpoints set aside after a divergence, newer than the one
        resumed from, are named in a warning with how to continue from them."""
        if path is None:
            if self.is_main:
                recover_interrupted(self.checkpoint_dir)
            self.accelerator.wait_for_everyone()
            if not list_checkpoints(self.checkpoint_dir):
                resumable_checkpoint(self.run_dir)  # raises, saying what the folder holds
        ckpt = find_checkpoint(path or self.run_dir)
        run_state.restore(ckpt, self._parts(), local_initializer_state=lambda sd: distributed.local_state_dict(
            sd, self.initializer, self.accelerator))
        distributed.restore_rng_states(ckpt.tensors("process_rng") if ckpt.has("process_rng") else None,
                                       self.accelerator, self.config.training.seed, ckpt.iteration)
        self.iteration = self._checkpoint_iteration = ckpt.iteration
        self.divergence.load_state_dict(ckpt.state.get("divergence"))
        if self.is_main:
            log.info("resuming from %s (iteration %d)", ckpt.path, ckpt.iteration)
            note = quarantine_note(self.run_dir, newer_than=ckpt.iteration) if path is None else ""
            if note:
                warnings.warn(note, RuntimeWarning, stacklevel=2)
        return ckpt


# Names that lived here before run state had its own module (ebmkit.run_state).
check_compatible, load_state = run_state.check_compatible, run_state.load_state
