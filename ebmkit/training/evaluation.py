"""Sample quality during training: the ``[evaluation]`` section.

Every ``every`` iterations (and at the last) the model draws ``samples``
samples from the *same* chain starts and noise each time (a fixed seed on a
forked RNG: the training stream is untouched), and scores them:

* ``classifier`` (labelled image sets: digits, MNIST-5k): recognisable
  share, class coverage and the Fréchet distance in the data classifier's
  features (:mod:`ebmkit.metrics.classifier`), as ``eval_recognisable``,
  ``eval_coverage`` and ``eval_fd``;
* ``fid``: Inception FID against the training split (``eval_fid``; needs the
  Inception weights on disk, and minutes on a CPU).

The numbers go into ``metrics.csv`` on the row of that iteration, into the
progress bar and into the run's trackers.  With ``keep_best`` the
checkpoint of the best score so far is kept in ``RUN/best/`` (the metric and
the iteration in ``RUN/best/best.json``).
"""

from __future__ import annotations

import json
import math
import torch

from ..checkpoint import atomic_write
from ..config import EvaluationConfig
from ..sampling import seeded
from .callbacks import Callback

HIGHER_IS_BETTER = {"recognisable": True, "coverage": True, "fd": False, "fid": False}


class QualityEvaluation(Callback):
    """The ``[evaluation]`` section as a training callback (main process)."""

    def __init__(self, config: EvaluationConfig) -> None:
        self.config = config
        self.judge = None
        self.inception = None
        self.reference = None
        self.best: float | None = None

    @property
    def enabled(self) -> bool:
        return self.config.every > 0

    def on_train_start(self, trainer) -> None:
        if not (self.enabled and trainer.is_main):
            return
        cfg, data = self.config, trainer.config.data
        if trainer.accelerator.num_processes > 1 and cfg.keep_best:
            from ..errors import ConfigError

            raise ConfigError("evaluation.keep_best works in single-process runs only (a data-parallel run's state is "
                              "spread over its processes); drop it or train on one process")
        params = dict(data.params)
        if "classifier" in cfg.metrics:
            from ..metrics.classifier import ClassifierJudge

            self.judge = ClassifierJudge.for_dataset(data.name, **params)
        if "fid" in cfg.metrics:
            from ..metrics import InceptionFeatures, RealReference

            self.inception = InceptionFeatures()
            train = trainer.experiment.dataset
            real = torch.stack([train[i] for i in range(min(len(train), 2 * cfg.samples))])
            self.reference = RealReference.from_features(self.inception(real))
        best = trainer.run_dir / "best" / "best.json"
        if cfg.keep_best and best.is_file():  # a resumed run keeps its best so far
            self.best = json.loads(best.read_text()).get("value")

    def due(self, trainer) -> bool:
        it, total = trainer.iteration, trainer.config.training.iterations
        return self.enabled and (it % self.config.every == 0 or it == total)

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        if not (trainer.is_main and self.due(trainer)):
            return
        with seeded(self.config.seed, trainer.device):
            samples = trainer.sample(self.config.samples).float().cpu()
        scores: dict[str, float] = {}
        if self.judge is not None:
            s = self.judge.score(samples)
            scores.update(recognisable=s.recognisable, coverage=s.coverage, fd=s.fd)
        if self.inception is not None:
            scores["fid"] = self.reference.score(self.inception(samples))["fid"]
        logs.update({f"eval_{k}": v for k, v in scores.items()})
        if self.config.keep_best:
            self._keep_best(trainer, scores[self.config.keep_best])

    def _keep_best(self, trainer, value: float) -> None:
        key = self.config.keep_best
        better = self.best is None or (value > self.best if HIGHER_IS_BETTER[key] else value < self.best)
        if not better or not math.isfinite(value):
            return
        self.best = value
        folder = trainer.run_dir / "best"
        trainer.save_copy(folder)
        atomic_write(folder / "best.json", json.dumps({"metric": key, "value": value,
                                                       "iteration": trainer.iteration}).encode())
