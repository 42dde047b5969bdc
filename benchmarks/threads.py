"""`python -m benchmarks.threads`: where more CPU threads stop paying.

For a ladder of workloads (the paper's ConvNet at growing image size, width
and batch) it times one short-run chain -- ``langevin`` from the registry, the
code the trainer runs -- with 1 thread and with every larger count up to the
machine's cores.  Each round runs every thread count once, in a rotating
order, in this one process, so load from other processes hits them alike;
the table reports the median over rounds of the per-round ratio
time(n threads) / time(1 thread) (below 1: more threads pay) beside the
workload's size in forward FLOPs per batch, the number that
``performance.threads = "auto"`` decides on (:func:`ebmkit.performance.choose_threads`).
Absolute times on a shared machine mean little; the ratios are the result.

    python -m benchmarks.threads                 # the standard ladder (a few minutes)
    python -m benchmarks.threads --quick         # tiny, seconds (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import ebmkit
from ebmkit.performance import forward_flops, usable_cores

# (channels, image size, nf, batch): the CPU presets first, then larger nets.
LADDER = [
    (1, 8, 32, 32),     # digits-cpu (the README's main job)
    (1, 16, 16, 32),    # mnist5k-cpu
    (3, 16, 16, 32),    # patches-cpu
    (1, 32, 32, 64),
    (3, 32, 32, 64),    # the paper's 32-px net
    (3, 32, 64, 64),
]


def time_chain(energy, sampler, z, threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    sampler.run(energy, z)
    return time.perf_counter() - start


def measure(ladder, *, steps: int, rounds: int, counts: list[int]) -> list[dict]:
    rows = []
    sampler = ebmkit.create_sampler("langevin", steps=steps, step_size=1.0, noise=0.01)
    for channels, size, nf, batch in ladder:
        shape = (channels, size, size)
        torch.manual_seed(0)
        energy = ebmkit.create_energy("convnet", shape, nf=nf).eval()
        z = torch.rand(batch, *shape) * 2 - 1
        for n in counts:  # warm-up: oneDNN primitives, allocator
            time_chain(energy, sampler, z, n)
        ratios: dict[int, list[float]] = {n: [] for n in counts if n != 1}
        for r in range(rounds):
            order = counts[r % len(counts):] + counts[:r % len(counts)]
            times = {n: time_chain(energy, sampler, z, n) for n in order}
            for n in ratios:
                ratios[n].append(times[n] / times[1])
        rows.append({"channels": channels, "image_size": size, "nf": nf, "batch": batch,
                     "forward_flops_per_batch": forward_flops(energy, shape, batch),
                     "ratio_to_1_thread": {str(n): round(statistics.median(v), 3) for n, v in ratios.items()},
                     "ratios_per_round": {str(n): [round(x, 3) for x in v] for n, v in ratios.items()}})
        print(json.dumps(rows[-1]["ratio_to_1_thread"]), f"{channels}x{size}x{size} nf={nf} batch={batch}",
              f"{rows[-1]['forward_flops_per_batch'] / 1e6:.1f} MFLOP/batch", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="K of each timed chain")
    p.add_argument("--quick", action="store_true", help="two tiny workloads, 2 rounds (tests)")
    p.add_argument("--out", default="benchmarks/results/threads.json")
    args = p.parse_args(argv)
    cores = usable_cores()
    counts = list(range(1, max(2, cores) + 1))
    ladder = LADDER[:2] if args.quick else LADDER
    rows = measure(ladder, steps=2 if args.quick else args.steps, rounds=2 if args.quick else args.rounds, counts=counts)
    record = {"command": "python -m benchmarks.threads" + (" --quick" if args.quick else ""), "cores": cores,
              "load_average_at_start": os.getloadavg()[0], "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
