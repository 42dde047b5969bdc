"""Training throughput against the process count (data-parallel, this machine).

    python -m benchmarks.distributed_throughput [--iterations 20] [--repeats 3] [--with-threads] [--out FILE.json]

Runs ``ebmkit train CONFIG --num-processes N`` -- the real command, through
torch.distributed's launcher, gloo on CPU -- for a small digits config and
reports training samples per second (global batch x iterations / seconds),
timed from the metrics the run itself writes (iterations 2..T, so start-up,
data loading and the first, warm-up iteration are excluded).

Settings, run round-robin ``--repeats`` times (the median is reported), so a
machine shared with other jobs disturbs each setting alike:

* 1 process, 1 thread, batch b
* 1 process, 1 thread, batch 2b (the 2-process run's global batch)
* 2 processes x 1 thread, batch b each (global batch 2b)
* with ``--with-threads``: 1 process, 2 threads, batch 2b (the other way to
  use two cores; on a contended machine OpenMP threads that wait on each
  other can be far slower than one thread)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = {
    "data": {"name": "digits", "image_size": 16},
    "energy": {"name": "convnet", "nf": 32},
    "initializer": {"name": "uniform"},
    "sampler": {"name": "langevin", "steps": 20, "step_size": 1.0, "noise": 0.01},
    "objective": {"name": "maximum-likelihood", "data_noise": 0.03},
    "optimizer": {"name": "adam", "lr": 1e-4},
    "training": {"batch_size": 32, "sample_every": 0, "checkpoint_every": 0, "progress": False, "device": "cpu"},
    "output": {"grid_size": 4},
}


def run_once(config: Path, out: Path, processes: int, threads: int, batch: int, iterations: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ebmkit", "train", str(config), "--out", str(out), "--iterations", str(iterations),
           "--set", f"training.batch_size={batch}"]
    if processes > 1:
        cmd += ["--num-processes", str(processes)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    seconds = float(rows[-1]["time"]) - float(rows[0]["time"])
    global_batch = int(rows[-1]["global_batch"])
    return {"seconds": seconds, "global_batch": global_batch,
            "samples_per_s": global_batch * (len(rows) - 1) / seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--with-threads", action="store_true", help="add 1 process x 2 threads, batch 2b")
    p.add_argument("--batch", type=int, default=32, help="b, the batch per process")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    b = args.batch
    settings = [  # (label, processes, threads per process, batch per process)
        ("1 process x 1 thread, batch b", 1, 1, b),
        ("1 process x 1 thread, batch 2b", 1, 1, 2 * b),
        ("2 processes x 1 thread, batch b each", 2, 1, b),
    ] + ([("1 process x 2 threads, batch 2b", 1, 2, 2 * b)] if args.with_threads else [])
    results: dict[str, list[dict]] = {s[0]: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(CONFIG))
        for rep in range(args.repeats):
            for i, (label, procs, threads, batch) in enumerate(settings):
                r = run_once(config, Path(tmp) / f"run-{rep}-{i}", procs, threads, batch, args.iterations)
                results[label].append(r)
                print(f"[{rep + 1}/{args.repeats}] {label}: {r['samples_per_s']:.1f} samples/s", file=sys.stderr)
    base = statistics.median(r["samples_per_s"] for r in results[settings[0][0]])
    table = []
    for label, procs, threads, batch in settings:
        rate = statistics.median(r["samples_per_s"] for r in results[label])
        table.append({"setting": label, "processes": procs, "threads_per_process": threads,
                      "global_batch": batch * procs, "samples_per_s": round(rate, 1),
                      "vs_first": round(rate / base, 2), "runs": [round(r["samples_per_s"], 1) for r in results[label]]})
    meta = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
            "command": "python -m benchmarks.distributed_throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
            "config": CONFIG, "iterations": args.iterations, "repeats": args.repeats, "b": b,
            "load_average_at_end": os.getloadavg()}
    print(f"| setting | global batch | samples/s (median of {args.repeats}) | vs first row |")
    print("|---|---|---|---|")
    for row in table:
        print(f"| {row['setting']} | {row['global_batch']} | {row['samples_per_s']} | {row['vs_first']} |")
    print(json.dumps(meta))
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
