"""Shareable models: ``ebmkit export RUN DIR``.

An exported folder stands on its own -- no run folder, no optimiser state,
nothing that runs code when read:

* ``energy.safetensors`` (and ``initializer.safetensors`` etc. when those
  parts have weights) -- the trained weights;
* ``state.json`` -- the resolved config, the data shape, how each part was
  built and a sha256 of every weights file: the same layout as one
  checkpoint, so everything that opens a checkpoint opens this
  (:func:`ebmkit.load`, every CLI verb);
* ``config.toml`` -- the recipe, ready for ``ebmkit train config.toml``;
* ``README.md`` -- a model card: data, recipe, metrics, sample grid, files;
* ``samples.png`` -- 64 samples of the exported model.

Models shipped inside the package (:mod:`ebmkit.pretrained`) are such folders.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .errors import OutputError

SKIP = {"rng", "process_rng"}
"""Checkpoint weights that only a resumed run needs."""


def toml_text(data: dict[str, Any]) -> str:
    """A config dict as TOML (tables for sections, nested tables dotted; None left out)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v if x is not None) + "]"
        return repr(v) if isinstance(v, float) else str(v)

    def table(name: str, node: dict[str, Any]) -> None:
        plain = {k: v for k, v in node.items() if not isinstance(v, dict) and v is not None}
        if plain or not any(isinstance(v, dict) for v in node.values()):
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {value(v)}" for k, v in plain.items())
            lines.append("")
        for k, v in node.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for section, node in data.items():
        if isinstance(node, dict):
            table(section, node)
    return "\n".join(lines)


def _last_metrics(run_dir: Path) -> dict[str, float]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, float] = {}
    for row in rows:  # the last value of each column: evaluations (eval_*) come only every so many iterations
        for k, v in row.items():
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                pass
    return out


def _run_dir(ckpt_path: Path) -> Path | None:
    """The run folder of a checkpoint under ``RUN/checkpoints/``."""
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None


def export(run: str | Path, out: str | Path, *, overwrite: bool = False, n_samples: int = 64, judge: bool = False,
           command: str | None = None, name: str | None = None) -> Path:
    """Write the self-contained model folder ``out`` from a run, checkpoint or
    exported folder; returns ``out``.

    ``judge``: score the samples with the data's own classifier
    (:mod:`ebmkit.metrics.classifier`, labelled data only) for the card.
    ``command``: how the model was trained, shown on the card."""
    from . import __version__
    from .checkpoint import find_checkpoint
    from .generation.generator import ShortRunGenerator
    from .images import save_grid

    ckpt = find_checkpoint(run)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"export folder {out} exists and is not empty; choose another folder or pass --overwrite")
        if not (out / "state.json").is_file():
            raise OutputError(f"{out} is not an exported model (no state.json); refusing to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    files: dict[str, str] = {}
    for f in sorted(ckpt.path.glob("*.safetensors")):
        if f.stem in SKIP:
            continue
        shutil.copyfile(f, out / f.name)
        files[f.name] = hashlib.sha256((out / f.name).read_bytes()).hexdigest()
    run_dir = _run_dir(ckpt.path)
    source_export = ckpt.state.get("export") or {}
    state = {k: ckpt.state[k] for k in ("config", "shape", "versions", "components") if k in ckpt.state}
    metrics = _last_metrics(run_dir) if run_dir else dict(source_export.get("metrics") or {})
    state.update({"format": ckpt.state.get("format", 1), "iteration": ckpt.iteration, "files": files,
                  "export": {"ebmkit": __version__, "date": datetime.date.today().isoformat(),
                             "from": (run_dir or ckpt.path).name, "metrics": metrics,
                             "command": command or source_export.get("command")}})
    config = ckpt.config or {}
    (out / "config.toml").write_text(toml_text(config))

    gen = ShortRunGenerator.from_checkpoint(ckpt.path)
    quality: dict[str, float] = {}
    samples = None
    if len(gen.shape) == 3:
        samples = gen.generate(n_samples, seed=0)
        save_grid(samples, out / "samples.png")
        if judge:
            quality = _judge(config, samples)
    state["export"]["quality"] = quality
    (out / "state.json").write_text(json.dumps(state, indent=1, default=str))  # last: marks a complete folder
    (out / "README.md").write_text(model_card(name or out.name, state, gen, has_samples=samples is not None))
    return out


def _judge(config: dict[str, Any], samples) -> dict[str, float]:
    """The classifier judge's numbers for the card, or nothing for unlabelled data."""
    from .metrics.classifier import ClassifierJudge

    data = dict(config.get("data") or {})
    name = data.pop("name", None)
    try:
        return ClassifierJudge.for_dataset(name, **data).report(samples)
    except Exception as exc:  # unlabelled data, a dataset not on this machine: the card goes without
        return {"unavailable": str(exc)[:200]}  # type: ignore[dict-item]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def model_card(name: str, state: dict[str, Any], gen, *, has_samples: bool) -> str:
    """The README.md of an exported model."""
    cfg = state.get("config") or {}
    ex = state.get("export") or {}
    metrics, quality = ex.get("metrics") or {}, ex.get("quality") or {}
    shape = tuple(state.get("shape") or ())
    params = sum(p.numel() for p in gen.energy.parameters())
    data = cfg.get("data") or {}
    t = cfg.get("training") or {}

    def component(section: str) -> str:
        spec = (state.get("components") or {}).get(section) or cfg.get(section) or {}
        rest = ", ".join(f"{k}={_fmt(v)}" for k, v in spec.items() if k != "name" and v is not None)
        return f"`{spec.get('name', '?')}`" + (f" ({rest})" if rest else "")

    opt = cfg.get("optimizer") or {}
    lines = [
        f"# {name}: a short-run EBM made with ebmkit",
        "",
        "An energy-based model U(x) learned by maximum likelihood with short-run MCMC "
        "(Nijkamp, Hill, Zhu and Wu, NeurIPS 2019); the K-step Langevin chain from p0 is the generator.",
        "",
    ]
    if has_samples:
        lines += ["![64 samples](samples.png)", "", "*64 samples (seed 0), enlarged with nearest-neighbour pixels.*", ""]
    lines += [
        "## Use",
        "",
        "```bash",
        "pip install shortrun-ebm",
        f"ebmkit generate {name}          # this folder's path, or the name of a model shipped with ebmkit",
        "```",
        "",
        "```python",
        "import ebmkit",
        f'gen = ebmkit.load("{name}")',
        "x = gen.generate(64, seed=0)      # (64, " + ", ".join(map(str, shape)) + ") in [-1, 1]",
        "```",
        "",
        "## Data",
        "",
        f"`{data.get('name', '?')}`" + (" (" + ", ".join(f"{k}={_fmt(v)}" for k, v in data.items() if k != "name") + ")"
                                         if len(data) > 1 else "") + f"; images of shape {shape} scaled to [-1, 1].",
        "",
        "## Recipe",
        "",
        "| part | setting |",
        "|---|---|",
        f"| energy | {component('energy')}; {params:,} parameters |",
        f"| initializer (p0) | {component('initializer')} |",
        f"| sampler | {component('sampler')} |",
        f"| objective | {component('objective')} |",
        f"| optimizer | `{opt.get('name', '?')}`, lr {_fmt(opt.get('lr'))} |",
        f"| training | {state.get('iteration')} iterations, batch {t.get('batch_size')}, seed {t.get('seed')} |",
        "",
        "`config.toml` in this folder is the whole resolved config: `ebmkit train config.toml` trains it again "
        "(bit for bit on the same CPU and library versions).",
    ]
    if ex.get("command"):
        lines += ["", "Trained with:", "", "```bash", ex["command"], "```"]
    lines += ["", "## Metrics", ""]
    shown = {k: v for k, v in metrics.items() if k in ("iteration", "energy_data", "energy_samples", "gap", "grad_norm",
                                                         "time") or k.startswith(("eval", "quality"))}
    if shown or quality:
        lines += ["| number | value |", "|---|---|"]
        names = {"energy_data": "mean energy of the data, last iteration", "energy_samples":
                 "mean energy of the samples, last iteration", "gap": "energy gap (d_st), last iteration",
                 "grad_norm": "parameter gradient norm, last iteration", "time": "training wall-clock (s)"}
        lines += [f"| {names.get(k, k.replace('eval_', '[evaluation], last time: ') if k.startswith('eval_') else k)} | "
                  f"{_fmt(v)} |" for k, v in shown.items() if k != "iteration"]
    else:
        lines.append("(no metrics recorded)")
    if quality and "recognisable" in quality:
        lines += ["", f"Sample quality judged by a classifier of the data's own classes ({int(quality.get('n', 0))} "
                  "samples; `ebmkit.metrics.classifier`), beside held-out real images and uniform noise:", "",
                  "| measure | samples | real (ceiling) | noise (floor) |", "|---|---|---|---|"]
        for k, what in (("recognisable", "recognisable (top class p >= 0.9)"), ("coverage", "class coverage (1: even)"),
                        ("fd", "Fréchet distance in its features")):
            lines.append(f"| {what} | {_fmt(quality.get(k))} | {_fmt(quality.get('ceiling_' + k))} | "
                         f"{_fmt(quality.get('floor_' + k))} |")
    versions = state.get("versions") or {}
    lines += [
        "",
        "## Files",
        "",
        "| file | holds |",
        "|---|---|",
        *[f"| `{f}` | {f.split('.')[0]} weights (safetensors) |" for f in (state.get("files") or {})],
        "| `state.json` | config, data shape, component specs, sha256 of the weights |",
        "| `config.toml` | the recipe, for `ebmkit train` |",
        *(["| `samples.png` | the grid above |"] if has_samples else []),
        "",
        f"Exported by ebmkit {ex.get('ebmkit')} on {ex.get('date')}"
        + (f" (torch {versions['torch']})" if versions.get("torch") else "") + ".",
        "",
    ]
    return "\n".join(lines)
