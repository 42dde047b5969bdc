"""Data-parallel training on 2 CPU processes (gloo), against 1 process.

One launch of tests/distributed_worker.py on 2 processes runs every
multi-process job; this file runs the single-process counterparts and
compares.  The central check: one step of 2 processes x batch b updates the
weights exactly as 1 process x batch 2b does on the same samples.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_worker as worker
from ebmkit import distributed
from ebmkit.checkpoint import find_checkpoint
from ebmkit.cli import build_parser, command_argv, main
from ebmkit.config import parse_config
from ebmkit.experiment import build_experiment

from conftest import tiny_config

B = 8  # batch per process
TESTS = Path(__file__).parent


def rows(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "metrics.csv")))


def weights(run: Path, iteration: int | None = None) -> dict[str, torch.Tensor]:
    path = run / "checkpoints" / f"iter-{iteration:08d}" if iteration else run
    return find_checkpoint(path).tensors("energy")


def launch_workers(out: Path, timeout: float = 300) -> None:
    """2 processes through ebmkit.distributed.launch, in their own session so
    that a hang can be killed whole."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    code = "import sys; from ebmkit.distributed import launch; sys.exit(launch(sys.argv[1:], 2, module='distributed_worker'))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"2-process run did not finish in {timeout} s:\n{log[-4000:]}")
    assert proc.returncode == 0, log[-4000:]


def test_two_processes_equal_one_with_twice_the_batch_shard_the_bank_and_resume(tmp_path):
    reg = worker.registry()
    fixed = dict(  # samples that do not depend on the process: negatives a fixed function of the data
        initializer={"name": "mirror"},
        sampler={"name": "gradient-descent", "steps": 5, "step_size": 0.5},
        objective={"name": "maximum-likelihood", "data_noise": 0.0},
        optimizer={"name": "sgd", "lr": 0.5},
    )
    bank = dict(initializer={"name": "test-bank", "size": 12}, sampler={"name": "langevin", "steps": 3})

    def cfg(name: str, batch: int = B, iterations: int = 1, every: int = 0, **sections) -> dict:
        c = tiny_config(tmp_path, training={"iterations": iterations, "batch_size": batch, "checkpoint_every": every},
                        output={"dir": str(tmp_path / name)})
        return {**c, **sections}  # whole sections replaced

    jobs = {
        "equivalence": cfg("two", **fixed),
        "bank_full": cfg("full", iterations=4, every=2, **bank),
        "bank_half": cfg("resumed", iterations=2, every=2, **bank),
        "bank_resumed": cfg("resumed", iterations=4, every=2, **bank),
        "from_one": cfg("from-one", iterations=4, every=2, **bank),
        "sample_checkpoint": str(tmp_path / "plain"),
        "coop_vae": cfg("coop-vae", iterations=2, initializer={"name": "vae", "latent_dim": 4, "nf": 4, "lr": 1e-2},
                        sampler={"name": "langevin", "steps": 3}),
        "coop_vae_unaveraged": cfg("coop-vae-unaveraged", iterations=2,
                                   initializer={"name": "vae", "latent_dim": 4, "nf": 4, "lr": 1e-2},
                                   sampler={"name": "langevin", "steps": 3}),
        "coop_cvae": cfg("coop-cvae", iterations=2, energy={"name": "conditional-convnet", "nf": 8},
                         initializer={"name": "conditional-vae", "condition": {"name": "masked", "mask": "centre"},
                                      "latent_dim": 4, "nf": 4, "lr": 1e-2},
                         sampler={"name": "clamped", "inner": {"name": "langevin", "steps": 3}}),
    }
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))

    # The single-process sides.
    start = build_experiment(parse_config(jobs["equivalence"], registry=reg), registry=reg).energy.state_dict()
    worker.trainer(cfg("one", batch=2 * B, **fixed), reg).fit()  # 1 process x 2b: the reference
    worker.trainer(cfg("half", batch=B, **fixed), reg).fit()  # 1 process x b: what rank 0 alone would do
    worker.trainer(cfg("from-one", iterations=2, **bank), reg).fit()  # a 1-process checkpoint to resume on 2
    worker.trainer(cfg("plain", iterations=1), reg).fit()  # for `ebmkit sample`

    launch_workers(tmp_path)

    # 1. The update: 2 x b == 1 x 2b, far from what one half-batch alone gives.
    one, two, half = weights(tmp_path / "one"), weights(tmp_path / "two"), weights(tmp_path / "half")
    step = max((one[k] - start[k]).abs().max().item() for k in start)
    error = max((two[k] - one[k]).abs().max().item() for k in start)
    unreduced = max((half[k] - one[k]).abs().max().item() for k in start)
    assert step > 1e-2  # the step is substantial ...
    assert error <= 1e-5 * step  # ... and the same, to float rounding ...
    assert unreduced > 1e-2 * step  # ... while skipping the all-reduce would be caught
    # Logged numbers are means over processes: those of the global batch; one row per iteration (main only).
    (r1,), (r2,) = rows(tmp_path / "one"), rows(tmp_path / "two")
    for key in ("loss", "energy_data", "energy_samples", "grad_norm"):
        assert float(r2[key]) == pytest.approx(float(r1[key]), rel=1e-5, abs=1e-6), key
    assert r1["global_batch"] == r2["global_batch"] == str(2 * B)

    # 2. Each process has its own chain RNG.
    assert not torch.equal(torch.load(tmp_path / "draw-rank0.pt"), torch.load(tmp_path / "draw-rank1.pt"))

    # 3. The bank is sharded (6 rows each) and checkpointed whole.
    shards = [torch.load(tmp_path / f"bank-rank{r}.pt") for r in (0, 1)]
    saved = find_checkpoint(tmp_path / "full").tensors("initializer")["bank"]
    assert [len(s) for s in shards] == [6, 6] and saved.shape == (12, 1, 8, 8)
    assert torch.equal(saved, torch.cat(shards))

    # 4. Resume at the same process count is exact (weights, bank, logged numbers).
    full, resumed = find_checkpoint(tmp_path / "full"), find_checkpoint(tmp_path / "resumed")
    assert resumed.iteration == full.iteration == 4
    for name in ("energy", "initializer"):
        for k, v in full.tensors(name).items():
            assert torch.equal(v, resumed.tensors(name)[k]), (name, k)
    assert [r["gap"] for r in rows(tmp_path / "full")] == [r["gap"] for r in rows(tmp_path / "resumed")]

    # 5. Resume 1 -> 2 processes: each takes its half of the saved bank; the global batch doubles.
    bank_at_2 = find_checkpoint(tmp_path / "from-one" / "checkpoints" / "iter-00000002").tensors("initializer")["bank"]
    for r in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"from-one-rank{r}.pt"), bank_at_2[6 * r : 6 * r + 6])
    assert [int(r["global_batch"]) for r in rows(tmp_path / "from-one")] == [B, B, 2 * B, 2 * B]
    assert find_checkpoint(tmp_path / "from-one").iteration == 4

    # 6. Resume 2 -> 1 process: the whole bank comes back.
    shutil.copytree(tmp_path / "full", tmp_path / "back-to-one")
    back = worker.trainer(cfg("back-to-one", iterations=5, every=2, **bank), reg)
    back.callbacks.append(worker.SaveLocalBank(tmp_path / "back.pt"))
    back.fit(resume=True)
    assert torch.equal(torch.load(tmp_path / "back.pt"), saved)
    assert [int(r["global_batch"]) for r in rows(tmp_path / "back-to-one")] == [2 * B] * 4 + [B]

    # 7. `ebmkit sample` split over 2 processes draws exactly the samples 1 process draws.
    assert main(["sample", str(tmp_path / "plain"), "--n", "10", "--batch-size", "4", "--out", str(tmp_path / "s1.pt")]) == 0
    one_proc, two_proc = torch.load(tmp_path / "s1.pt"), torch.load(tmp_path / "sample-2proc.pt")
    assert one_proc.shape == (10, 1, 8, 8) and torch.equal(one_proc, two_proc)

    # 8. The helpers on uneven and empty shares; mismatched log names are an error on every process.
    for r in (0, 1):
        h = json.loads((tmp_path / f"helpers-rank{r}.json").read_text())
        assert h["mean"] == {"a": 2.0, "name": f"rank{r}"}
        assert h["ragged"] == [0.0, 1.0, 2.0]
        assert h["uneven"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert h["one_batch"] == [0, 10, 20]
        assert "processes logged different numbers" in h["mismatch"]

    # 9. A VAE proposal (plain and conditional) learns the same on every process: gradients and
    #    batch-norm statistics are averaged; without that the two copies drift apart.
    for job in ("coop_vae", "coop_cvae", "coop_vae_unaveraged"):
        r0, r1 = (torch.load(tmp_path / f"{job}-rank{r}.pt") for r in (0, 1))
        assert r0.keys() == r1.keys() and any("running_mean" in k for k in r0)
        same = all(torch.equal(r0[k], r1[k]) for k in r0)
        assert same == (job != "coop_vae_unaveraged"), job


def test_single_process_helpers_are_plain():
    state = distributed.PartialState()
    assert distributed.gather_ragged(torch.ones(3, 2), state).shape == (3, 2)
    out = distributed.map_batches(lambda a, b: torch.arange(a, b), 10, 4, state=state)
    assert torch.equal(out, torch.arange(10))
    # seeded batches do not depend on how the work is cut up, and leave the caller's RNG alone
    torch.manual_seed(1)
    before = torch.get_rng_state()
    x = distributed.map_batches(lambda a, b: torch.rand(b - a), 10, 4, seed=3, state=state)
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(x[:4], x[4:8])
    assert torch.equal(distributed.map_batches(lambda a, b: torch.rand(b - a), 10, 4, seed=3, state=state), x)
    assert distributed.process_seed(0, 0) != distributed.process_seed(0, 1) != distributed.process_seed(1, 0)
    assert distributed.scaled_lr(1e-4, "linear", 4) == pytest.approx(4e-4)
    assert distributed.scaled_lr(1e-4, "sqrt", 4) == pytest.approx(2e-4)
    assert distributed.scaled_lr(1e-4, "none", 4) == 1e-4


def test_launched_copies_get_the_same_command_line():
    args = build_parser().parse_args(["train", "c.toml", "--set", "a.b=1", "--set", "c.d=-2", "--resume", "--iterations", "5",
                                      "--num-processes", "2"])
    assert command_argv(args, "train") == ["train", "c.toml", "--set=a.b=1", "--set=c.d=-2", "--iterations=5", "--resume"]
    again = build_parser().parse_args(command_argv(args, "train"))
    assert {**vars(again), "num_processes": 2} == vars(args)


def test_num_processes_launches_through_the_launcher(tmp_path, tiny, monkeypatch):
    seen = {}

    def fake_launch(argv, n, **kw):
        seen.update(argv=argv, n=n)
        return 0

    monkeypatch.setattr(distributed, "launch", fake_launch)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny()))
    assert main(["train", str(cfg), "--num-processes", "3"]) == 0
    assert seen == {"argv": ["train", str(cfg)], "n": 3}
    assert main(["train", str(cfg), "--num-processes", "0"]) == 2  # a clear error, not a launch


def test_a_bank_smaller_than_the_process_count_is_a_clear_error():
    class ThreeProcesses:
        num_processes, process_index = 3, 0

    init = worker.BankInit((2,), size=2)
    with pytest.raises(distributed.ConfigError, match="bank.*2 rows, fewer than the 3 processes"):
        distributed.shard_module(init, ThreeProcesses())


@pytest.mark.slow
def test_ebmkit_train_num_processes_end_to_end(tmp_path, tiny):
    """The real command: `ebmkit train CONFIG --num-processes 2` (one short launch)."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny(training={"iterations": 2, "batch_size": B})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ebmkit", "train", str(cfg), "--num-processes", "2",
                             "--out", str(tmp_path / "r")], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("`ebmkit train --num-processes 2` did not finish in 300 s")
    assert proc.returncode == 0, err[-4000:]
    summaries = [line for line in out.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["iteration"] == 2  # printed by process 0 only
    assert "global batch 16 = 2 x 8 per process" in err
    assert [int(r["global_batch"]) for r in rows(tmp_path / "r")] == [2 * B, 2 * B]


def test_launch_hands_the_command_its_own_options(monkeypatch):
    """`ebmkit sample RUN --n 64 --num-processes 2` once failed: the launcher's parser read `--n=64`
    as an abbreviation of its own options (--nnodes, --nproc-per-node, ...)."""
    from torch.distributed import run as torchrun

    from ebmkit import distributed

    import signal

    seen = []

    def fake_run(parsed):  # as torch's launcher does: installs its own handlers and leaves them
        seen.append(parsed)
        signal.signal(signal.SIGINT, lambda *a: None)

    monkeypatch.setattr(torchrun, "run", fake_run)
    before = signal.getsignal(signal.SIGINT)
    assert distributed.launch(["sample", "runs/x", "--n=64", "--out=a.png"], 2) == 0
    assert signal.getsignal(signal.SIGINT) is before  # the caller's Ctrl-C handling is back
    assert seen[0].training_script == "ebmkit" and seen[0].module
    assert seen[0].training_script_args == ["sample", "runs/x", "--n=64", "--out=a.png"]
    assert seen[0].nproc_per_node == "2"
