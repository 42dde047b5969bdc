"""The inpainting suite: a conditional short-run EBM against mean fill and
nearest-neighbour fill, by PSNR and SSIM on held-out images.

    python -m benchmarks.run inpainting                         # digits 16x16, 4 masks, ~45 CPU minutes
    python -m benchmarks.run inpainting --only centre,centre+cvae   # one mask, both forms
    python -m benchmarks.run inpainting --set cooperative=false     # the plain conditional EBM only
    python -m benchmarks.run inpainting --budget 300            # shorter training (~1 minute per mask)
    python -m benchmarks.run inpainting --set paired_root="~/data/facades"   # also facades-style pairs

For each mask (``masks``) one conditional EBM (``conditional-convnet`` +
``masked`` initializer + ``clamped`` Langevin) trains on the training split
with that mask drawn afresh per batch; it then fills the same held-out images
under the same fixed masks (seeded) as the baselines:

* mean fill: each missing pixel gets the training set's mean at that pixel;
* nearest-neighbour fill: the training image nearest on the observed pixels
  lends its pixels to the holes.

With ``cooperative`` (the default) each mask also gets a ``<mask>+cvae``
cell: the same EBM and chain trained in the cooperative form, a conditional
VAE (``conditional-vae``) proposing the chain starts and learning from the
revised samples; it is scored after the Langevin revision and as the
proposal alone (K = 0).

The EBM's scores average ``samples`` completions per image.  With
``paired_root`` set (a ``paired-folders`` dataset: A/B folders or side-by-side
files) a ``paired`` cell learns condition -> target (facades: labels ->
photo); its baselines are the training targets' mean image and the target of
the training pair whose condition is nearest.

Outputs (``benchmark-results/inpainting/``): tables.md, tables/inpainting.{csv,json},
samples/<cell>.png (one row per image: masked input, samples, truth), cells/ (resumable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from ebmkit.errors import ConfigError

from .harness import Budget, Cell, RunContext, Table, run_metadata, settings_with_overrides, write_json
from .realdata import load_split
from .suites import SuiteArgs, register_suite


class InpaintingSettings(BaseModel):
    """What the suite trains and how it scores."""

    model_config = ConfigDict(extra="forbid")
    title: str = "scikit-learn digits, 16x16"
    data: dict[str, Any] = Field(default_factory=lambda: {"name": "digits", "image_size": 16})
    masks: dict[str, dict[str, Any]] = Field(default_factory=lambda: {
        "centre": {"name": "centre", "fraction": 0.5},
        "half": {"name": "half", "side": "bottom"},
        "random-blocks": {"name": "random-blocks", "count": 3, "fraction": 0.3},
        "random-pixels": {"name": "random-pixels", "fraction": 0.7},
    })
    budget: str = "1000"
    batch_size: int = 32
    nf: int = 16
    steps: int = Field(10, description="K")
    step_size: float = 2.0
    noise: float = 0.01
    fill: str = Field("zeros", description="start of the missing pixels: uniform, gaussian or zeros")
    lr: float = 3e-3
    beta1: float = 0.5
    data_noise: float = 0.03
    samples: int = Field(4, description="EBM completions per held-out image")
    n_test: int | None = Field(None, description="held-out images (default: the whole test split)")
    show: int = Field(8, description="images in each sample strip")
    seed: int = 0
    paired_root: str | None = Field(None, description="a paired-folders root (facades style); adds the 'paired' cell")
    paired: dict[str, Any] = Field(default_factory=lambda: {"image_size": 32, "condition": "B", "image_channels": 3})
    cooperative: bool = Field(True, description="also train the cooperative form (a conditional VAE proposes the chain starts)")
    vae: dict[str, Any] = Field(default_factory=lambda: {"latent_dim": 16, "nf": 16, "lr": 1e-3, "kl_weight": 1.0,
                                                         "decoder_sd": 0.1},
                                description="the conditional-vae initializer's parameters (besides its condition)")


DEFAULT = InpaintingSettings()


def ebm_config(s: InpaintingSettings, data: dict[str, Any], energy: dict[str, Any], initializer: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": data, "energy": {"name": "conditional-convnet", "nf": s.nf, **energy}, "initializer": initializer,
        "sampler": {"name": "clamped", "inner": {"name": "langevin", "steps": s.steps, "step_size": s.step_size,
                                                 "noise": s.noise}},
        "objective": {"name": "maximum-likelihood", "data_noise": s.data_noise},
        "optimizer": {"name": "adam", "lr": s.lr, "betas": [s.beta1, 0.999]},
        "training": {"batch_size": s.batch_size, "seed": s.seed, "progress": False, "sample_every": 0,
                     "checkpoint_every": 0},
    }


def run_mask_cell(cell: Cell, ctx: RunContext, s: InpaintingSettings, budget: Budget, cooperative: bool = False) -> dict[str, Any]:
    """One mask: the conditional EBM and the two baselines, or (``cooperative``)
    the EBM trained with a conditional VAE proposing its chain starts, scored
    with the Langevin revision and as the proposal alone."""
    from ebmkit.images import save_rows
    from ebmkit.generation.inpainting import ebm_fill, inpainting_scores, masked_view, mean_fill, nearest_fill
    from ebmkit.registry import default_registry

    from .methods import EBMMethod, train

    mask_spec = dict(cell.spec["mask"])
    train_x, test_x = load_split(s.data, "train"), load_split(s.data, "test")[: s.n_test]
    torch.manual_seed(s.seed)
    masked = {"name": "masked", "mask": mask_spec, "fill": s.fill}
    init = {"name": "conditional-vae", "condition": masked, **s.vae} if cooperative else masked
    cfg = ebm_config(s, s.data, {}, init)
    method = EBMMethod(train_x, cfg, iterations_hint=budget.iterations or 1000, recon={})
    fit = train(method, train_x, budget, batch_size=s.batch_size, seed=s.seed, progress=ctx.progress, desc=cell.name)
    exp = method.experiment
    energy = method.trainer.unwrapped_energy.eval()
    train_x, test_x = train_x.to(method.device), test_x.to(method.device)
    gen_spec = dict(mask_spec)
    masks = default_registry().build("mask", gen_spec.pop("name"), gen_spec)
    missing = masks.sample(test_x.shape[0], *test_x.shape[-2:], generator=torch.Generator().manual_seed(s.seed + 1),
                           device=method.device)
    torch.manual_seed(s.seed + 2)
    exp.initializer.eval()  # a cVAE proposes with its running statistics, as after load_trained
    filled, proposals = ebm_fill(energy, exp.sampler, exp.initializer, test_x, missing, samples=s.samples,
                                 return_starts=True)
    if cooperative:
        rows = {"cooperative ebm": inpainting_scores(test_x, filled, missing),
                "cvae proposal": inpainting_scores(test_x, proposals, missing)}
    else:
        rows = {"ebm": inpainting_scores(test_x, filled, missing),
                "mean fill": inpainting_scores(test_x, mean_fill(train_x, test_x, missing), missing),
                "nearest-neighbour fill": inpainting_scores(test_x, nearest_fill(train_x, test_x, missing), missing)}
    strip = ctx.out / "samples" / f"{cell.name}.png"
    n = min(s.show, test_x.shape[0])
    # cooperative: each proposal beside its revision
    shown = torch.stack([proposals, filled], 1).flatten(0, 1) if cooperative else filled
    save_rows([torch.cat([masked_view(test_x[i : i + 1], missing[i : i + 1]), shown[:, i], test_x[i : i + 1]]).cpu()
               for i in range(n)], strip)
    layout = ("masked input, then (proposal, revised) for each sample, truth" if cooperative
              else "masked input, samples, truth")
    return {"scores": rows, "fit": fit, "missing_fraction": float(missing.float().mean()), "n_test": int(test_x.shape[0]),
            "strip": str(strip), "strip_layout": layout}


def run_paired_cell(cell: Cell, ctx: RunContext, s: InpaintingSettings, budget: Budget, cooperative: bool = False) -> dict[str, Any]:
    """Condition -> target on paired folders: EBM vs mean target and nearest-condition target
    (``cooperative``: the EBM with a conditional VAE proposing the chain starts, and its proposals alone)."""
    from ebmkit.conditional import bound
    from ebmkit.images import save_rows
    from ebmkit.metrics import psnr, ssim

    from .methods import EBMMethod, train

    data = {"name": "paired-folders", "root": s.paired_root, **s.paired}
    train_x, test_x = load_split(data, "train"), load_split(data, "test")[: s.n_test]
    ct = int(s.paired.get("image_channels", 3))
    torch.manual_seed(s.seed)
    paired = {"name": "paired", "target_channels": ct, "fill": "uniform"}
    init = {"name": "conditional-vae", "condition": paired, **s.vae} if cooperative else paired
    cfg = ebm_config(s, data, {"target_channels": ct}, init)
    method = EBMMethod(train_x, cfg, iterations_hint=budget.iterations or 1000, recon={})
    fit = train(method, train_x, budget, batch_size=s.batch_size, seed=s.seed, progress=ctx.progress, desc=cell.name)
    exp = method.experiment
    energy = method.trainer.unwrapped_energy.eval()
    train_x, test_x = train_x.to(method.device), test_x.to(method.device)
    truth, cond = test_x[:, :ct], test_x[:, ct:]
    exp.initializer.eval()

    torch.manual_seed(s.seed + 2)
    samples, starts = [], []
    for _ in range(s.samples):
        z = exp.initializer.start(test_x)
        starts.append(z.detach().clamp(-1, 1))
        with bound(energy, exp.initializer.condition):
            samples.append(exp.sampler.run(energy, z).x.detach().clamp(-1, 1))
    filled, proposals = torch.stack(samples), torch.stack(starts)
    nearest = train_x[:, :ct][torch.cdist(cond.flatten(1), train_x[:, ct:].flatten(1)).argmin(1)]
    mean = train_x[:, :ct].mean(0, keepdim=True).expand_as(truth)

    def score(f: torch.Tensor) -> dict[str, float]:
        if f.dim() == 5:
            per = [score(x) for x in f]
            return {k: sum(p[k] for p in per) / len(per) for k in per[0]}
        return {"psnr": psnr(truth, f), "ssim": ssim(truth, f)}

    if cooperative:
        rows = {"cooperative ebm": score(filled), "cvae proposal": score(proposals)}
    else:
        rows = {"ebm": score(filled), "mean fill": score(mean), "nearest-neighbour fill": score(nearest)}
    strip = ctx.out / "samples" / f"{cell.name}.png"
    n = min(s.show, truth.shape[0])
    shown = torch.stack([proposals, filled], 1).flatten(0, 1) if cooperative else filled
    save_rows([torch.cat([cond[i : i + 1], shown[:, i], truth[i : i + 1]]).cpu() for i in range(n)], strip)
    return {"scores": rows, "fit": fit, "n_test": int(truth.shape[0]), "strip": str(strip)}


def plan(s: InpaintingSettings, budget: Budget, only: list[str]) -> list[Cell]:
    tasks = list(s.masks) + (["paired"] if s.paired_root else [])
    known = tasks + ([f"{t}+cvae" for t in tasks] if s.cooperative else [])
    for item in only:
        if item not in known:
            raise ConfigError(f"--only '{item}': choose from {', '.join(known)}")
    common = s.model_dump(exclude={"masks", "title", "show", "paired", "paired_root"}) | {"budget": budget.as_dict()}
    common = {k: v for k, v in common.items() if k not in ("cooperative", "vae")}  # cached plain cells stay valid
    cells = []
    for name, spec in s.masks.items():
        if not only or name in only:
            cells.append(Cell(name, common | {"mask": spec}, lambda c, ctx: run_mask_cell(c, ctx, s, budget),
                              ("inpainting",), name))
        if s.cooperative and (not only or f"{name}+cvae" in only):
            cells.append(Cell(f"{name}+cvae", common | {"mask": spec, "vae": s.vae},
                              lambda c, ctx: run_mask_cell(c, ctx, s, budget, cooperative=True), ("inpainting",), name))
    if s.paired_root and (not only or "paired" in only):
        spec = common | {"paired_root": str(Path(s.paired_root).expanduser()), "paired": s.paired}
        cells.append(Cell("paired", spec, lambda c, ctx: run_paired_cell(c, ctx, s, budget), ("inpainting",), "paired"))
    if s.paired_root and s.cooperative and (not only or "paired+cvae" in only):
        spec = common | {"paired_root": str(Path(s.paired_root).expanduser()), "paired": s.paired, "vae": s.vae}
        cells.append(Cell("paired+cvae", spec, lambda c, ctx: run_paired_cell(c, ctx, s, budget, cooperative=True),
                          ("inpainting",), "paired"))
    return cells


COLUMNS = ["task", "method", "PSNR", "PSNR (missing)", "SSIM", "MSE (missing)", "train it", "train s"]


def build_table(s: InpaintingSettings, cells: list[Cell], results: dict[str, dict[str, Any]], budget: Budget) -> Table:
    rows = []
    for cell in cells:
        r = results[cell.id]
        task = cell.method if cell.method == "paired" else f"{cell.method} ({r['missing_fraction']:.0%} missing)"
        for method, sc in r["scores"].items():
            trained = method in ("ebm", "cooperative ebm")
            rows.append({"task": task, "method": method, "PSNR": sc["psnr"], "PSNR (missing)": sc.get("psnr_missing"),
                         "SSIM": sc["ssim"], "MSE (missing)": sc.get("mse_missing"),
                         "train it": r["fit"]["iterations"] if trained else None,
                         "train s": r["fit"]["train_seconds"] if trained else None})
    n_test = sorted({results[c.id]["n_test"] for c in cells})
    notes = [f"Held-out images: {', '.join(map(str, n_test))} (the test split); the EBM's scores average {s.samples} "
             f"completions per image; PSNR / SSIM are scikit-image's on the [-1, 1] scale (data range 2); "
             f"'missing' columns score the hidden pixels only (observed pixels are exact for every method).",
             f"EBM: conditional-convnet nf={s.nf}, masked initializer (fill {s.fill}), clamped Langevin K={s.steps} "
             f"step {s.step_size} noise {s.noise}, Adam lr {s.lr} beta1 {s.beta1}, batch {s.batch_size}, budget {budget}."]
    if any(c.name.endswith("+cvae") for c in cells):
        notes.append("Cooperative EBM: the same EBM and chain, with a conditional VAE (conditional-vae "
                     + ", ".join(f"{k} {v}" for k, v in s.vae.items()) + ") proposing the chain starts and learning from the "
                     "revised samples; 'cvae proposal' scores its proposals alone (K = 0), the same trained model.")
    for cell in cells:
        div = results[cell.id]["fit"].get("diverged")
        if div:
            notes.append(f"{cell.name}: the EBM's training diverged at iteration {div['iteration']} (the divergence guard "
                         f"stopped it); its scores are those of the snapshot from iteration {div['evaluated_at']}.")
    if not s.paired_root:
        notes.append("Paired folders: none given (--set paired_root=PATH to add a facades-style cell).")
    return Table("inpainting", f"Inpainting: conditional EBM vs mean and nearest-neighbour fill ({s.title})", COLUMNS, rows,
                 notes)


@register_suite("inpainting", help="conditional EBM, plain and cooperative (cVAE proposals), vs mean / nearest-neighbour fill on digits (PSNR, SSIM); ~5 CPU minutes per cell")
def run(args: SuiteArgs) -> int:
    s = settings_with_overrides(DEFAULT, args.overrides) if args.overrides else DEFAULT
    if args.seed != s.seed:
        s = s.model_copy(update={"seed": args.seed})
    if s.paired_root and not Path(s.paired_root).expanduser().is_dir():
        raise ConfigError(f"--set paired_root: no folder {s.paired_root}")
    budget = Budget.parse(args.budget or s.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(args.suite, args.out, progress=args.progress, fresh=args.fresh)
    cells = plan(s, budget, args.only)
    ctx.log(f"suite {args.suite}: {s.title}; {len(cells)} cells; budget {budget}; output {args.out}")
    results = ctx.run_cells(cells)
    table = build_table(s, cells, results, budget)
    meta = run_metadata(args.suite, device="cpu", seeds={"training": s.seed, "masks": s.seed + 1, "chains": s.seed + 2},
                        budget=budget, extra={"settings": s.model_dump(mode="json")})
    table.save(args.out / "tables", meta)
    md = (f"# ebmkit benchmarks: inpainting\n\n{meta['date']} | {meta['machine'].get('cpu_model', meta['machine']['processor'])} "
          f"({meta['machine']['cpu_count']} cores, {meta['machine']['torch_threads']} torch threads) | "
          f"`{meta['command']}`\n\n" + table.markdown())
    (args.out / "tables.md").write_text(md)
    write_json(args.out / "run.json", meta | {"cells": [results[c.id] for c in cells]})
    print("\n" + md)
    ctx.log(f"tables: {args.out / 'tables.md'} (CSV and JSON in {args.out / 'tables'}; strips in {args.out / 'samples'})")
    return 0
