"""The multi-process half of tests/test_distributed.py.

Started by ``ebmkit.distributed.launch([OUT], 2, module="distributed_worker")``
(torch.distributed's launcher, gloo on CPU).  Every process runs the same jobs
in order; each job writes what the test compares under OUT.  The configs come
from OUT/jobs.json, written by the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor

import ebmkit
from ebmkit import distributed
from ebmkit.cli import main as cli_main
from ebmkit.config import parse_config
from ebmkit.experiment import build_experiment
from ebmkit.registry import Registry
from ebmkit.training.loop import Callback, Trainer


class MirrorInit(ebmkit.InitialDistribution):
    """Chain starts that are a fixed function of the positive batch, so the
    negatives of a sample do not depend on which process draws it."""

    needs_data = True

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        return -0.5 * data


class BankInit(ebmkit.InitialDistribution):
    """A tiny persistent bank: chains start from random rows and write back."""

    sharded_buffers = ("bank",)

    class Params(ebmkit.Params):
        size: int = Field(12, ge=1)

    def __init__(self, shape, size: int = 12):
        super().__init__()
        self.register_buffer("bank", torch.rand(size, *shape) * 2 - 1)
        self._rows: Tensor | None = None

    @classmethod
    def from_params(cls, params, context):
        return cls(context.require_shape("test-bank"), **params.model_dump())

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        self._rows = torch.randint(len(self.bank), (n,), device=self.bank.device)
        return self.bank[self._rows].clone()

    def update(self, samples: Tensor) -> dict[str, float]:
        self.bank[self._rows] = samples
        return {"bank_mean": float(self.bank.mean())}


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"mirror": MirrorInit, "test-bank": BankInit}


def registry() -> Registry:
    reg = Registry()
    reg.register(sys.modules[__name__], name="distributed_worker", source="tests")
    return reg


def trainer(cfg: dict, reg: Registry) -> Trainer:
    config = parse_config(cfg, registry=reg)
    return Trainer(build_experiment(config, registry=reg))


class SaveLocalBank(Callback):
    """Each process's own share of the bank when training starts (after any resume)."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_start(self, trainer: Trainer) -> None:
        torch.save(trainer.initializer.bank.clone(), self.path)


def run(out: Path) -> None:
    jobs = json.loads((out / "jobs.json").read_text())
    reg = registry()

    # A: one step, fixed samples -- compared with 1 process x twice the batch.
    t = trainer(jobs["equivalence"], reg)
    rank = t.accelerator.process_index
    torch.save(torch.rand(8), out / f"draw-rank{rank}.pt")  # distinct chain RNG per process
    t.fit()

    # C: a bank run, uninterrupted and interrupted-then-resumed, at 2 processes.
    t = trainer(jobs["bank_full"], reg)
    t.fit()
    torch.save(t.initializer.bank.clone(), out / f"bank-rank{rank}.pt")
    trainer(jobs["bank_half"], reg).fit()
    trainer(jobs["bank_resumed"], reg).fit(resume=True)

    # D: resume a checkpoint written by 1 process.
    t = trainer(jobs["from_one"], reg)
    t.callbacks.append(SaveLocalBank(out / f"from-one-rank{rank}.pt"))
    t.fit(resume=True)

    # F: `ebmkit sample`, split across the processes.
    assert cli_main(["sample", jobs["sample_checkpoint"], "--n", "10", "--batch-size", "4",
                     "--out", str(out / "sample-2proc.pt")]) == 0

    # G: the helpers, on uneven and empty shares.
    state = t.accelerator
    results = {
        "mean": distributed.mean_over_processes({"a": 1.0 + 2 * rank, "name": f"rank{rank}"}, state),
        "ragged": distributed.gather_ragged(torch.arange(3.0) if rank == 0 else None, state).tolist(),
        "uneven": distributed.gather_ragged(torch.full((rank + 1, 2), float(rank)), state).tolist(),
        "one_batch": distributed.map_batches(lambda a, b: torch.arange(a, b) * 10, 3, 4, state=state).tolist(),
    }
    try:
        distributed.mean_over_processes({"a": 1.0} if rank == 0 else {"b": 1.0}, state)
    except RuntimeError as exc:
        results["mismatch"] = str(exc)
    (out / f"helpers-rank{rank}.json").write_text(json.dumps(results))

    # H: learning initializers (VAE proposals) keep one model across processes;
    # the last job skips the averaging, to show that the check can fail.
    for job in ("coop_vae", "coop_cvae", "coop_vae_unaveraged"):
        t = trainer(jobs[job], reg)
        if job.endswith("unaveraged"):
            import ebmkit_plugins.vae_initializer as vae

            vae.average_gradients = vae.average_buffers = lambda module: None
        t.fit()
        torch.save(t.initializer.state_dict(), out / f"{job}-rank{rank}.pt")


if __name__ == "__main__":
    run(Path(sys.argv[1]))
