"""`python -m benchmarks.readme_job`: the README's main job, timed A/B.

Runs ``ebmkit train digits-cpu`` (the README's exact command, as
``python -m ebmkit train digits-cpu``) from two source trees in turn -- A, B,
A, B, ... -- each in a fresh folder, in this one driver process, so that load
from other processes hits both alike, and reports each run's wall-clock and
the per-round ratio B / A.  On a shared machine the ratios are the result;
the absolute times depend on whoever else is running.

    # A: main as it was (torch's default threads), B: this tree (threads = auto)
    python -m benchmarks.readme_job --a /tmp/main-src --b . --rounds 2
    python -m benchmarks.readme_job --a /tmp/main-src --b . --iterations 300 --rounds 3
    python -m benchmarks.readme_job ... --load 2     # with 2 busy processes beside it (a loaded machine)

A source tree is a checkout (``ebmkit/`` and ``plugins/`` in it); it is put
first on PYTHONPATH.  OMP_NUM_THREADS is removed from the runs' environment,
as on a new user's machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _busy(stop) -> None:  # pragma: no cover - a load generator
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def run_once(source: Path, args: list[str], python: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        shim = Path(tmp) / "path"
        shim.mkdir()
        (shim / "ebmkit_plugins").symlink_to(source.resolve() / "plugins")
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env["PYTHONPATH"] = os.pathsep.join([str(source.resolve()), str(shim)])
        start = time.perf_counter()
        r = subprocess.run([python, "-m", "ebmkit", "train", *args, "--out", str(Path(tmp) / "run")], cwd=tmp, env=env,
                           capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if r.returncode != 0:
            raise SystemExit(f"{source}: exit {r.returncode}\n{r.stderr[-3000:]}")
        return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme_job", description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, type=Path, help="source tree A (the baseline)")
    p.add_argument("--b", required=True, type=Path, help="source tree B")
    p.add_argument("--a-python", default=sys.executable)
    p.add_argument("--b-python", default=sys.executable)
    p.add_argument("--config", default="digits-cpu")
    p.add_argument("--iterations", type=int, default=None, help="shorter runs (default: the preset's 2,000)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--load", type=int, default=0, help="busy processes to run beside (a loaded machine)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    cmd = [args.config] + ([f"--iterations={args.iterations}"] if args.iterations else [])
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.load)]
    for h in hogs:
        h.start()
    rounds = []
    try:
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            a = run_once(args.a, cmd, args.a_python)
            b = run_once(args.b, cmd, args.b_python)
            rounds.append({"a_s": round(a, 1), "b_s": round(b, 1), "ratio_b_to_a": round(b / a, 3),
                           "load_average_before": round(load, 2)})
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        stop.set()
        for h in hogs:
            h.join(timeout=5)
    record = {"command": "python -m ebmkit train " + " ".join(cmd), "a": str(args.a), "b": str(args.b),
              "extra_busy_processes": args.load, "cores": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d"),
              "rounds": rounds, "median_ratio_b_to_a": statistics.median(r["ratio_b_to_a"] for r in rounds)}
    print(json.dumps(record))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
