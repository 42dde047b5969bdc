"""Sample quality of a preset over seeds, and what each quality option buys
(docs/quality.md).

    python -m benchmarks.run quality                       # digits-cpu, 3 seeds, its variants
    python -m benchmarks.run quality --set preset=mnist5k-cpu
    python -m benchmarks.run quality --only preset         # the preset alone (the targets of docs/quality.md)
    python -m benchmarks.run quality-quick                 # seconds: checks that it runs

Each cell trains the preset (plus a variant's ``--set`` overrides) with one
seed, on one thread, then scores ``samples`` fresh samples with the data's own
classifier (:mod:`ebmkit.metrics.classifier`): recognisable share, class
coverage, Fréchet distance in its features.  The table gives, per variant, the
mean and sd over seeds, the training seconds, and the classifier's scale
(held-out real images, uniform noise).
"""

from __future__ import annotations

import csv
import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ebmkit.errors import ConfigError

from .harness import Cell, RunContext, Table, run_metadata, settings_with_overrides, write_report
from .plots import plot_bars
from .suites import SuiteArgs, register_suite

VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "paper-recipe": ["energy.nf=32", "optimizer.lr=1e-4", "optimizer.schedule.decay=\"none\"", "training.iterations=2000"],
    "ema-0.99": ["ema.decay=0.99"],
    "ema-0.999": ["ema.decay=0.999"],
    "final-noise-free-5": ["sampler.final_noise_free=5"],
    "sample-K-1.5x": [],  # the preset, sampled with 1.5 x K steps (sampling only; see run_cell)
}
"""Named variants: ``--set`` overrides of the preset (docs/quality.md says what each measured)."""


class QualitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = "Sample quality of a CPU preset"
    preset: str = "digits-cpu"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    samples: int = Field(500, description="samples scored per run")
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS))
    overrides: list[str] = Field(default_factory=list, description="--set overrides applied to every cell (k=v)")


FULL = QualitySettings()
QUICK = QualitySettings(title="Sample quality (quick form)", seeds=[0], samples=50, variants=["preset", "ema-0.99"],
                        overrides=["training.iterations=20", "energy.nf=8", "training.batch_size=16",
                                   "evaluation.every=0"])


def run_cell(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    import torch

    from ebmkit.cli import resolve_config_path
    from ebmkit.config import load_config
    from ebmkit.experiment import build_experiment
    from ebmkit.metrics.classifier import ClassifierJudge
    from ebmkit.sampling import seeded
    from ebmkit.training.loop import Trainer

    spec = cell.spec
    run_dir = ctx.cell_dir(cell)
    sets = [f"output.dir={json.dumps(str(run_dir))}", f"training.seed={spec['seed']}", "training.progress=false",
            "training.checkpoint_every=0", *spec["overrides"], *VARIANTS[spec["variant"]]]
    cfg = load_config(resolve_config_path(spec["preset"]), sets)
    trainer = Trainer(build_experiment(cfg))
    torch.set_num_threads(1)
    trainer.fit(overwrite=True)  # a cell is recomputed from scratch; a half-finished attempt is moved aside
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", newline="")))
    data = cfg.data
    judge = ctx.shared.get(("judge", data.name, json.dumps(data.params, sort_keys=True)))
    if judge is None:
        judge = ClassifierJudge.for_dataset(data.name, **data.params)
        ctx.shared[("judge", data.name, json.dumps(data.params, sort_keys=True))] = judge
    steps = int(round(1.5 * trainer.sampler.steps)) if spec["variant"] == "sample-K-1.5x" else None
    with seeded(1000 + spec["seed"], trainer.device):
        gen = trainer.generator
        samples = torch.cat([gen.draw(min(250, spec["samples"] - i), steps=steps)
                             for i in range(0, spec["samples"], 250)]).float().cpu()
    report = judge.report(samples)
    from ebmkit.images import save_grid

    save_grid(samples[:64], ctx.out / "samples" / f"{cell.id}.png")
    return {**report, "train_seconds": float(rows[-1]["time"]), "iterations": int(rows[-1]["iteration"]),
            "grid": f"samples/{cell.id}.png"}


def plan(s: QualitySettings) -> list[Cell]:
    unknown = [v for v in s.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"quality: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return [Cell(f"{v} seed {seed}", {"preset": s.preset, "variant": v, "seed": seed, "samples": s.samples,
                                      "overrides": list(s.overrides)}, run_cell)
            for v in s.variants for seed in s.seeds]


def build_table(s: QualitySettings, cells: list[Cell], results: dict[str, dict[str, Any]]) -> Table:
    rows = []
    for v in s.variants:
        group = [results[c.id] for c in cells if c.spec["variant"] == v]
        row: dict[str, Any] = {"variant": v, "seeds": len(group)}
        for key, name in (("recognisable", "recognisable"), ("coverage", "coverage"), ("fd", "domain FD"),
                          ("train_seconds", "train s")):
            vals = np.array([g[key] for g in group], dtype=float)
            row[name] = float(vals.mean())
            row[f"{name} sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else None
        row["per seed (rec / cov / FD)"] = "; ".join(f"{g['recognisable']:.3f} / {g['coverage']:.3f} / {g['fd']:.1f}"
                                                     for g in group)
        rows.append(row)
    first = results[cells[0].id]
    rows += [{"variant": "held-out real images", "recognisable": first["ceiling_recognisable"],
              "coverage": first["ceiling_coverage"], "domain FD": first["ceiling_fd"]},
             {"variant": "uniform noise", "recognisable": first["floor_recognisable"],
              "coverage": first["floor_coverage"], "domain FD": first["floor_fd"]}]
    notes = [f"Preset `{s.preset}`, seeds {s.seeds}, {s.samples} samples per run scored by the data's own classifier; "
             f"train s: the run's training seconds (metrics.csv `time`, evaluations included) on one thread. "
             f"Variants: " + "; ".join(f"{v}: {VARIANTS[v] or 'as the preset'}" for v in s.variants) + ". "
             f"sample-K-1.5x trains as the preset and samples with 1.5 x K steps. Held-out real images: at most "
             f"{first['ceiling_n']} (the test split)."]
    columns = ["variant", "seeds", "recognisable", "recognisable sd", "coverage", "coverage sd", "domain FD", "domain FD sd",
               "train s", "train s sd", "per seed (rec / cov / FD)"]
    return Table("quality", f"{s.title}: {s.preset}", columns, rows, notes, plot_bars("recognisable"))


def run_quality(s: QualitySettings, args: SuiteArgs) -> int:
    if args.overrides:
        s = settings_with_overrides(s, args.overrides)
    if args.only:
        s = s.model_copy(update={"variants": list(args.only)})
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(args.suite, args.out, progress=args.progress, fresh=args.fresh)
    cells = plan(s)
    ctx.log(f"suite {args.suite}: {s.preset}, {len(cells)} cells ({len(s.variants)} variants x {len(s.seeds)} seeds); "
            f"output {args.out}")
    results = ctx.run_cells(cells)
    table = build_table(s, cells, results)
    meta = run_metadata(args.suite, device="cpu", seeds={"training": s.seeds}, budget=None,
                        extra={"settings": s.model_dump(mode="json"), "variants": VARIANTS})
    md = write_report(args.out, "ebmkit sample quality", [table], meta, device="cpu",
                      results=[results[c.id] for c in cells])
    print("\n" + md)
    return 0


@register_suite("quality", help="a CPU preset over 3 seeds on the classifier metrics, and what each quality option buys")
def quality(args: SuiteArgs) -> int:
    return run_quality(FULL, args)


@register_suite("quality-quick", help="the quality suite's quick form (one seed, tiny run; seconds)")
def quality_quick(args: SuiteArgs) -> int:
    return run_quality(QUICK, args)
