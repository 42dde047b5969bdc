"""Fault injection: SIGKILL at any moment, truncated files, a full or
read-only disk.  A fault may cost the work since the last checkpoint, never
more, and it must say what happened.

The kill tests run the real command line in a subprocess (tests/fault_driver.py)
that SIGKILLs itself at a chosen line of ebmkit's code -- inside a checkpoint
write, or anywhere in the loop -- then resume it, and compare with an
uninterrupted run bit for bit.  EBMKIT_SLOW_SCALE=N adds N-1 more random kill
points.
"""

import csv
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ebmkit.checkpoint import list_checkpoints, open_checkpoint
from ebmkit.cli import main
from fault_driver import FaultTracer

TESTS = Path(__file__).parent
SCALE = int(os.environ.get("EBMKIT_SLOW_SCALE", "1"))
ROOT = TESTS.parent


# -- helpers ----------------------------------------------------------------------------


def _config(tiny, out, **training):
    """The tiny experiment with the stateful test plug-in: a persistent bank
    and a sampler whose step size adapts, so every kind of state matters."""
    return tiny(
        initializer={"name": "test-bank", "size": 48},
        sampler={"name": "test-adaptive-langevin", "steps": 4},
        training={"iterations": 12, "checkpoint_every": 3, "keep_checkpoints": 2, **training},
        output={"dir": str(out)},
    )


def _write(cfg, path):
    path.write_text(json.dumps(cfg))
    return path


def _cli(args, paths, *driver, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([*paths, str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(TESTS / "fault_driver.py"), *driver, "--", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


def assert_same_run(a: Path, b: Path):
    """Every logged number, and every tensor of the final checkpoint, equal."""
    ma, mb = _metrics(a), _metrics(b)
    assert [r["iteration"] for r in mb] == [r["iteration"] for r in ma]
    assert ma == mb
    ca, cb = open_checkpoint(list_checkpoints(a / "checkpoints")[-1]), open_checkpoint(list_checkpoints(b / "checkpoints")[-1])
    assert ca.iteration == cb.iteration
    for name in ("energy", "initializer"):
        ta, tb = ca.tensors(name), cb.tensors(name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    oa, ob = ca.object("optimizer"), cb.object("optimizer")
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), (i, k)
    assert ca.object("sampler") == cb.object("sampler")
    assert ca.state["rng"] == cb.state["rng"] and ca.state["divergence"] == cb.state["divergence"]


@pytest.fixture
def reference(tiny, tmp_path, stateful_plugin):
    """An uninterrupted run, in this process on one thread (as the
    subprocesses), counting the lines each checkpoint write executes."""
    cfg = _write(_config(tiny, tmp_path / "reference"), tmp_path / "ref.json")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FaultTracer() as tracer:
            assert main(["train", str(cfg)]) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp_path / "reference", tracer.counts()


# -- SIGKILL ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_reproduces_the_uninterrupted_run(tiny, tmp_path, stateful_plugin, reference):
    ref, counts = reference
    assert len(counts["saves"]) == 4  # iterations 3, 6, 9, 12
    cfg = _write(_config(tiny, tmp_path / "killed"), tmp_path / "killed.json")
    run = tmp_path / "killed"
    rng = random.Random(8)

    # 1. killed half-way through writing the second checkpoint (iteration 6)
    r = _cli(["train", str(cfg)], stateful_plugin, "--kill-in", f"save_checkpoint:2:{counts['saves'][1] // 2}")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["iter-00000003"]
    assert any(p.name.startswith(".iter-00000006.tmp-") for p in (run / "checkpoints").iterdir())  # the half-written one

    # 2. resumed, then killed at a random line of the training loop (N times with EBMKIT_SLOW_SCALE=N)
    for _ in range(SCALE):
        if int(list_checkpoints(run / "checkpoints")[-1].name[5:]) >= 9:
            break  # leave work for step 3
        line = rng.randrange(counts["trainer_lines"] // 5, counts["trainer_lines"] // 3)
        r = _cli(["train", str(cfg), "--resume"], stateful_plugin, "--kill-at-line", str(line))
        assert r.returncode == -signal.SIGKILL, (line, r.stderr)
        assert "resuming from" in r.stderr and ".tmp-" not in " ".join(os.listdir(run / "checkpoints"))

    # 3. resumed, then killed at the end of a checkpoint write: the new checkpoint is
    #    in place, the oldest one renamed away but not yet deleted
    r = _cli(["train", str(cfg), "--resume"], stateful_plugin, "--kill-in", "_delete:1:4")  # 4th line: the rmtree, after the rename
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert any(".trash-" in p.name for p in (run / "checkpoints").iterdir())

    # 4. resumed to the end: the same numbers as the run that was never killed
    r = _cli(["train", str(cfg), "--resume"], stateful_plugin)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["iteration"] == 12
    assert_same_run(ref, run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no leftovers


# -- truncated and corrupt files ------------------------------------------------------


@pytest.fixture(scope="module")
def full_and_cut(tmp_path_factory):
    """A 9-iteration run, and the same run stopped after 6 (checkpoints 3 and 6)."""
    from conftest import tiny_config

    root = tmp_path_factory.mktemp("truncated")
    runs = {}
    for name, iterations in (("full", 9), ("cut", 6)):
        cfg = tiny_config(root, training={"iterations": iterations, "checkpoint_every": 3}, output={"dir": str(root / name)})
        assert main(["train", str(_write(cfg, root / f"{name}.json"))]) == 0
        runs[name] = root / name
    return runs


@pytest.mark.parametrize("victim", ["energy.safetensors", "optimizer.pt", "rng.safetensors", "state.json"])
def test_a_truncated_checkpoint_file_falls_back_to_the_previous_checkpoint(tiny, tmp_path, capsys, full_and_cut, victim):
    run = tmp_path / "cut"
    shutil.copytree(full_and_cut["cut"], run)
    f = run / "checkpoints" / "iter-00000006" / victim
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    capsys.readouterr()

    cfg = _write(tiny(training={"iterations": 9, "checkpoint_every": 3}, output={"dir": str(run)}), tmp_path / "c.json")
    assert main(["train", str(cfg), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "ebmkit: warning: " in err and "iter-00000006" in err and "falling back to the previous checkpoint" in err
    assert ("is corrupt" in err) if victim == "state.json" else (f"{victim} does not match its checksum" in err)
    assert "resuming from" in err and "iter-00000003 (iteration 3)" in err
    assert _metrics(full_and_cut["full"]) == _metrics(run)


def test_every_checkpoint_corrupt_is_an_error_not_a_silent_restart(tiny, tmp_path, capsys):
    cfg = _write(tiny(training={"iterations": 4, "checkpoint_every": 2}), tmp_path / "c.json")
    assert main(["train", str(cfg)]) == 0
    run = Path(json.loads(capsys.readouterr().out)["run_dir"])
    for ck in list_checkpoints(run / "checkpoints"):
        (ck / "energy.safetensors").write_bytes(b"\0" * 10)
    before = (run / "metrics.csv").read_text()
    assert main(["train", str(cfg), "--resume", "--iterations", "6"]) == 2
    err = capsys.readouterr().err
    assert "error: no valid checkpoint under" in err and "every one failed its checks" in err
    assert (run / "metrics.csv").read_text() == before  # nothing was thrown away


def test_a_half_written_metrics_row_is_dropped_on_resume(tiny, tmp_path):
    cfg = _write(tiny(training={"iterations": 6, "checkpoint_every": 3}), tmp_path / "c.json")
    assert main(["train", str(cfg), "--iterations", "4"]) == 0  # checkpoints 3 and 4
    run = tmp_path / "run"
    shutil.rmtree(run / "checkpoints" / "iter-00000004")
    with open(run / "metrics.csv", "a") as f:
        f.write("1")  # a kill while iteration 1x's row was being written
    assert main(["train", str(cfg), "--resume"]) == 0
    assert [int(r["iteration"]) for r in _metrics(run)] == [1, 2, 3, 4, 5, 6]


# -- a full disk, an unwritable folder ----------------------------------------------


def test_a_full_disk_stops_the_run_clearly_and_keeps_the_last_checkpoint(tiny, tmp_path, capsys):
    cfg = _write(tiny(training={"iterations": 9, "checkpoint_every": 3}), tmp_path / "c.json")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.getsignal(signal.SIGXFSZ)
    try:  # after the first checkpoint no file may grow past 4 KiB: the next write fails with EFBIG
        with FaultTracer(fsize_after_saves=(1, 4096)):
            rc = main(["train", str(cfg)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error: could not write checkpoint" in err and "iter-00000006" in err
    assert "File too large (the disk is full or a size limit was reached)" in err
    assert "earlier checkpoints are untouched:" in err and "iter-00000003" in err
    run = tmp_path / "run"
    assert open_checkpoint(run / "checkpoints" / "iter-00000003").iteration == 3  # intact, checksums pass
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter-00000003"]  # no half-written folder
    assert main(["train", str(cfg), "--resume"]) == 0  # space is back: carry on


def _make_unwritable(path: Path) -> bool:
    """chmod a-w, and for root (whom chmod does not stop) the immutable flag."""
    path.chmod(0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    probe = path / ".probe"
    try:
        probe.mkdir()
    except OSError:
        return True
    probe.rmdir()
    return False


def _make_writable(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


def test_an_unwritable_checkpoint_folder_stops_the_run_and_keeps_the_last_checkpoint(tiny, tmp_path, capsys, monkeypatch):
    import ebmkit.run_state

    cfg = _write(tiny(training={"iterations": 9, "checkpoint_every": 3}), tmp_path / "c.json")
    ckdir = tmp_path / "run" / "checkpoints"
    real = ebmkit.run_state.save_checkpoint
    locked = []

    def save_then_lock(directory, *args, **kw):
        path = real(directory, *args, **kw)
        locked.append(_make_unwritable(Path(directory)))
        return path

    monkeypatch.setattr(ebmkit.run_state, "save_checkpoint", save_then_lock)
    try:
        rc = main(["train", str(cfg)])
    finally:
        _make_writable(ckdir)
    if not locked[0]:
        pytest.skip("cannot make a folder unwritable here (root without chattr)")
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: could not write checkpoint" in err and "(the folder is not writable)" in err
    assert "earlier checkpoints are untouched:" in err and "iter-00000003" in err
    assert [p.name for p in ckdir.iterdir()] == ["iter-00000003"]
    assert open_checkpoint(ckdir / "iter-00000003").iteration == 3


def test_an_unwritable_run_folder_is_a_clear_error(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = _write(tiny(), tmp_path / "c.json")
    try:
        if not _make_unwritable(run):
            pytest.skip("cannot make a folder unwritable here (root without chattr)")
        rc = main(["train", str(cfg)])
    finally:
        _make_writable(run)
    err = capsys.readouterr().err
    assert rc == 2 and "error: cannot write" in err and ".lock" in err  # the first write: taking the lock
    assert "is the disk full or the run folder read-only?" in err and "Traceback" not in err


# -- leftovers of a killed writer -------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_writer_are_tidied_or_put_back(tmp_path):
    from ebmkit.checkpoint import recover_interrupted, save_checkpoint

    def save(it, value):
        return save_checkpoint(tmp_path, it, modules={"energy": {"w": torch.full((2,), value)}})

    save(1, 1.0)
    save(2, 2.0)
    dead = _dead_pid()
    # killed mid-swap while re-saving iteration 2: the old copy was moved aside, the new one not yet in place
    (tmp_path / "iter-00000002").rename(tmp_path / f".iter-00000002.old-{dead}")
    (tmp_path / f".iter-00000003.tmp-{dead}").mkdir()  # killed while writing iteration 3
    (tmp_path / f".iter-00000001.trash-{dead}").mkdir()  # killed while deleting an old checkpoint
    (tmp_path / f".iter-00000004.tmp-{os.getpid()}").mkdir()  # a live writer's: not ours to touch
    done = recover_interrupted(tmp_path)
    assert len(done) == 3 and any("restored iter-00000002" in d for d in done)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".iter-00000004.tmp-{os.getpid()}", "iter-00000001", "iter-00000002"]
    assert torch.equal(open_checkpoint(tmp_path / "iter-00000002").tensors("energy")["w"], torch.full((2,), 2.0))

    # re-saving an iteration swaps whole folders; keep-N leaves nothing behind
    shutil.rmtree(tmp_path / f".iter-00000004.tmp-{os.getpid()}")
    save(2, 5.0)
    assert torch.equal(open_checkpoint(tmp_path / "iter-00000002").tensors("energy")["w"], torch.full((2,), 5.0))
    save(3, 3.0)
    save_checkpoint(tmp_path, 4, modules={"energy": {"w": torch.zeros(2)}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter-00000003", "iter-00000004"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_atomic_write_replaces_whole_files_and_cleans_dead_temporaries(tmp_path):
    from ebmkit.checkpoint import atomic_write

    target = tmp_path / "metrics.csv"
    target.write_text("old\n")
    (tmp_path / ".metrics.csv.tmp-999999").write_text("half")  # from a writer killed mid-rewrite
    atomic_write(target, b"new\n")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
