"""`python -m benchmarks.speed` (or `python -m benchmarks.run speed`): how fast the Langevin loop runs.

Image-steps per second (chains x steps / seconds) of the toolkit's sampler --
``langevin`` from the registry, the code the trainer runs -- side by side with

* (a) the short-run paper's appendix loop, written exactly as published
  (weights trainable, ``retain_graph=True``, ``x.data +=``), the baseline
  of every ratio;
* (b) the Langevin samplers of the PyPI packages ``torchebm`` and ``ebmkit``
  (import name ``ebm``; install with ``pip install shortrun-ebm[bench]``),
  on the same network with the same weights;
* the toolkit with each optimisation switched off in turn (ablation rows).

Every contender runs once per round, in a rotating order, so that load from
other processes hits them alike; each row reports the median over rounds and
the median of the per-round ratios to (a).  Achieved FLOP/s count the
convolutions the algorithm needs (counted once, with
``torch.utils.flop_counter``, on the plain autograd loop) over the measured
time, against the best square fp32 matmul measured in the same run.  A
second table does the same for a whole training iteration (``Trainer.step``).

    python -m benchmarks.speed --threads 2            # the standard run (a few minutes)
    python -m benchmarks.speed --quick                # tiny sizes, seconds (tests)
    python -m benchmarks.speed --nf 32 --rounds 9 --steps 10 --out benchmark-results/speed-nf32
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, field_validator

import ebmkit
from ebmkit.errors import ConfigError, validated

from .harness import Table, run_metadata, settings_with_overrides, write_json
from .suites import SuiteArgs, register_suite


class SpeedSettings(BaseModel):
    """The suite's settings; ``--set key=value`` through :func:`benchmarks.harness.settings_with_overrides`
    (``nf`` also as a comma-separated list, ``--set nf=32,64``)."""

    model_config = ConfigDict(extra="forbid")
    nf: tuple[int, ...] = (32, 64)
    image_size: int = 32
    channels: int = 3
    batch: int = 64
    steps: int = 5  # K per timed chain; image-steps/s does not depend on it beyond the per-chain set-up
    rounds: int = 5
    threads: int | None = None
    peers: bool = True
    train: bool = True
    seed: int = 0

    @field_validator("nf", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(int(w) for w in v.split(","))
        return tuple(v) if isinstance(v, list) else v  # validated strictly after this: a list is not a tuple

    @classmethod
    def quick(cls) -> "SpeedSettings":
        return cls(nf=(4,), image_size=8, channels=1, batch=4, steps=2, rounds=2)


# -- the contenders ------------------------------------------------------------------------

Contender = Callable[[torch.Tensor], Any]


def paper_loop(energy: torch.nn.Module, K: int) -> Contender:
    """The appendix's ``sample_q`` verbatim (``t`` = torch); its ``f`` is the
    negative energy, so f = -U on our network."""
    t = torch
    f = lambda x: -energy(x)  # noqa: E731

    def sample_q(z: torch.Tensor) -> torch.Tensor:
        x_k = t.autograd.Variable(z, requires_grad=True)
        for k in range(K):
            f_prime = t.autograd.grad(f(x_k).sum(), [x_k], retain_graph=True)[0]
            x_k.data += f_prime + 1e-2 * t.randn_like(x_k)
        return x_k.detach()

    return sample_q


def toolkit(energy: torch.nn.Module, K: int, **params: Any) -> Contender:
    sampler = ebmkit.create_sampler("langevin", steps=K, step_size=1.0, noise=0.01, **params)
    return lambda z: sampler.run(energy, z).x


def torchebm_loop(energy: torch.nn.Module, K: int) -> Contender:
    from torchebm.core import BaseModel
    from torchebm.samplers import LangevinDynamics

    class Wrapped(BaseModel):
        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    # torchebm adds sqrt(2 * step) * noise_scale * N(0, I): noise sd 0.01 at step 1
    sampler = LangevinDynamics(Wrapped(energy), step_size=1.0, noise_scale=0.01 / math.sqrt(2.0))
    return lambda z: sampler.sample(x=z, n_steps=K)


def ebm_loop(energy: torch.nn.Module, K: int) -> Contender:
    from ebm.samplers.langevin import LangevinDynamics

    sampler = LangevinDynamics(step_size=1.0, steps=K, noise_scale=0.01)
    return lambda z: sampler.sample(energy, z)


@dataclass
class Row:
    key: str
    label: str
    kind: str  # baseline | toolkit | ablation | peer
    make: Callable[[torch.nn.Module, int], Contender]
    channels_last_weights: bool = False  # the row's network stored channels_last ([performance] channels_last)


ROWS: tuple[Row, ...] = (
    Row("paper", "(a) paper appendix loop", "baseline", paper_loop),
    Row("toolkit", "ebmkit langevin (default: fast=true, channels_last auto)", "toolkit", toolkit),
    Row("frozen", "ebmkit fast=false: frozen weights, x-only grads, in place", "ablation",
        lambda e, K: toolkit(e, K, fast=False, channels_last=False)),
    Row("frozen_cl", "  + channels_last (chain and weights), autograd", "ablation",
        lambda e, K: toolkit(e, K, fast=False, channels_last=True), channels_last_weights=True),
    Row("analytic", "  + written-out input gradient, no channels_last", "ablation",
        lambda e, K: toolkit(e, K, fast=True, channels_last=False)),
    Row("torchebm", "(b) torchebm LangevinDynamics", "peer", torchebm_loop),
    Row("ebm", "(b) ebmkit (PyPI, `ebm`) LangevinDynamics", "peer", ebm_loop),
)


def build_energy(s: SpeedSettings, nf: int, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(s.seed)
    energy = ebmkit.create_energy("convnet", (s.channels, s.image_size, s.image_size), nf=nf)
    return energy.to(memory_format=torch.channels_last) if channels_last else energy


# -- measuring -------------------------------------------------------------------------------


def matmul_peak(threads: int, seconds: float = 3.0, sizes: tuple[int, ...] = (1024, 2048)) -> dict[str, float]:
    """Best fp32 GFLOP/s of square matmuls: the machine's practical limit.

    ``gflops`` is per wall-clock second, ``gflops_cpu`` per second of this
    process's CPU time divided by the thread count (what the cores deliver
    while they run this process; on a shared machine the wall clock also
    counts waiting for a core)."""
    best, best_cpu, per_size = 0.0, 0.0, {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        wall, cpu, deadline = [], [], time.perf_counter() + seconds / len(sizes)
        while time.perf_counter() < deadline or len(wall) < 3:
            c0, t0 = time.process_time(), time.perf_counter()
            a @ b
            wall.append(time.perf_counter() - t0)
            cpu.append((time.process_time() - c0) / threads)
        per_size[n] = 2 * n**3 / min(wall) / 1e9
        best = max(best, per_size[n])
        # median, not min: the kernel adds other threads' CPU time only at scheduler ticks,
        # so the shortest readings undercount when more than one thread runs
        best_cpu = max(best_cpu, 2 * n**3 / max(statistics.median(cpu), 1e-9) / 1e9)
    return {"gflops": best, "gflops_cpu": best_cpu, **{f"gflops_n{n}": v for n, v in per_size.items()}, "threads": threads}


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def step_flops(energy: torch.nn.Module, z: torch.Tensor) -> int:
    """FLOPs of one Langevin step on batch z: U forward plus the input
    gradient, weights frozen.  (FlopCounterMode cannot watch
    ``autograd.grad`` on a leaf, so this uses ``backward`` on a frozen net.)"""
    from ebmkit.sampling import frozen

    x = z.clone().requires_grad_(True)
    with frozen(energy):
        return count_flops(lambda: energy(x).sum().backward())


def objective_flops(trainer: Any, x: torch.Tensor) -> int:
    """FLOPs of the trainer's loss and its backward pass (the part of a step after the chain)."""
    energy = trainer.energy
    neg = torch.rand_like(x) * 2 - 1

    def run() -> None:
        trainer.objective(energy, x, neg).loss.backward()

    flops = count_flops(run)
    energy.zero_grad(set_to_none=True)
    return flops


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, baseline: str) -> dict[str, dict[str, float]]:
    """Time every fn once per round, in a rotating order; medians and paired ratios to ``baseline``.

    Both wall-clock and process CPU time are kept: on a machine shared with
    other busy processes the wall clock also counts the time this process
    waited for a core, the CPU time does not (with one thread it is the time
    an idle core would take)."""
    names = list(fns)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for fn in fns.values():  # warm-up (oneDNN primitive caches, allocator)
        fn()
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[n]()
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    out = {}
    for n in names:
        ratios = [b / t for b, t in zip(wall[baseline], wall[n])]
        cpu_ratios = [b / t for b, t in zip(cpu[baseline], cpu[n])]
        out[n] = {"seconds": statistics.median(wall[n]), "ratio": statistics.median(ratios),
                  "ratio_min": min(ratios), "ratio_max": max(ratios), "times": wall[n],
                  "cpu_seconds": statistics.median(cpu[n]), "cpu_ratio": statistics.median(cpu_ratios), "cpu_times": cpu[n]}
    return out


def sampler_table(s: SpeedSettings, nf: int, peak: dict[str, float], log: Callable[[str], None]) -> list[dict[str, Any]]:
    K, shape = s.steps, (s.batch, s.channels, s.image_size, s.image_size)
    z = torch.rand(shape) * 2 - 1
    fns, skipped = {}, {}
    for row in ROWS:
        if row.kind == "peer" and not s.peers:
            skipped[row.key] = "not run (--no-peers)"
            continue
        try:
            fn = row.make(build_energy(s, nf, row.channels_last_weights), K)
            fn(z)  # fails here, not mid-measurement, when a peer cannot run
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            skipped[row.key] = f"cannot run: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            log(f"nf={nf}: {row.key} {skipped[row.key]}")
            continue
        fns[row.key] = lambda fn=fn: fn(z.clone())
    flops_per_chain = K * step_flops(build_energy(s, nf), z)
    log(f"nf={nf}: {len(fns)} contenders x {s.rounds} rounds, batch {s.batch}, K={K}, "
        f"{flops_per_chain / (s.batch * K) / 1e6:.1f} MFLOP per image-step")
    timed = interleaved(fns, s.rounds, "paper")
    rows = []
    for row in ROWS:
        base = {"nf": nf, "contender": row.label, "key": row.key, "kind": row.kind}
        if row.key not in timed:
            rows.append({**base, "note": skipped.get(row.key, "")})
            continue
        m = timed[row.key]
        gflops = flops_per_chain / m["seconds"] / 1e9
        gflops_cpu = flops_per_chain / (m["cpu_seconds"] / torch.get_num_threads()) / 1e9
        rows.append({**base, "image_steps_per_s": s.batch * K / m["seconds"], "ratio_to_a": m["ratio"],
                     "ratio_range": f"{m['ratio_min']:.2f}-{m['ratio_max']:.2f}", "gflops": gflops,
                     "pct_of_peak": 100 * gflops / peak["gflops"], "gflops_cpu": gflops_cpu,
                     "pct_of_cpu_peak": 100 * gflops_cpu / peak["gflops_cpu"],
                     "image_steps_per_cpu_s": s.batch * K / m["cpu_seconds"],
                     "cpu_ratio_to_a": m["cpu_ratio"], "note": "", "seconds": m["times"], "cpu_seconds": m["cpu_times"]})
    return rows


# -- a whole training iteration ------------------------------------------------------------------


def _trainer(s: SpeedSettings, nf: int, run_dir: Path, **sampler: Any):
    from ebmkit.config import parse_config
    from ebmkit.experiment import Experiment, build_components
    from ebmkit.training.loop import Trainer

    cfg = parse_config({
        "data": {"name": "digits"},
        "energy": {"name": "convnet", "nf": nf},
        "sampler": {"name": "langevin", "steps": s.steps, "step_size": 1.0, "noise": 0.01, **sampler},
        "objective": {"name": "maximum-likelihood", "data_noise": 0.03},
        "training": {"batch_size": s.batch, "seed": s.seed, "progress": False, "device": "cpu"},
        "output": {"dir": str(run_dir)},
    }, check=False)
    shape = (s.channels, s.image_size, s.image_size)
    exp = Experiment(config=cfg, shape=shape, **build_components(cfg, shape))
    return Trainer(exp, run_dir=run_dir)


def paper_training_iteration(s: SpeedSettings, nf: int) -> Callable[[torch.Tensor], None]:
    """The appendix's training iteration: sample_q, L = f(data).mean() - f(x_q).mean(), Adam on -L."""
    energy = build_energy(s, nf)
    sample_q = paper_loop(energy, s.steps)
    optim = torch.optim.Adam(energy.parameters(), lr=1e-4, betas=(0.9, 0.999))
    f = lambda x: -energy(x)  # noqa: E731

    def iteration(x: torch.Tensor) -> None:
        x_q = sample_q(torch.rand_like(x) * 2 - 1)
        L = f(x + 3e-2 * torch.randn_like(x)).mean() - f(x_q).mean()
        optim.zero_grad()
        (-L).backward()
        optim.step()

    return iteration


def training_table(s: SpeedSettings, nf: int, peak: dict[str, float], log: Callable[[str], None]) -> list[dict[str, Any]]:
    x = torch.rand(s.batch, s.channels, s.image_size, s.image_size) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        fast = _trainer(s, nf, Path(tmp) / "fast")
        plain = _trainer(s, nf, Path(tmp) / "plain", fast=False, channels_last=False)
        paper = paper_training_iteration(s, nf)
        flops = s.steps * step_flops(plain.energy, x) + objective_flops(plain, x)
        fns = {"paper": lambda: paper(x), "toolkit": lambda: fast.step(x), "frozen": lambda: plain.step(x)}
        log(f"nf={nf}: training iteration, {s.rounds} rounds, {flops / 1e9:.2f} GFLOP per iteration")
        timed = interleaved(fns, s.rounds, "paper")
    labels = {"paper": "(a) paper appendix iteration", "toolkit": "ebmkit Trainer.step (default)",
              "frozen": "ebmkit Trainer.step, sampler fast=false"}
    rows = []
    for key, m in timed.items():
        gflops = flops / m["seconds"] / 1e9
        gflops_cpu = flops / (m["cpu_seconds"] / torch.get_num_threads()) / 1e9
        rows.append({"nf": nf, "contender": labels[key], "key": key, "iterations_per_s": 1 / m["seconds"],
                     "ratio_to_a": m["ratio"], "ratio_range": f"{m['ratio_min']:.2f}-{m['ratio_max']:.2f}",
                     "gflops": gflops, "pct_of_peak": 100 * gflops / peak["gflops"], "cpu_ratio_to_a": m["cpu_ratio"],
                     "gflops_cpu": gflops_cpu, "pct_of_cpu_peak": 100 * gflops_cpu / peak["gflops_cpu"],
                     "gflop_per_iteration": flops / 1e9,
                     "seconds": m["times"], "cpu_seconds": m["cpu_times"]})
    return rows


# -- output ------------------------------------------------------------------------------------


def plot_speed(table: Table, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if r.get("image_steps_per_s")]
    if not rows:
        return None
    nfs = sorted({r["nf"] for r in rows})
    keys = [row.key for row in ROWS if any(r["key"] == row.key for r in rows)]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(keys)
    colors = plt.get_cmap("tab10")
    for j, key in enumerate(keys):
        vals = [next((r["ratio_to_a"] for r in rows if r["nf"] == nf and r["key"] == key), 0.0) for nf in nfs]
        xs = [i + j * width for i in range(len(nfs))]
        ax.bar(xs, vals, width, label=key, color=colors(j))
        cpu = [next((r.get("cpu_ratio_to_a") for r in rows if r["nf"] == nf and r["key"] == key), None) for nf in nfs]
        ax.scatter([x for x, c in zip(xs, cpu) if c], [c for c in cpu if c], marker="_", color="k", s=60, zorder=3,
                   label="CPU-time ratio" if j == 0 else None)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.3, color="grey", lw=0.8, ls="--")
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(nfs))], [f"nf={nf}" for nf in nfs])
    ax.set_ylabel("speed relative to (a), wall clock")
    ax.set_title(table.title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_speed(s: SpeedSettings, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    if s.threads:
        torch.set_num_threads(s.threads)
    threads = torch.get_num_threads()
    out.mkdir(parents=True, exist_ok=True)
    load = _load()
    tiny = s.image_size <= 8  # quick mode: a token peak, the run only has to work
    peak = matmul_peak(threads, seconds=0.2, sizes=(256,)) if tiny else matmul_peak(threads)
    log(f"matmul peak: {peak['gflops']:.1f} GFLOP/s fp32 (wall), {peak['gflops_cpu']:.1f} per CPU-second per thread, "
        f"{threads} thread(s); load average {load}")
    sampler_rows = [r for nf in s.nf for r in sampler_table(s, nf, peak, log)]
    train_rows = [r for nf in s.nf for r in training_table(s, nf, peak, log)] if s.train else []
    load_after = _load()
    where = (f"batch {s.batch}, {s.channels}x{s.image_size}x{s.image_size}, K={s.steps} per timed chain, fp32, "
             f"{threads} torch thread(s), {s.rounds} interleaved rounds; matmul peak {peak['gflops']:.1f} GFLOP/s wall, "
             f"{peak['gflops_cpu']:.1f} GFLOP/s in CPU time; "
             f"load average {load} before, {load_after} after")
    tables = [Table("speed", "Langevin sampling speed: image-steps/s and ratio to (a)",
                    ["nf", "contender", "image_steps_per_s", "ratio_to_a", "ratio_range", "gflops", "pct_of_peak",
                     "image_steps_per_cpu_s", "cpu_ratio_to_a", "gflops_cpu", "pct_of_cpu_peak", "note"],
                    sampler_rows, notes=[where, "ratio_to_a: median over rounds of t(a)/t(row), wall clock, paired within a round; "
                                                "cpu_ratio_to_a: the same with process CPU time (robust to other processes' load); "
                                                "gflops: convolution FLOPs of the algorithm / wall time; gflops_cpu: / (CPU time / threads), "
                                                "against the matmul peak taken the same way."], plot=plot_speed)]
    if train_rows:
        tables.append(Table("speed_train", "Training iteration (Trainer.step): iterations/s and ratio to (a)",
                            ["nf", "contender", "iterations_per_s", "ratio_to_a", "ratio_range", "gflops", "pct_of_peak",
                             "cpu_ratio_to_a", "gflops_cpu", "pct_of_cpu_peak", "gflop_per_iteration"],
                            train_rows, notes=[where]))
    meta = run_metadata("speed", device="cpu", seeds={"weights": s.seed}, budget=None,
                        extra={"settings": s.model_dump(mode="json"), "matmul_peak": peak, "load_average": {"before": load, "after": load_after},
                               "peers": _peer_versions()})
    if sys.argv and sys.argv[0].endswith("speed.py"):  # run as `python -m benchmarks.speed`
        meta["command"] = " ".join(["python", "-m", "benchmarks.speed", *sys.argv[1:]])
    paths: list[Path] = []
    for t in tables:
        paths += t.save(out, meta)
    md = "".join(t.markdown() + "\n" for t in tables)
    (out / "speed.md").write_text(f"<!-- {meta['date']} {meta['machine'].get('cpu_model')} -->\n" + md)
    write_json(out / "meta.json", meta)
    return {"tables": tables, "markdown": md, "paths": paths + [out / "speed.md"], "meta": meta}


def _load() -> str | None:
    """The 1/5/15-minute load average: other processes share this machine."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else None


def _peer_versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {}
    for dist in ("torchebm", "ebmkit"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# -- entry points --------------------------------------------------------------------------------


@register_suite("speed", help="Langevin sampling / training speed vs the paper's loop and PyPI peers")
def run_suite(args: SuiteArgs) -> int:
    quick = any(o.strip().lower() in ("quick=true", "quick=1") for o in args.overrides)
    s = SpeedSettings.quick() if quick else SpeedSettings()
    s = settings_with_overrides(s, [o for o in args.overrides if o.partition("=")[0].strip() != "quick"])
    s.threads, s.seed = args.threads or s.threads, args.seed
    result = run_speed(s, args.out)
    print(result["markdown"])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks that the benchmark runs")
    p.add_argument("--nf", help="comma-separated network widths (default 32,64)")
    for name in ("image_size", "channels", "batch", "steps", "rounds", "threads", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int)
    p.add_argument("--no-peers", action="store_true", help="skip torchebm and ebm")
    p.add_argument("--no-train", action="store_true", help="skip the training-iteration table")
    p.add_argument("--out", type=Path, default=Path("benchmark-results") / "speed")
    a = p.parse_args(argv)
    s = SpeedSettings.quick() if a.quick else SpeedSettings()
    given = {name: getattr(a, name) for name in ("nf", "image_size", "channels", "batch", "steps", "rounds", "threads", "seed")
             if getattr(a, name) is not None}
    try:
        s = validated(SpeedSettings, {**s.model_dump(), **given}, heading="speed settings")
        s.peers, s.train = s.peers and not a.no_peers, s.train and not a.no_train
        result = run_speed(s, a.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
