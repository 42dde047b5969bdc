"""SIGINT / SIGTERM during training: the iteration in progress finishes, a
checkpoint of it is written, the message says how to resume, the exit status
is 130 / 143; --resume continues from there.  A second signal stops at once."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebmkit.checkpoint import list_checkpoints, open_checkpoint
from ebmkit.interrupts import StopNow, StopRequest

ROOT = Path(__file__).resolve().parents[1]


def test_the_first_signal_asks_the_second_stops(capsys):
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(StopNow) as e:
            os.kill(os.getpid(), signal.SIGINT)
    assert e.value.exit_code == 130
    assert "SIGTERM received: finishing this iteration and writing a checkpoint" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def _rows(run: Path) -> int:
    try:
        with open(run / "metrics.csv", newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except (FileNotFoundError, ValueError):
        return 0


def _start(cfg_path: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "ebmkit", "train", str(cfg_path), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(proc, run: Path, n: int = 1, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _rows(run) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not log an iteration in time"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_the_iteration_reached_and_resume_continues(tiny, tmp_path, sig, code):
    run = tmp_path / "run"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny(training={"iterations": 100000, "checkpoint_every": 0, "sample_every": 0})))
    proc = _start(cfg)
    _wait_for_rows(proc, run)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    reached = _rows(run)
    assert reached >= 1
    (ckpt,) = list_checkpoints(run / "checkpoints")
    assert open_checkpoint(ckpt).iteration == reached  # the iteration in progress finished and was saved
    name = signal.Signals(sig).name
    assert f"ebmkit: {name} received: finishing this iteration and writing a checkpoint" in err
    assert f"ebmkit train: stopped by {name} after iteration {reached}; checkpoint {ckpt} written." in err
    assert f"To continue: ebmkit train {cfg} --out {run} --resume" in err
    assert not (run / ".lock").exists()

    r = subprocess.run([sys.executable, "-m", "ebmkit", "train", str(cfg), "--out", str(run), "--resume",
                        "--iterations", str(reached + 2)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    assert f"resuming from {ckpt} (iteration {reached})" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["iteration"] == reached + 2
    assert _rows(run) == reached + 2


def test_a_second_sigint_stops_at_once(tiny, tmp_path):
    run = tmp_path / "run"
    cfg = tmp_path / "c.json"
    # long iterations (many Langevin steps), so that the second signal lands inside one
    cfg.write_text(json.dumps(tiny(sampler={"steps": 3000}, training={"iterations": 1000, "checkpoint_every": 0,
                                                                        "sample_every": 0})))
    proc = _start(cfg)
    _wait_for_rows(proc, run)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "ebmkit train: interrupted" in err
    assert list_checkpoints(run / "checkpoints") == []  # no checkpoint of the iteration cut short
    assert not (run / ".lock").exists()
