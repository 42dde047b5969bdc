"""Kill -9 a training run at random moments, resume it, compare with a run
that was never killed.  A reliability check, not a speed benchmark.

    python -m benchmarks.kill_resume --config digits-cpu --iterations 120 --kills 3

1. ``ebmkit train CONFIG`` runs uninterrupted into OUT/reference.
2. The same command runs into OUT/killed; at a random moment (after a random
   iteration, plus a random fraction of an iteration, so that some kills land
   inside checkpoint writes) it gets SIGKILL from outside, and is restarted
   with ``--resume``; ``--kills`` times, then it runs to the end.
3. Every row of metrics.csv (all columns but wall-clock ``time``) and every
   tensor of the final checkpoint (energy, initializer, optimiser state) are
   compared.  Prints a JSON summary; exit status 1 if anything differs.

Both runs use one CPU thread (OMP_NUM_THREADS=1), as bit-exact comparisons need.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ebmkit.checkpoint import find_checkpoint


def _cmd(args, out: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "ebmkit", "train", args.config, "--out", str(out), "--iterations", str(args.iterations),
           "--set", f"training.checkpoint_every={args.checkpoint_every}", "--set", "training.sample_every=0",
           "--set", "training.progress=false", *sum((["--set", s] for s in args.set), [])]
    return cmd + (["--resume"] if resume else [])


def _rows(run: Path) -> list[dict]:
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values()]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="digits-cpu")
    p.add_argument("--iterations", type=int, default=120)
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", default="runs/kill-resume")
    args = p.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    subprocess.run(_cmd(args, out / "reference"), env=_env(), check=True, capture_output=True)
    per_iteration = (time.perf_counter() - t0) / args.iterations

    killed, kills = out / "killed", []
    for k in range(args.kills + 1):
        proc = subprocess.Popen(_cmd(args, killed, resume=k > 0), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if k == args.kills:
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                print(stderr, file=sys.stderr)
                return 1
            break
        done = int(_rows(killed)[-1]["iteration"]) if _rows(killed) else 0
        target = rng.randrange(done + 1, args.iterations)
        while proc.poll() is None and (not _rows(killed) or int(_rows(killed)[-1]["iteration"]) < target):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, per_iteration))
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate()
        last = int(_rows(killed)[-1]["iteration"]) if _rows(killed) else 0
        try:
            resumes_at = find_checkpoint(killed).iteration
        except Exception:  # noqa: BLE001 - no checkpoint yet: the resume starts from 0
            resumes_at = 0
        leftovers = sorted(q.name for q in (killed / "checkpoints").iterdir() if q.name.startswith(".")) \
            if (killed / "checkpoints").exists() else []
        kills.append({"killed_after_iteration": last, "returncode": proc.returncode, "resumes_from": resumes_at,
                      "iterations_lost": last - resumes_at, "temporary_folders_left": leftovers})

    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    a, b = strip(_rows(out / "reference")), strip(_rows(killed))
    ca, cb = find_checkpoint(out / "reference"), find_checkpoint(killed)
    tensors_equal = {}
    for name in ("energy", "initializer"):
        ta, tb = ca.tensors(name), cb.tensors(name)
        tensors_equal[name] = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    oa, ob = ca.object("optimizer"), cb.object("optimizer")
    tensors_equal["optimizer"] = all(torch.equal(v, ob["state"][i][k]) for i in oa["state"] for k, v in oa["state"][i].items())
    summary = {
        "config": args.config, "iterations": args.iterations, "checkpoint_every": args.checkpoint_every,
        "overrides": args.set, "kills": kills,
        "metrics_rows": [len(a), len(b)], "metrics_identical": a == b,
        "final_checkpoint": [ca.iteration, cb.iteration], "tensors_identical": tensors_equal,
        "seconds_per_iteration_reference": round(per_iteration, 3),
    }
    print(json.dumps(summary, indent=1))
    return 0 if a == b and all(tensors_equal.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
