"""Run-folder ownership (ebmkit.run_folder): one live writer, stale locks
taken over with a warning, no silent reuse of a folder that holds a run,
--overwrite moves the old run aside, --resume without a checkpoint says what
it found."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ebmkit.checkpoint import save_checkpoint
from ebmkit.errors import CheckpointError
from ebmkit.run_folder import (
    LOCK_FILE,
    RunFolderError,
    RunLock,
    check_target,
    claim,
    describe_run,
    holds_run,
    resumable_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(run: Path, iterations=(2, 4)) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.csv").write_text("iteration,loss\n" + "".join(f"{i},0.1\n" for i in range(1, max(iterations) + 1)))
    for it in iterations:
        save_checkpoint(run / "checkpoints", it, modules={"energy": {"w": torch.full((2,), float(it))}})


def _holder(run: Path):
    """A separate live process holding the run's lock (released when killed)."""
    code = ("import sys, time; from ebmkit.run_folder import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_lock_names_its_owner_and_a_second_run_is_refused(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as lock:
        info = json.loads((run / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started"]
        with pytest.raises(RunFolderError, match=rf"{run} is in use by another run: process {os.getpid()} on "
                                                 rf"{socket.gethostname()}, started .*; wait for it to finish, "
                                                 r"or train into another folder with --out"):
            RunLock(run).acquire()
        assert RunLock(run).holder().pid == os.getpid()
        assert lock.held
    assert not (run / LOCK_FILE).exists() and RunLock(run).holder() is None


def test_a_live_lock_in_another_process_refuses_then_a_dead_ones_is_taken_over(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(RunFolderError, match=rf"in use by another run: process {proc.pid} on "):
            check_target(run, resume=False, overwrite=False)
        with pytest.raises(RunFolderError, match=rf"process {proc.pid}"):
            claim(run, resume=False, overwrite=False)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (run / LOCK_FILE).exists()  # a kill leaves the file: stale
    assert RunLock(run).holder() is None
    check_target(run, resume=False, overwrite=False)  # a stale lock does not refuse
    with pytest.warns(RuntimeWarning, match=rf"{run / LOCK_FILE} was left by process {proc.pid} on .*, which is no "
                                            r"longer running \(killed\?\); taking the run folder over"):
        lock = claim(run, resume=False, overwrite=False)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_lock_from_another_host_is_not_guessed_at(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "2026-01-01T00:00:00"}))
    with pytest.raises(RunFolderError, match=rf"in use by another run: process 1 on elsewhere"):
        check_target(run, resume=False, overwrite=False)
    with pytest.raises(RunFolderError, match=rf"locked by process 1 on elsewhere, .*cannot be told from .*delete {run / LOCK_FILE}"):
        RunLock(run).acquire()


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    check_target(run, resume=False, overwrite=False)  # absent: fine
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert not holds_run(run)
    check_target(run, resume=False, overwrite=False)  # no run in it: fine
    _fake_run(run)
    assert describe_run(run) == "checkpoints up to iteration 4, metrics.csv with 4 rows, config.json"
    with pytest.raises(RunFolderError) as e:
        check_target(run, resume=False, overwrite=False)
    assert str(e.value) == (
        f"{run} already holds a run (checkpoints up to iteration 4, metrics.csv with 4 rows, config.json); nothing was "
        "written. Continue it with --resume, train into another folder with --out, or start afresh with --overwrite "
        "(the old run is moved to run.old-<date>-<time> beside it, not deleted)")
    with pytest.raises(RunFolderError, match="--resume and --overwrite exclude each other"):
        check_target(run, resume=True, overwrite=True)
    with pytest.raises(RunFolderError, match="already holds a run"):  # re-checked under the lock
        claim(run, resume=False, overwrite=False)
    assert not (run / LOCK_FILE).exists()
    assert resumable_checkpoint(run).iteration == 4
    claim(run, resume=True, overwrite=False).release()


def test_overwrite_moves_the_old_run_aside_intact(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    lock = claim(run, resume=False, overwrite=True)
    try:
        (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
        assert time.strftime("%Y%m%d") in aside.name
        assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == before
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # a fresh folder, locked by us
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_resume_without_a_checkpoint_says_what_it_found(tmp_path):
    with pytest.raises(CheckpointError, match=r"no run to resume at .*the folder does not exist.*leave out --resume"):
        resumable_checkpoint(tmp_path / "nothing")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("iteration,loss\n1,0.5\n")
    with pytest.raises(CheckpointError, match=r"--resume: no checkpoint to resume in .*checkpoints \(the folder holds "
                                              r"metrics.csv with 1 row\)\. .*--overwrite"):
        check_target(run, resume=True, overwrite=False)


def test_a_checkpoint_set_aside_after_a_divergence_is_named_with_how_to_continue(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, iterations=(2,))
    (run / "checkpoints" / "diverged").mkdir()
    (run / "checkpoints" / "iter-00000002").rename(run / "checkpoints" / "diverged" / "iter-00000002")
    (run / "events.jsonl").write_text(json.dumps({"event": "divergence", "iteration": 3, "reason": "non-finite energies",
                                                  "action": "stop"}) + "\n")
    with pytest.raises(CheckpointError) as e:
        resumable_checkpoint(run)
    msg = str(e.value)
    assert f"no checkpoint to resume in {run / 'checkpoints'}" in msg
    assert (f"{run / 'checkpoints' / 'diverged'} holds iter-00000002, set aside when training diverged at iteration 3 "
            "(non-finite energies): its weights led to the blow-up") in msg
    assert f"mv {run / 'checkpoints' / 'diverged' / 'iter-00000002'} {run / 'checkpoints'}/" in msg and "--resume" in msg
