"""The stability sweep: iterations to divergence over a grid of K and step size,
without and with each stabiliser (docs/recipes.md).

    python -m benchmarks.run stability          # 28 cells; 16 minutes on a shared 2-core CPU
    python -m benchmarks.run stability-quick    # one cell pair, seconds (what the tests run)
    python -m benchmarks.run stability --budget 500 --set lr=3e-4 --set steps=[20,40]

Each cell trains the paper's ConvNet on scikit-learn's digits with one
(K, step size, stabiliser) for ``budget`` iterations and records the first
iteration ebmkit's divergence guard (:mod:`ebmkit.training.divergence`, the default
``[training.divergence]`` criteria: non-finite numbers, |gap| > max_gap, or a
gap 100x its running median) stops it -- or "none".  The learning rate (1e-2)
is deliberately 100x the paper's so that unstabilised runs fail within a
CPU-sized budget (at 1e-3 and 3e-3 the plain recipe survived 300 iterations
here); what matters is the comparison between columns.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ebmkit.errors import ConfigError, DivergenceError

from .harness import Budget, Cell, RunContext, Table, run_metadata, settings_with_overrides, write_report
from .suites import SuiteArgs, register_suite

STABILISERS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "energy-penalty": {"objective": {"energy_penalty": 0.1}},
    "langevin-clip": {"sampler": {"grad_clip": 0.05, "grad_clip_mode": "element"}},
    "langevin-clip-norm": {"sampler": {"grad_clip": 1.0, "grad_clip_mode": "norm"}},
    "spectral-norm": {"energy": {"spectral_norm": True}},
    "gap-cap": {"objective": {"gap_cap": 1.0}},
    "lr-warmup-anneal": {"optimizer": {"schedule": {"warmup": 50, "decay": "linear", "start": 0.8}}},
}
"""Config sections each stabiliser changes (merged into the cell's config)."""


class StabilitySettings(BaseModel):
    """One sweep: the data, the network, the grid and the budget."""

    model_config = ConfigDict(extra="forbid")
    title: str
    data: dict[str, Any] = Field(default_factory=lambda: {"name": "digits", "image_size": 8})
    nf: int = 16
    batch_size: int = 32
    lr: float = 1e-2
    noise: float = 0.01
    data_noise: float = 0.03
    budget: str = "300"
    steps: list[int] = Field(default_factory=lambda: [10, 40], description="K values")
    step_sizes: list[float] = Field(default_factory=lambda: [1.0, 10.0], description="Langevin step sizes")
    stabilisers: list[str] = Field(default_factory=lambda: list(STABILISERS))
    seed: int = 0


FULL = StabilitySettings(title="Stability sweep: digits 8x8, ConvNet nf=16, batch 32, Adam lr 1e-2")
QUICK = StabilitySettings(title="Stability sweep (quick form)", nf=4, batch_size=8, budget="5", steps=[3],
                          step_sizes=[1.0], stabilisers=["none", "energy-penalty"])


def cell_config(s: StabilitySettings, k: int, step: float, stabiliser: str, iterations: int, device: str) -> dict[str, Any]:
    """The experiment config of one cell (the trainer writes to the cell's work folder)."""
    cfg: dict[str, Any] = {
        "data": dict(s.data),
        "energy": {"name": "convnet", "nf": s.nf},
        "initializer": {"name": "uniform"},
        "sampler": {"name": "langevin", "steps": k, "step_size": step, "noise": s.noise},
        "objective": {"name": "maximum-likelihood", "data_noise": s.data_noise},
        "optimizer": {"name": "adam", "lr": s.lr},
        "training": {"iterations": iterations, "batch_size": s.batch_size, "seed": s.seed, "device": device,
                     "sample_every": 0, "checkpoint_every": 0, "progress": False, "log_every": 1000},
        "output": {"grid_size": 16},
    }
    for section, values in STABILISERS[stabiliser].items():
        cfg[section] = {**cfg[section], **values}
    return cfg


def run_cell(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    cfg = parse_config(cell.spec["config"], source=cell.name)
    trainer = Trainer(build_experiment(cfg), run_dir=ctx.cell_dir(cell))
    diverged_at, reason = None, None
    try:
        trainer.fit(overwrite=True)  # a cell is recomputed from scratch; a half-finished attempt is moved aside
    except DivergenceError as exc:
        diverged_at, reason = exc.iteration, exc.reason
    gaps = _column(ctx.cell_dir(cell) / "metrics.csv", "gap")
    times = _column(ctx.cell_dir(cell) / "metrics.csv", "time")
    return {"diverged_at": diverged_at, "reason": reason, "iterations_run": len(gaps),
            "max_abs_gap": max((abs(g) for g in gaps), default=None), "final_gap": gaps[-1] if gaps else None,
            "gap_trace": gaps[:: max(1, len(gaps) // 50)],
            "s_per_it": (times[-1] / len(times)) if times else None}


def _column(path: Path, name: str) -> list[float]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name) not in (None, "")]


def plan(s: StabilitySettings, budget: Budget, device: str) -> list[Cell]:
    unknown = [x for x in s.stabilisers if x not in STABILISERS]
    if unknown:
        raise ConfigError(f"stability: unknown stabiliser(s) {unknown}; choose from {', '.join(STABILISERS)}")
    if budget.iterations is None:
        raise ConfigError("stability: the budget must be iterations (e.g. --budget 300), not wall-clock")
    cells = []
    for k in s.steps:
        for step in s.step_sizes:
            for name in s.stabilisers:
                label = f"K={k} step={step:g} {name}"
                cfg = cell_config(s, k, step, name, budget.iterations, device)
                cells.append(Cell(label, {"config": cfg, "K": k, "step": step, "stabiliser": name}, run_cell))
    return cells


def survived(r: dict[str, Any], budget: int) -> str:
    return f"diverged at {r['diverged_at']}" if r.get("diverged_at") is not None else f"none (>= {budget})"


def build_tables(s: StabilitySettings, cells: list[Cell], results: dict[str, dict[str, Any]], budget: int) -> list[Table]:
    runs = []
    for c in cells:
        r = results[c.id]
        runs.append({"K": c.spec["K"], "step size": c.spec["step"], "stabiliser": c.spec["stabiliser"],
                     "iterations to divergence": r["diverged_at"] if r["diverged_at"] is not None else "none",
                     "reason": r["reason"] or "", "max abs gap": r["max_abs_gap"], "final gap": r["final_gap"],
                     "s/it": r["s_per_it"]})
    grid = []
    for k in s.steps:
        for step in s.step_sizes:
            row: dict[str, Any] = {"K": k, "step size": step}
            for c in cells:
                if c.spec["K"] == k and c.spec["step"] == step:
                    row[c.spec["stabiliser"]] = survived(results[c.id], budget)
            grid.append(row)
    note = (f"Budget {budget} iterations per cell; 'diverged at N': the divergence guard stopped the run at iteration N "
            f"(default [training.divergence] criteria); 'none': it ran the whole budget. Settings: data {s.data}, "
            f"ConvNet nf={s.nf}, batch {s.batch_size}, Adam lr {s.lr:g}, noise {s.noise:g}, sigma {s.data_noise:g}, "
            f"seed {s.seed}. Stabilisers: " + "; ".join(f"{n}: {v or 'the plain recipe'}" for n, v in STABILISERS.items()
                                                      if n in s.stabilisers) + ".")
    return [
        Table("stability", s.title + ": iterations to divergence", ["K", "step size", *s.stabilisers], grid,
              notes=[note], plot=plot_grid(s, cells, results, budget)),
        Table("stability_runs", s.title + ": every run", ["K", "step size", "stabiliser", "iterations to divergence",
                                                          "reason", "max abs gap", "final gap", "s/it"], runs),
    ]


def plot_grid(s: StabilitySettings, cells: list[Cell], results: dict[str, dict[str, Any]], budget: int):
    def plot(table: Table, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        rows = [(k, step) for k in s.steps for step in s.step_sizes]
        frac = np.full((len(rows), len(s.stabilisers)), np.nan)
        for c in cells:
            r = results[c.id]
            i, j = rows.index((c.spec["K"], c.spec["step"])), s.stabilisers.index(c.spec["stabiliser"])
            frac[i, j] = 1.0 if r["diverged_at"] is None else (r["diverged_at"] - 1) / budget
        fig, ax = plt.subplots(figsize=(1.3 + 1.1 * len(s.stabilisers), 0.9 + 0.45 * len(rows)))
        ax.imshow(frac, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(s.stabilisers)):
                c = next(c for c in cells if (c.spec["K"], c.spec["step"]) == rows[i] and c.spec["stabiliser"] == s.stabilisers[j])
                d = results[c.id]["diverged_at"]
                ax.text(j, i, "ok" if d is None else str(d), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(s.stabilisers)), s.stabilisers, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), [f"K={k}, step={st:g}" for k, st in rows], fontsize=8)
        ax.set_title(f"iteration of divergence ('ok': none in {budget})", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    return plot


def run_stability(s: StabilitySettings, args: SuiteArgs) -> int:
    """Plan, run (resuming), tabulate, print and save one sweep."""
    from .harness import resolve_device

    if args.overrides:
        s = settings_with_overrides(s, args.overrides)
    if s.seed != args.seed:
        s = s.model_copy(update={"seed": args.seed})
    if args.only:
        s = s.model_copy(update={"stabilisers": ["none", *[x for x in args.only if x != "none"]]})
    budget = Budget.parse(args.budget or s.budget)
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(args.suite, args.out, progress=args.progress, fresh=args.fresh)
    cells = plan(s, budget, device)
    ctx.log(f"suite {args.suite}: {s.title}; {len(cells)} cells; budget {budget}; device {device}; output {args.out}")
    results = ctx.run_cells(cells)
    tables = build_tables(s, cells, results, budget.iterations)
    meta = run_metadata(args.suite, device=device, seeds={"training": s.seed}, budget=budget,
                        extra={"settings": s.model_dump(mode="json"), "stabilisers": STABILISERS})
    md = write_report(args.out, "ebmkit stability sweep", tables, meta, device=device,
                      results=[results[c.id] for c in cells])
    print("\n" + md)
    ctx.log(f"tables: {args.out / 'tables.md'} (CSV, JSON and a plot in {args.out / 'tables'})")
    return 0


@register_suite("stability", help="iterations to divergence over K x step size, with and without each stabiliser")
def stability(args: SuiteArgs) -> int:
    return run_stability(FULL, args)


@register_suite("stability-quick", help="the stability sweep's quick form (one K, one step size, two columns; seconds)")
def stability_quick(args: SuiteArgs) -> int:
    return run_stability(QUICK, args)
