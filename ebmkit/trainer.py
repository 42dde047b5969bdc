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

import csv
import io
import json
import logging
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import distributed, performance
from .chain_acceleration import ChainSettings, chain_settings
from .checkpoint import Checkpoint, atomic_write, find_checkpoint, list_checkpoints, recover_interrupted, save_checkpoint
from .conditional import batch_condition, bound
from .config import ExperimentConfig, OptimizerConfig
from .data import batch_stream
from .divergence import DivergenceGuard
from .errors import CheckpointError, DivergenceError, OutputError
from .experiment import Experiment
from .images import save_grid
from .sampling import seeded
from .schedule import apply_lr

log = logging.getLogger("ebmkit")


class Callback:
    """Hooks into the training loop.  Subclass and override what you need;
    pass instances as ``Trainer(..., callbacks=[...])``."""

    def on_train_start(self, trainer: "Trainer") -> None:
        pass

    def on_step_end(self, trainer: "Trainer", logs: dict[str, float]) -> None:
        """After iteration ``trainer.iteration`` (counted from 1) has finished."""

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None:
        pass

    def on_train_end(self, trainer: "Trainer") -> None:
        pass


def make_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_accelerator(cfg: ExperimentConfig) -> Accelerator:
    t = cfg.training
    use_cpu = t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available())
    return Accelerator(cpu=use_cpu, mixed_precision=t.mixed_precision)


class MetricsLog:
    """metrics.csv, one row per iteration; on resume, rows past the
    checkpoint are dropped so that the file reads as one run."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.fields: list[str] | None = None

    def truncate_after(self, iteration: int) -> None:
        if not (self.enabled and self.path.exists()):
            return
        text = self.path.read_text()
        if text and not text.endswith("\n"):  # a row cut short by a kill
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [r for r in reader if None not in r.values() and None not in r and int(r["iteration"]) <= iteration]
        self._rewrite(rows, list(reader.fieldnames) if reader.fieldnames else None)

    def _rewrite(self, rows: list[dict], fields: list[str] | None) -> None:
        self.fields = fields
        buf = io.StringIO(newline="")
        if fields:
            w = csv.DictWriter(buf, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        with _writing(self.path):
            atomic_write(self.path, buf.getvalue().encode())  # a kill mid-rewrite keeps the old file

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.fields is None and self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f), None)
        if self.fields is None or set(row) - set(self.fields):
            old = []
            if self.path.exists() and self.fields:
                with open(self.path, newline="") as f:
                    old = list(csv.DictReader(f))
            self._rewrite(old, list(self.fields or []) + [k for k in row if k not in (self.fields or [])])
        with _writing(self.path), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, restval="").writerow(row)


@contextmanager
def _writing(path: Path):
    """Turn an OSError (a full disk, a read-only folder) into a clear OutputError."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}; is the disk full or the run folder read-only?") from None


class Trainer:
    """Trains an :class:`~ebmkit.experiment.Experiment` with Algorithm 1."""

    def __init__(self, experiment: Experiment, *, accelerator: Accelerator | None = None, run_dir: str | Path | None = None,
                 callbacks: list[Callback] | None = None):
        self.experiment = experiment
        self.config = cfg = experiment.config
        performance.apply_threads(cfg.performance.threads)
        self.chain_settings = ChainSettings.from_config(cfg.performance)
        self.accelerator = accelerator or make_accelerator(cfg)
        performance.apply_cudnn_benchmark(cfg.performance.cudnn_benchmark, self.accelerator.device)
        self.run_dir = Path(run_dir or cfg.output.dir)
        self.sampler = experiment.sampler
        self.objective = experiment.objective
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
        distributed.seed_processes(cfg.training.seed, self.accelerator)  # own chains per process, same weights
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # Divergence checks and rollbacks (ebmkit.divergence); under fp16 loss
        # scaling an overflowing gradient is routine, so it is not checked.
        self.divergence = DivergenceGuard(cfg.training.divergence, base_lrs=self.base_lrs,
                                          scaled_gradients=self.accelerator.scaler is not None)
        self._checkpoint_iteration: int | None = None  # iteration of the last checkpoint saved or loaded
        self.callbacks = list(callbacks or [])
        self.iteration = 0
        self.is_main = self.accelerator.is_main_process
        self.metrics = MetricsLog(self.run_dir / "metrics.csv", enabled=self.is_main)

    # -- Algorithm 1 ---------------------------------------------------------------
    def step(self, x: torch.Tensor) -> dict[str, float]:
        """One learning iteration on the positive batch ``x``."""
        acc = self.accelerator
        total = self.config.training.iterations
        logs: dict[str, float] = {"lr": apply_lr(self.optimizer, self.base_lrs, self.config.optimizer.effective_schedule(), self.iteration,
                                                 total)}
        for part in (self.initializer, self.sampler, self.objective):
            logs.update(part.set_progress(self.iteration, total))
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
        logs.update({"loss": out.loss.item(), **out.logs, "grad_norm": float(grad_norm)})
        logs["chain_grad_norm"] = float(chain.grad_norm.mean()) if chain.grad_norm.numel() else 0.0
        if chain.acceptance is not None:
            logs["acceptance"] = chain.acceptance
        logs.update(chain.stats)
        logs.update(self.initializer.update(negative))
        logs = distributed.mean_over_processes(logs, acc)  # logged numbers describe the global batch
        logs["global_batch"] = x.shape[0] * acc.num_processes
        self._check_finite(logs)
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
    def fit(self, *, resume: bool | str | Path = False) -> dict[str, float]:
        """Train until ``training.iterations``; returns the last logged numbers."""
        cfg, t = self.config, self.config.training
        if resume:
            self.resume(None if resume is True else resume)
            distributed.check_same_iteration(self.iteration, self.run_dir, self.accelerator)
        if self.is_main:
            with _writing(self.run_dir / "config.json"):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(self.run_dir / "config.json", cfg.model_dump_json(indent=1).encode())
            self.metrics.truncate_after(self.iteration)
            tqdm.write("ebmkit: " + distributed.describe(self.accelerator, t.batch_size, self.base_lrs[0], cfg.optimizer.lr,
                                                       cfg.optimizer.scale_lr), file=sys.stderr)
        batches = self._batches()
        bar = tqdm(total=t.iterations, initial=self.iteration, disable=not (t.progress and self.is_main), desc="train",
                   dynamic_ncols=True)
        last: dict[str, float] = {}
        start_time = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.divergence.on_train_start(self)
        while self.iteration < t.iterations:
            x = next(batches).to(self.accelerator.device, non_blocking=True)
            try:
                logs = self.step(x)
            except DivergenceError as exc:
                self.divergence.recover(self, exc)  # raises, unless it rolled back to a good checkpoint
                batches, bar.n = self._batches(), self.iteration
                continue
            self.iteration += 1
            last = {"iteration": self.iteration, "time": round(time.perf_counter() - start_time, 3), **logs}
            self.metrics.append(last)
            for cb in self.callbacks:
                cb.on_step_end(self, last)
            if self.iteration % t.log_every == 0 or self.iteration == t.iterations:
                bar.set_postfix(
                    {"E+": f"{logs['energy_data']:.3g}", "E-": f"{logs['energy_samples']:.3g}",
                     "gap": f"{logs['gap']:.3g}", "|g|": f"{logs['grad_norm']:.3g}"} if "gap" in logs else
                    {"loss": f"{logs['loss']:.3g}"},
                    refresh=False,
                )
            bar.update(1)
            if t.sample_every and self.iteration % t.sample_every == 0:
                self.write_samples(f"iter-{self.iteration:08d}.png")
            if t.checkpoint_every and self.iteration % t.checkpoint_every == 0:
                self.save()
        bar.close()
        if self._checkpoint_iteration != self.iteration:
            self.save()
        self.write_samples("final.png")
        for cb in self.callbacks:
            cb.on_train_end(self)
        return last

    def _batches(self):
        """The batch stream from the current iteration on (a pure function of seed and iteration)."""
        t = self.config.training
        return batch_stream(
            self.experiment.dataset, t.batch_size, seed=t.seed, start=self.iteration, num_workers=t.num_workers,
            rank=self.accelerator.process_index, world=self.accelerator.num_processes,
        )

    # -- samples -------------------------------------------------------------------------
    def sample(self, n: int) -> torch.Tensor:
        """n fresh short-run samples from the current model."""
        z = self.initializer.sample(n, data=self._data_batch(n) if self.initializer.needs_data else None)
        energy = self.accelerator.unwrap_model(self.energy)
        with bound(energy, batch_condition(self.initializer)), self.accelerator.autocast(), chain_settings(self.chain_settings):
            return self.sampler.run(energy, z).x.detach()

    def _data_batch(self, n: int) -> torch.Tensor:
        ds = self.experiment.dataset
        idx = torch.randperm(len(ds))[:n]
        return torch.stack([ds[int(i)] for i in idx]).to(self.accelerator.device)

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
        with _writing(self.run_dir / "samples" / name):
            return save_grid(samples, self.run_dir / "samples" / name)

    # -- checkpoints -------------------------------------------------------------------
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
        energy = self.accelerator.unwrap_model(self.energy)
        modules = {"energy": energy.state_dict(), "initializer": initializer_state,
                   **({"process_rng": process_rng} if process_rng else {})}
        objects = {"optimizer": self.optimizer.state_dict()}
        for section, part in (("sampler", self.sampler), ("objective", self.objective)):
            _component_state(section, part, modules, objects)  # stateful samplers / objectives
        initializer_optimizer = self.initializer.optimizer_state_dict()  # an initializer that learns (a VAE)
        if initializer_optimizer is not None:
            objects["initializer_optimizer"] = initializer_optimizer
        path = save_checkpoint(
            self.run_dir / "checkpoints",
            self.iteration,
            modules=modules,
            objects=objects,
            state={
                "config": json.loads(self.config.model_dump_json()),
                "shape": list(self.experiment.shape),
                "versions": {"torch": torch.__version__},
                "divergence": self.divergence.state_dict(),
                # how each part was built, defaults included: error messages name both sides
                "components": {section: getattr(part, "ebmkit_spec", None) for section, part in (
                    ("energy", energy), ("initializer", self.initializer), ("sampler", self.sampler),
                    ("objective", self.objective))},
            },
            keep=self.config.training.keep_checkpoints,
        )
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
        return path

    def resume(self, path: str | Path | None = None) -> Checkpoint | None:
        """Load the newest valid checkpoint of this run (or ``path``): weights,
        initializer (e.g. a persistent bank, a VAE and its optimiser),
        stateful sampler / objective, optimiser, RNG states, iteration and the divergence guard's state.

        With no checkpoint in the run folder the run starts fresh; checkpoints
        that all fail their checks are an error, never a silent restart."""
        if path is None:
            if self.is_main:
                recover_interrupted(self.run_dir / "checkpoints")
            self.accelerator.wait_for_everyone()
            if not list_checkpoints(self.run_dir / "checkpoints"):
                return None  # nothing to resume: start fresh
        ckpt = find_checkpoint(path or self.run_dir)
        check_compatible(ckpt, self.config, self.experiment.shape)
        load_state(self.accelerator.unwrap_model(self.energy), ckpt.tensors("energy"), "energy", ckpt)
        if ckpt.has("initializer"):
            load_state(self.initializer, distributed.local_state_dict(ckpt.tensors("initializer"), self.initializer,
                                                                      self.accelerator), "initializer", ckpt)
        for section, part in (("sampler", self.sampler), ("objective", self.objective)):
            if ckpt.has(section):
                _load_component(section, part, ckpt)
        try:
            self.optimizer.load_state_dict(ckpt.object("optimizer"))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {ckpt.path}: its optimiser state does not fit this optimiser: {exc}") from None
        if ckpt.has("initializer_optimizer"):
            try:
                self.initializer.load_optimizer_state_dict(ckpt.object("initializer_optimizer"))
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint {ckpt.path}: its initializer's optimiser state does not fit this "
                                      f"initializer's optimiser: {exc}") from None
        ckpt.restore_rng()
        distributed.restore_rng_states(ckpt.tensors("process_rng") if ckpt.has("process_rng") else None,
                                       self.accelerator, self.config.training.seed, ckpt.iteration)
        self.iteration = self._checkpoint_iteration = ckpt.iteration
        self.divergence.load_state_dict(ckpt.state.get("divergence"), self)
        if self.is_main:
            log.info("resuming from %s (iteration %d)", ckpt.path, ckpt.iteration)
        return ckpt


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
        ours = _spec_text(getattr(module, "ebmkit_spec", None))
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) < 400 else detail[:400] + " ..."
        raise CheckpointError(
            f"checkpoint {ckpt.path} holds {what} weights of {theirs}"
            + (f" for data of shape {tuple(ckpt.state['shape'])}" if "shape" in ckpt.state else "")
            + f", which do not fit this run's {what} {ours} ({type(module).__name__}): {detail}"
        ) from None
