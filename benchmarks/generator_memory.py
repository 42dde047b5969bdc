"""Peak memory and time of reconstruction with and without gradient checkpointing.

    python -m benchmarks.generator_memory --size 32 --nf 32 --steps 100 --batch 8

Each setting runs in its own process (so that the peak resident set size,
``ru_maxrss``, belongs to that setting alone) and does ``--iterations`` steps of
:meth:`ebmkit.generation.generator.ShortRunGenerator.reconstruct` with the paper's ConvNet
energy (random weights: memory does not depend on training).  Reported: the
peak RSS minus the RSS just before reconstructing (the memory the chain's
graph needs), on CUDA also ``torch.cuda.max_memory_allocated``, and seconds
per iteration.  Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def release_free_heap() -> None:
    """Hand freed heap back to the OS (glibc), so that RSS before the run is honest."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def one(args: argparse.Namespace) -> dict:
    import torch

    from ebmkit import create_energy, create_initializer, create_sampler
    from ebmkit.generation.generator import ShortRunGenerator

    torch.manual_seed(0)
    shape = (args.channels, args.size, args.size)
    device = torch.device(args.device)
    energy = create_energy("convnet", shape, nf=args.nf).to(device)
    gen = ShortRunGenerator(energy, create_sampler("langevin", steps=args.steps, step_size=1.0, noise=0.01),
                            create_initializer("uniform", shape).to(device), shape)
    x = torch.rand(args.batch, *shape, device=device) * 2 - 1
    # Warm up kernels and lazy imports (the optimiser's) on a 1-step chain, whose
    # small graph leaves little freed heap behind for the measured run to reuse.
    z = gen.sample_z(1).requires_grad_(True)
    torch.optim.Adam([z])  # its first use imports torch._dynamo
    gen.map(z, keep_graph=True, steps=1, checkpoint_every=args.checkpoint_every).sum().backward()
    release_free_heap()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss_mib()
    start = time.perf_counter()
    rec = gen.reconstruct(x, iterations=args.iterations, checkpoint_every=args.checkpoint_every)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.iterations
    out = {"checkpoint_every": args.checkpoint_every, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_mib": before, "seconds_per_iteration": seconds, "final_mse": rec.mse_per_pixel}
    out["extra_peak_mib"] = out["peak_rss_mib"] - before
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--nf", type=int, default=32)
    p.add_argument("--steps", type=int, default=100, help="K")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--every", type=int, nargs="+", default=[0, 1, 10], help="checkpoint_every values (0: no checkpointing)")
    p.add_argument("--out", default="benchmarks/results/generator_memory.json")
    p.add_argument("--checkpoint-every", type=int, default=None, help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.checkpoint_every is not None:
        print(json.dumps(one(args)))
        return 0
    rows = []
    for every in args.every:
        child = [sys.executable, "-m", "benchmarks.generator_memory", *(argv if argv is not None else sys.argv[1:]),
                 "--checkpoint-every", str(every)]
        r = subprocess.run(child, capture_output=True, text=True)
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return r.returncode
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    record = {"setting": {k: getattr(args, k) for k in ("size", "channels", "nf", "steps", "batch", "iterations", "device")},
              "rows": rows, "machine": platform.platform(), "python": platform.python_version(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
              "command": "python -m benchmarks.generator_memory " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
