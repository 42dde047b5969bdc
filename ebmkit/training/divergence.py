"""Divergence: noticed at the iteration it happens, explained, optionally undone.

EBM training is known to blow up: the chain's step is too large for a
sharpening energy, samples run off to infinity, the energy gap explodes.
:class:`DivergenceGuard` checks every iteration *before the optimiser moves
the weights* (so the weights in memory are never the diverged ones):

* ``check_forward`` -- the loss, the energies and every number the objective
  logs, the samples and the chain's gradient norms are finite, and the energy
  gap has not exploded (the criterion is in :class:`~ebmkit.config.DivergenceConfig`);
* ``check_gradients`` -- the parameters' gradient norm is finite (skipped under
  fp16 loss scaling, where an overflow is routine and the scaler skips the step);
* ``check_logs`` -- anything else logged after the step is finite.

Each raises :class:`~ebmkit.errors.DivergenceError` naming the iteration.
The guard decides and the loop acts: the trainer hands the error to
:meth:`DivergenceGuard.decide`, which

1. moves checkpoints of the failed weights aside to ``checkpoints/diverged/``
   (iteration t is computed with the weights after t-1 steps; a checkpoint of
   those may exist, written before they were tried), so that ``--resume`` and
   rollbacks only ever see weights that passed the checks;
2. with ``action = "stop"`` re-raises with the last good checkpoint named;
3. with ``action = "rollback"`` returns a :class:`Rollback`: the last good
   checkpoint and the new learning-rate factor (``lr_factor`` times the old),
   at most ``max_rollbacks`` times.  A run that diverges again before writing
   a new checkpoint goes one checkpoint further back: the one it returned to
   was already on its way up.  The trainer reloads that checkpoint, applies
   the factor (:class:`~ebmkit.training.schedule.LearningRate` is the one
   writer of the rate) and logs the event (a warning and a line in
   ``events.jsonl``).

The guard's state (recent gaps, learning-rate scale, rollback count) is saved
in every checkpoint, so a resumed run detects exactly what the uninterrupted
run would have.
"""

from __future__ import annotations

import math
import shutil
import statistics
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, list_checkpoints, open_checkpoint
from ..config import DivergenceConfig
from ..errors import CheckpointError, DivergenceError
from ..interfaces import ObjectiveOutput, SampleResult

LIKELY_CAUSES = (
    "Likely causes: the Langevin step size or noise is too large for this energy "
    "(sampler.step_size / sampler.noise, or sampler.epsilon), or the learning rate is too high "
    "(optimizer.lr); optimizer.grad_clip and a spectrally normalised energy (energy.spectral_norm = true) "
    "also steady a run."
)
QUARANTINE = "diverged"
"""Sub-folder of ``checkpoints/`` that receives checkpoints of failed weights."""


def _names(values: dict[str, Any]) -> list[str]:
    return [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]


@dataclass
class Rollback:
    """The guard's decision to go back: to ``checkpoint``, with the learning
    rate multiplied by ``lr_scale`` (of the configured rate), as rollback
    number ``number``."""

    checkpoint: Checkpoint
    lr_scale: float
    number: int
    max_rollbacks: int
    error: DivergenceError
    failed_at: int
    moved_aside: list[str] = field(default_factory=list)

    def event(self, *, lr: float) -> dict[str, Any]:
        """The line for ``events.jsonl`` (``lr``: the first group's rate after the rollback)."""
        return {"event": "divergence", "iteration": self.failed_at, "reason": self.error.reason, "message": str(self.error),
                "moved_aside": self.moved_aside, "action": "rollback", "checkpoint": str(self.checkpoint.path),
                "resume_iteration": self.checkpoint.iteration, "rollback": self.number, "lr_scale": self.lr_scale, "lr": lr}

    def warning(self, *, lr: float) -> str:
        return (f"training diverged at iteration {self.failed_at} ({self.error.reason}); rollback {self.number} of at most "
                f"{self.max_rollbacks}: continuing from {self.checkpoint.path} (iteration {self.checkpoint.iteration}) with "
                f"the learning rate x{self.lr_scale:g} = {lr:.3g}")


class DivergenceGuard:
    """Per-iteration divergence checks, and the decision when one fails.

    ``lr_scale`` is the factor the guard has put on the configured learning
    rate (1 until a rollback); the trainer's
    :class:`~ebmkit.training.schedule.LearningRate` reads it every iteration.
    """

    def __init__(self, cfg: DivergenceConfig, *, scaled_gradients: bool = False) -> None:
        self.cfg = cfg
        self.scaled_gradients = scaled_gradients
        self.gaps: deque[float] = deque(maxlen=cfg.gap_window)
        self.lr_scale = 1.0
        self.rollbacks = 0
        self.rollback_target: int | None = None  # iteration of the checkpoint last rolled back to

    # -- checks (each raises DivergenceError) -----------------------------------------
    def check_forward(self, iteration: int, out: ObjectiveOutput, chain: SampleResult) -> None:
        """Energies, loss, samples and chain gradients finite; the gap not exploding."""
        ok = torch.isfinite(out.loss.detach()).all() & torch.isfinite(chain.x.detach()).all()
        if chain.grad_norm.numel():
            ok = ok & torch.isfinite(chain.grad_norm).all()
        bad_logs = _names(out.logs)
        if not bool(ok) or bad_logs:  # one host sync in the common case
            what = []
            if not bool(torch.isfinite(chain.x.detach()).all()):
                what.append("samples (the chain ran off to NaN or infinity)")
            if chain.grad_norm.numel() and not bool(torch.isfinite(chain.grad_norm).all()):
                step = int((~torch.isfinite(chain.grad_norm)).nonzero()[0])
                what.append(f"chain gradients (first at Langevin step {step + 1})")
            if not bool(torch.isfinite(out.loss.detach()).all()):
                what.append("loss")
            what += bad_logs
            reason = ("non-finite samples" if what[0].startswith("samples") else
                      "non-finite chain gradients" if what[0].startswith("chain") else "non-finite energies")
            self._raise(iteration, reason, "non-finite " + ", ".join(what))
        gap = out.gap if out.gap is not None else out.logs.get("gap")  # the declared gap; a logged one for older objectives
        if gap is not None:
            self._check_gap(iteration, abs(float(gap)))
    def _check_gap(self, iteration: int, size: float) -> None:
        c = self.cfg
        if c.max_gap is not None and size > c.max_gap:
            self._raise(iteration, "exploding energy gap",
                        f"the energy gap exploded: |mean U(data) - mean U(samples)| = {size:.4g} > max_gap = {c.max_gap:g}")
        if c.gap_factor is not None and len(self.gaps) == c.gap_window:
            median = statistics.median(self.gaps)
            limit = max(c.gap_floor, c.gap_factor * median)
            if size > limit:
                self._raise(iteration, "exploding energy gap",
                            f"the energy gap exploded: |mean U(data) - mean U(samples)| = {size:.4g} > {limit:.4g} "
                            f"= max(gap_floor {c.gap_floor:g}, gap_factor {c.gap_factor:g} x the median |gap| "
                            f"{median:.3g} of the last {c.gap_window} iterations with |gap| <= {c.gap_floor:g})")
        if size <= c.gap_floor:  # a climb above the floor must not raise its own threshold
            self.gaps.append(size)

    def check_gradients(self, iteration: int, grad_norm: torch.Tensor | float) -> None:
        """The parameters' gradient norm (from clip_grad_norm_) is finite."""
        if self.scaled_gradients:
            return
        g = float(grad_norm)
        if not math.isfinite(g):
            self._raise(iteration, "non-finite gradients",
                        f"the gradient of the loss with respect to the energy's parameters is non-finite (norm {g})")

    def check_logs(self, iteration: int, logs: dict[str, Any]) -> None:
        """Every logged float is finite (the catch-all after the step)."""
        bad = [k for k in _names(logs) if not (self.scaled_gradients and k == "grad_norm")]
        if bad:
            self._raise(iteration, "non-finite logged values", "non-finite " + ", ".join(bad))

    @staticmethod
    def _raise(iteration: int, reason: str, detail: str) -> None:
        raise DivergenceError(f"training diverged at iteration {iteration}: {detail}. {LIKELY_CAUSES}",
                              iteration=iteration, reason=reason)

    # -- state carried by checkpoints ---------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"gaps": list(self.gaps), "lr_scale": self.lr_scale, "rollbacks": self.rollbacks,
                "rollback_target": self.rollback_target}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.gaps = deque((float(g) for g in state.get("gaps", [])), maxlen=self.cfg.gap_window)
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.rollbacks = int(state.get("rollbacks", 0))
        target = state.get("rollback_target")
        self.rollback_target = None if target is None else int(target)

    # -- after a failed check -------------------------------------------------------------
    def wants_first_checkpoint(self, iteration: int, checkpoints: Path) -> bool:
        """With rollbacks on, a run starting from scratch needs a checkpoint to roll back to."""
        return self.cfg.action == "rollback" and iteration == 0 and not list_checkpoints(checkpoints)

    def decide(self, err: DivergenceError, checkpoints: Path, *, iteration: int, is_main: bool = True,
               barrier: Callable[[], None] = lambda: None,
               log_event: Callable[[dict[str, Any]], None] = lambda event: None) -> Rollback:
        """After ``err`` at ``iteration`` + 1: move the checkpoints of the failed
        weights aside (main process; ``barrier`` waits for the others), then
        return where to roll back to, or raise the final error (after passing
        its event to ``log_event``).  Nothing here touches the trainer."""
        failed_at = err.iteration if err.iteration is not None else iteration + 1
        moved = quarantine(checkpoints, from_iteration=failed_at - 1) if is_main else []
        barrier()
        good = _newest_valid(checkpoints)
        if (self.cfg.action == "rollback" and good is not None and good.iteration == self.rollback_target
                and self.rollbacks < self.cfg.max_rollbacks):
            # Diverged again before a new checkpoint: that checkpoint is already on the way
            # to the blow-up, so go one checkpoint further back (when one is kept).
            older = _newest_valid(checkpoints, before=good.iteration)
            if older is not None:
                moved += quarantine(checkpoints, from_iteration=good.iteration) if is_main else []
                barrier()
                good = older
        if self.cfg.action == "rollback" and good is not None and self.rollbacks < self.cfg.max_rollbacks:
            return Rollback(good, self.lr_scale * self.cfg.lr_factor, self.rollbacks + 1, self.cfg.max_rollbacks, err,
                            failed_at, moved)
        if good is not None:
            where = f"The last good checkpoint is {good.path} (iteration {good.iteration})"
        else:
            where = f"No good checkpoint was written before it (under {checkpoints})"
        if moved:
            where += f"; checkpoint(s) of the failed weights were moved to {Path(checkpoints) / QUARANTINE}"
        if self.cfg.action == "rollback":
            why = ("no checkpoint to roll back to" if good is None else
                   f"gave up after {self.rollbacks} rollback(s) (learning rate x{self.lr_scale:g})")
            where += f". Rollback: {why}"
        hint = (" To go on from it, change the config and run `ebmkit train CONFIG --resume`"
                + (", or set training.divergence.action = \"rollback\"." if self.cfg.action == "stop" else "."))
        log_event({"event": "divergence", "iteration": failed_at, "reason": err.reason, "message": str(err),
                   "moved_aside": moved, "action": "stop", "checkpoint": str(good.path) if good else None})
        raise DivergenceError(f"{err} {where}.{hint if good is not None else ''}", iteration=failed_at,
                              reason=err.reason) from None

    def accept(self, rollback: Rollback) -> None:
        """The trainer went back as decided (its reload restored this guard's
        state of that checkpoint): count the rollback and keep the new factor."""
        self.rollbacks, self.lr_scale, self.rollback_target = rollback.number, rollback.lr_scale, rollback.checkpoint.iteration


def _newest_valid(directory: Path, before: int | None = None):
    """The newest checkpoint that passes its checks (older than ``before``), or None."""
    for path in reversed(list_checkpoints(directory)):
        if before is not None and int(path.name.split("-")[-1]) >= before:
            continue
        try:
            return open_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
    return None


def quarantine(directory: str | Path, *, from_iteration: int) -> list[str]:
    """Move checkpoints with iteration >= ``from_iteration`` to
    ``directory/diverged/`` (replacing older copies there); returns their names."""
    directory = Path(directory)
    moved = []
    for ckpt in list_checkpoints(directory):
        if int(ckpt.name.split("-")[-1]) < from_iteration:
            continue
        target = directory / QUARANTINE / ckpt.name
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        ckpt.rename(target)
        moved.append(ckpt.name)
    return moved
