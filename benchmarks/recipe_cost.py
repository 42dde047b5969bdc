"""What the retuned digits-cpu recipe costs against the one it replaced,
measured side by side in one process (docs/quality.md, README).

    OMP_NUM_THREADS=1 python -m benchmarks.recipe_cost [--rounds 5] [--iterations 60]

Both trainers are built from the preset (the old recipe by overrides: nf 32,
lr 1e-4, no schedule, 2,000 iterations) and driven alternately, ``rounds``
rounds of ``iterations`` iterations each, on one thread; the medians give the
cost per iteration and the ratio of whole runs.  Ratios hold on a loaded
machine where absolute times do not.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

COMMON = ["training.progress=false", "training.sample_every=0", "training.checkpoint_every=0", "evaluation.every=0"]
OLD = ["energy.nf=32", "optimizer.lr=1e-4", 'optimizer.schedule.decay="none"', "training.iterations=2000"]


def main(argv: list[str] | None = None) -> int:
    from ebmkit.cli import resolve_config_path
    from ebmkit.config import load_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    p = argparse.ArgumentParser(prog="python -m benchmarks.recipe_cost", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=60)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="recipe-cost-")
    cfgs = {"new": load_config(resolve_config_path("digits-cpu"), [*COMMON, f'output.dir="{out}/new"']),
            "old": load_config(resolve_config_path("digits-cpu"), [*COMMON, *OLD, f'output.dir="{out}/old"'])}
    trainers = {k: Trainer(build_experiment(c)) for k, c in cfgs.items()}
    batches = {k: t.batches() for k, t in trainers.items()}
    times: dict[str, list[float]] = {"new": [], "old": []}
    for r in range(a.rounds):
        for k in ("old", "new") if r % 2 else ("new", "old"):
            t0 = time.perf_counter()
            for _ in range(a.iterations):
                trainers[k].iterate(next(batches[k]))
            times[k].append((time.perf_counter() - t0) / a.iterations)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    runs = {k: med[k] * cfgs[k].training.iterations for k in med}
    print(json.dumps({"s_per_iteration": med, "iteration_ratio_new_over_old": med["new"] / med["old"],
                      "run_ratio_new_over_old": runs["new"] / runs["old"], "rounds": a.rounds, "iterations": a.iterations}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
