"""Cooperative EBM + VAE against short-run from noise, at equal CPU training time.

    python -m benchmarks.run cooperative --threads 1            # digits 16x16, ~10 CPU minutes
    python -m benchmarks.run cooperative --set cpu_seconds=300   # a longer budget

Two models are trained for the same CPU time (``time.process_time`` of this
process: on a shared machine wall-clock time measures the neighbours too):

* short-run from noise: chains start from uniform noise on [-1, 1], K = ``noise_steps``;
* cooperative: a VAE proposes the chain starts, K = ``coop_steps`` Langevin
  steps revise them, the VAE learns from the revised samples (the ``vae``
  initializer; Xie, Zheng, Li 2021).

Each is then sampled at several K (the "FID vs K" table: the Langevin steps
each needs at sampling time) and scored with the harness's FID / KID beside
the real-vs-real floor.  Cells are resumable like every suite's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from ebmkit.errors import ConfigError, DivergenceError
from ebmkit.images import save_grid

from .harness import Budget, Cell, RunContext, Table, fmt, run_metadata, settings_with_overrides, write_report
from .realdata import extractor, reference
from .suites import SuiteArgs, register_suite


class CooperativeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = "cooperative vs short-run from noise: scikit-learn digits, 16x16"
    data: dict[str, Any] = Field(default_factory=lambda: {"name": "digits", "image_size": 16})
    cpu_seconds: float = Field(120.0, gt=0, description="training budget per model, CPU seconds of this process")
    batch_size: int = 64
    seed: int = 0
    nf: int = 32
    lr: float = 2e-4
    step_size: float = 1.0
    noise: float = 0.01
    data_noise: float = 0.03
    noise_steps: int = Field(20, description="K of short-run from noise, in training")
    coop_steps: int = Field(10, description="K of the cooperative model's revision, in training")
    vae: dict[str, Any] = Field(default_factory=lambda: {"latent_dim": 32, "nf": 32, "batch_norm": True, "kl_weight": 1.0,
                                                         "decoder_sd": 0.1, "lr": 2e-4, "betas": [0.5, 0.999]})
    eval_noise_k: list[int] = Field(default_factory=lambda: [10, 20, 40])
    eval_coop_k: list[int] = Field(default_factory=lambda: [0, 2, 5, 10, 20])
    n_fid: int = 100
    kid_subsets: int = 100
    inception_batch: int = 32
    grid: int = 64


METHODS = ("noise", "cooperative")
LABELS = {"noise": "short-run from noise", "cooperative": "cooperative (VAE proposal + Langevin)"}


def experiment_config(s: CooperativeSettings, method: str, out: Path) -> dict[str, Any]:
    coop = method == "cooperative"
    return {
        "data": s.data,
        "energy": {"name": "convnet", "nf": s.nf},
        "initializer": {"name": "vae", **s.vae} if coop else {"name": "uniform"},
        "sampler": {"name": "langevin", "steps": s.coop_steps if coop else s.noise_steps, "step_size": s.step_size,
                    "noise": s.noise},
        "objective": {"name": "maximum-likelihood", "data_noise": s.data_noise},
        "optimizer": {"name": "adam", "lr": s.lr},
        "training": {"iterations": 10**6, "batch_size": s.batch_size, "seed": s.seed, "device": "cpu", "progress": False,
                     "sample_every": 0, "checkpoint_every": 0},
        "output": {"dir": str(out), "grid_size": s.grid},
    }


# -- cells ----------------------------------------------------------------------------------


def train_spec(s: CooperativeSettings, method: str) -> dict[str, Any]:
    cfg = experiment_config(s, method, Path("."))
    cfg.pop("output")
    return {"kind": "train", "method": method, "config": cfg, "cpu_seconds": s.cpu_seconds,
            "threads": torch.get_num_threads()}


def run_train(cell: Cell, ctx: RunContext, s: CooperativeSettings) -> dict[str, Any]:
    """Train until the CPU budget is spent; save a checkpoint in the cell's folder."""
    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    method = cell.spec["method"]
    run_dir = ctx.cell_dir(cell)
    trainer = Trainer(build_experiment(parse_config(experiment_config(s, method, run_dir))), run_dir=run_dir)
    batches = trainer.batches()
    logs: dict[str, float] = {}
    diverged = None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < s.cpu_seconds:
        try:
            logs = trainer.iterate(next(batches))
        except DivergenceError as exc:
            diverged = {"iteration": trainer.iteration + 1, "message": str(exc).splitlines()[0]}
            break
        if trainer.iteration % 25 == 0:
            ctx.log(f"  {method}: iteration {trainer.iteration}, {time.process_time() - cpu0:.0f} CPU s, "
                    + ", ".join(f"{k} {logs[k]:.3g}" for k in ("gap", "vae_mse") if k in logs))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    path = trainer.save()
    ctx.log(f"  {method}: {trainer.iteration} iterations in {cpu:.0f} CPU s ({wall:.0f} s wall-clock)")
    return {"method": method, "iterations": trainer.iteration, "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
            "checkpoint": str(path), "last_logs": logs, "diverged": diverged}


def eval_spec(s: CooperativeSettings, method: str, k: int) -> dict[str, Any]:
    return {"kind": "eval", "train": train_spec(s, method), "k": k, "n_fid": s.n_fid, "kid_subsets": s.kid_subsets,
            "sampling_seed": s.seed + 1}


def run_eval(cell: Cell, ctx: RunContext, s: CooperativeSettings, trained: dict[str, Any]) -> dict[str, Any]:
    from ebmkit.experiment import load_trained

    exp = load_trained(trained["checkpoint"])
    k, n = cell.spec["k"], cell.spec["n_fid"]
    torch.manual_seed(cell.spec["sampling_seed"])
    cpu0 = time.process_time()
    parts = []
    for start in range(0, n, 100):
        z = exp.initializer.sample(min(100, n - start))
        parts.append(exp.sampler.run(exp.energy, z, steps=k).x.detach())
    samples = torch.nan_to_num(torch.cat(parts), nan=0.0, posinf=1.0, neginf=-1.0)
    sample_cpu = time.process_time() - cpu0
    grid = save_grid(samples[: s.grid].clamp(-1, 1), ctx.out / "samples" / f"{cell.id}.png")
    ex, ref = extractor(ctx, s.inception_batch), reference(ctx, s.data, s.n_fid, s.inception_batch)
    feats = ex(samples, progress=ctx.progress, desc=f"inception {cell.name}")
    score = ref.score(feats, kid_subsets=s.kid_subsets, seed=s.seed)
    floor = ref.floor(score["n"], kid_subsets=s.kid_subsets, seed=s.seed)
    ctx.log(f"  {cell.name}: FID {score['fid']:.1f} (floor {floor['fid']:.1f}), KID {score['kid']:.4f}")
    return {"method": cell.spec["train"]["method"], "k": k, "fid": score["fid"], "kid": score["kid"], "n_fid": score["n"],
            "floor_fid": floor["fid"], "floor_kid": floor["kid"], "sample_cpu_ms_per_image": 1e3 * sample_cpu / n,
            "grid": str(grid.relative_to(ctx.out))}


# -- tables ---------------------------------------------------------------------------------


def build_tables(s: CooperativeSettings, trained: dict[str, dict[str, Any]], evals: list[dict[str, Any]]) -> list[Table]:
    rows = []
    for r in evals:
        t = trained[r["method"]]
        rows.append({"method": LABELS[r["method"]], "train K": t["k_train"], "iterations": t["iterations"],
                     "train CPU s": t["cpu_seconds"], "sample K": r["k"], "FID": r["fid"], "floor FID": r["floor_fid"],
                     "KID x1e3": r["kid"] * 1e3, "floor KID x1e3": r["floor_kid"] * 1e3,
                     "sample CPU ms/image": r["sample_cpu_ms_per_image"]})
    note = (f"Both models trained for {s.cpu_seconds:g} CPU seconds (process time, torch threads as run) on "
            f"{s.data['name']}, batch {s.batch_size}, convnet nf={s.nf}, Adam lr {s.lr:g}, Langevin step {s.step_size:g}, "
            f"noise {s.noise:g}, data noise {s.data_noise:g}, seed {s.seed}.  FID / KID of {s.n_fid} samples against "
            f"{s.n_fid} real training images; the floor is {s.n_fid} other real images against the same reference.")
    k_table = Table("fid_vs_k", f"FID and KID against the sampling K ({s.title})", list(rows[0]) if rows else [], rows,
                    [note], plot_fid_vs_k)
    # The K each model needs: the smallest sampling K whose FID reaches the
    # noise model's FID at its own training K (the reference quality).
    target = next((r["fid"] for r in evals if r["method"] == "noise" and r["k"] == s.noise_steps), None)
    need = []
    for m in METHODS:
        mine = sorted((r for r in evals if r["method"] == m), key=lambda r: r["k"])
        best = min(mine, key=lambda r: r["fid"]) if mine else None
        reach = next((r["k"] for r in mine if target is not None and r["fid"] <= target), None)
        need.append({"method": LABELS[m], "best FID": best["fid"] if best else None, "at K": best["k"] if best else None,
                     f"smallest K with FID <= {fmt(target)}": reach})
    k_need = Table("k_needed", "Langevin steps needed at sampling time", list(need[0]), need,
                   [f"Target: the FID of short-run from noise at its training K={s.noise_steps} ({fmt(target)}); "
                    "n/a: not reached at any K tried."])
    return [k_table, k_need]


def plot_fid_vs_k(table: Table, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label in dict.fromkeys(r["method"] for r in table.rows):
        rows = [r for r in table.rows if r["method"] == label]
        ax.plot([r["sample K"] for r in rows], [r["FID"] for r in rows], marker="o", label=label)
    floor = table.rows[0]["floor FID"] if table.rows else None
    if floor is not None:
        ax.axhline(floor, color="grey", ls="--", lw=1, label="real-vs-real floor")
    ax.set_xlabel("Langevin steps K at sampling")
    ax.set_ylabel("FID")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the suite ------------------------------------------------------------------------------


@register_suite("cooperative", help="cooperative EBM + VAE vs short-run from noise at equal CPU time (digits, ~10 CPU min)")
def run(args: SuiteArgs) -> int:
    s = settings_with_overrides(CooperativeSettings(), args.overrides) if args.overrides else CooperativeSettings()
    if args.budget:
        b = Budget.parse(args.budget)
        if b.seconds is None:
            raise ConfigError("the cooperative suite's budget is CPU time: use --budget 120s or 2m")
        s = s.model_copy(update={"cpu_seconds": b.seconds})
    if args.n_fid:
        s = s.model_copy(update={"n_fid": args.n_fid})
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(args.suite, args.out, progress=args.progress, fresh=args.fresh)
    ctx.shared["inception_path"] = args.inception
    torch.manual_seed(s.seed)
    ctx.log(f"{s.title}: {s.cpu_seconds:g} CPU s per model, torch threads {torch.get_num_threads()}")

    train_cells = {m: Cell(name=f"train {m}", spec=train_spec(s, m), run=lambda c, x: run_train(c, x, s), method=m)
                   for m in METHODS}
    trained = {}
    for m, c in train_cells.items():
        trained[m] = ctx.run_cells([c])[c.id]
        trained[m]["k_train"] = s.coop_steps if m == "cooperative" else s.noise_steps
    eval_cells = [Cell(name=f"{m} K={k}", spec=eval_spec(s, m, k), run=lambda c, x: run_eval(c, x, s, trained[c.method]),
                       method=m)
                  for m, ks in (("noise", s.eval_noise_k), ("cooperative", s.eval_coop_k)) for k in ks]
    results = ctx.run_cells(eval_cells)
    evals = [results[c.id] for c in eval_cells]
    meta = run_metadata(args.suite, device="cpu", seeds={"training": s.seed, "sampling": s.seed + 1}, budget=None,
                        extra={"settings": s.model_dump(), "cpu_seconds_total": round(time.process_time(), 1)})
    tables = build_tables(s, trained, evals)
    print(write_report(args.out, s.title, tables, meta, device="cpu", results=evals))
    return 0
