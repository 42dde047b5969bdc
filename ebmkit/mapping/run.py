"""``ebmkit map RUN``: map a trained run's energy landscape.

    ebmkit map RUN --starts data:500 [--starts noise:100 --starts samples:100] [--alpha A] [--temperature T] ...

Loads the newest checkpoint of RUN as ``ebmkit sample`` does, draws the
starts, and runs :class:`~ebmkit.mapping.engine.LandscapeMapper` into
``RUN/map`` (or ``--out``); an interrupted map resumes where it stopped when
the command is run again with the same settings.  See docs/landscape.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError

START_KINDS = {
    "data": "images of the run's training split (a seeded random pick)",
    "test": "images of the run's test split (a seeded random pick)",
    "noise": "uniform noise on [-1, 1]",
    "samples": "the run's own short-run samples (its initializer, then its sampler)",
}


def parse_starts(specs: list[str] | None) -> list[tuple[str, int]]:
    """``["data:500", "noise:100"]`` (or comma-separated) -> [(kind, count), ...]."""
    out = []
    for spec in [p for s in (specs or ["data:500"]) for p in s.split(",") if p.strip()]:
        kind, colon, count = spec.strip().partition(":")
        if kind not in START_KINDS:
            from ..errors import suggest

            raise ConfigError(f"--starts {spec}: unknown kind '{kind}'{suggest(kind, START_KINDS)}; "
                              f"kinds: {', '.join(START_KINDS)}")
        try:
            n = int(count) if colon else -1
        except ValueError:
            n = -1
        if n < 1:
            raise ConfigError(f"--starts {spec}: write KIND:COUNT with a positive count, e.g. data:500")
        out.append((kind, n))
    return out


MAP_HELP = ("energy-landscape mapping by attraction-diffusion: minima, basins, barriers, disconnectivity graph, "
            "clustering (docs/landscape.md)")


def map_arguments(m: argparse.ArgumentParser) -> None:
    """The options of ``ebmkit map`` (the verb is registered by :mod:`ebmkit.cli.mapping`)."""
    from .settings import MapSettings

    f = MapSettings.model_fields

    def described(name: str) -> str:  # the setting's description and its default, as every --help shows defaults
        field = f[name]
        default = field.default if field.default_factory is None else field.default_factory()
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{field.description} (default: {shown})" if default is not None else field.description
    m.add_argument("run", help="run folder or checkpoint folder (newest checkpoint)")
    m.add_argument("--starts", action="append", metavar="KIND:N",
                   help=f"where descent starts (repeatable, default data:500); kinds: {', '.join(START_KINDS)}")
    m.add_argument("--out", help="output folder (default: RUN/map)")
    m.add_argument("--alpha", type=float, help="magnetisation (default: calibrated to the metastable window)")
    m.add_argument("--calibration-alphas", type=float, nargs="+", metavar="A", help=described("calibration_alphas"))
    for name, typ in (("temperature", float), ("delta", float), ("patience", int), ("max_steps", int),
                      ("check_every", int), ("step_size", float), ("noise", float), ("descent_steps", int),
                      ("descent_step_size", float), ("descent_tolerance", float), ("wave", int),
                      ("calibration_pairs", int), ("calibration_rate", float), ("batch_size", int), ("seed", int)):
        m.add_argument("--" + name.replace("_", "-"), type=typ, help=described(name))
    m.add_argument("--directions", choices=["both", "forward", "backward"], help=described("directions"))
    m.add_argument("--barrier-ladder", type=float, nargs="+", metavar="M", help=described("barrier_ladder"))
    m.add_argument("--box", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="keep chains in [LOW, HIGH] with a quadratic wall (default for images: -1 1)")
    m.add_argument("--no-box", action="store_true", help="no wall, also for images")
    m.add_argument("--wall", type=float, help=described("wall"))
    m.add_argument("--show", type=int, default=64, help="start images in each basin's grid")
    m.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    m.add_argument("--restart", action="store_true", help="discard a saved map in the output folder and start afresh")
    m.add_argument("--no-progress", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace, image: bool = False):
    from pydantic import ValidationError

    from ..errors import format_validation_error
    from .settings import MapSettings

    values = {k: getattr(args, k) for k in MapSettings.model_fields if getattr(args, k, None) is not None}
    if getattr(args, "no_box", False):
        values.pop("box", None)
    elif image and "box" not in values:
        values["box"] = (-1.0, 1.0)  # the toolkit's image scale
    try:
        return MapSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError("bad map settings:\n" + format_validation_error(exc, "map", MapSettings)) from None


def draw_starts(exp, kinds: list[tuple[str, int]], seed: int, device) -> tuple[Any, dict[str, Any]]:
    """The start points and, per start, its kind, dataset index and label (None where there is none)."""
    import torch

    from ..experiment import load_dataset
    from ..registry import default_registry
    from ..sampling import seeded

    parts, kind_of, index, label = [], [], [], []
    g = torch.Generator().manual_seed(seed)
    for n_kind, (kind, n) in enumerate(kinds):
        if kind in ("data", "test"):
            split = "train" if kind == "data" else "test"
            ds = exp.dataset if split == "train" and exp.dataset is not None else load_dataset(exp.config, split)[0]
            source = default_registry().build("dataset", exp.config.data.name, exp.config.data.params, where="data")
            labels = source.labels(split)
            pick = torch.randperm(len(ds), generator=g)[:n]
            parts.append(torch.stack([ds[int(i)] for i in pick]))
            index += pick.tolist()
            label += [int(labels[i]) for i in pick] if labels is not None else [None] * len(pick)
            kind_of += [kind] * len(pick)
            continue
        if kind == "noise":
            parts.append(torch.rand(n, *exp.shape, generator=g) * 2 - 1)
        else:  # samples: as `ebmkit sample` draws them
            with seeded(seed + 1 + n_kind, torch.device(device)):
                data = None
                if exp.initializer.needs_data:
                    idx = torch.randperm(len(exp.dataset))[:n]
                    data = torch.stack([exp.dataset[int(i)] for i in idx]).to(device)
                z = exp.initializer.sample(n, data=data)
                parts.append(exp.sampler.run(exp.energy, z).x.detach().cpu())
        index += [None] * n
        label += [None] * n
        kind_of += [kind] * n
    info = {"kind": kind_of, "index": index, "label": label if any(v is not None for v in label) else None}
    return torch.cat([p.float() for p in parts]), info


def cmd_map(args: argparse.Namespace) -> int:
    import torch

    from ..conditional import ConditionalEnergy
    from ..experiment import load_trained
    from ..registry import default_registry
    from .engine import LandscapeMapper
    from .report import write_report

    settings_from_args(args)  # bad values fail before the checkpoint loads
    kinds = parse_starts(args.starts)
    if args.show < 0:
        raise ConfigError(f"--show must not be negative, got {args.show}")
    needs_data = any(k in ("data", "test") for k, _ in kinds)
    exp = load_trained(args.run, device=args.device, with_data=True if needs_data else None)
    if isinstance(exp.energy, ConditionalEnergy):
        raise ConfigError(f"ebmkit map maps an unconditional energy U(x); this checkpoint's energy "
                          f"'{exp.config.energy.name}' is conditional, U(x | y)")
    settings = settings_from_args(args, image=len(exp.shape) == 3)
    step = settings.step_size if settings.step_size is not None else getattr(exp.sampler, "step_size", None)
    noise = settings.noise if settings.noise is not None else getattr(exp.sampler, "noise", None)
    if step is None or noise is None:
        raise ConfigError(f"the run's sampler '{exp.config.sampler.name}' has no step_size / noise to copy; "
                          "give --step-size and --noise")
    reg = default_registry()
    ad_sampler = reg.build("sampler", "langevin", {"steps": 1, "step_size": float(step), "noise": float(noise)}, where="map")
    descent = reg.build("sampler", "gradient-descent", {"steps": 1, "step_size": float(settings.descent_step_size or step)},
                        where="map")
    run_dir = Path(args.run)
    out = Path(args.out) if args.out else (run_dir if (run_dir / "checkpoints").is_dir() else exp.checkpoint.path.parent.parent) / "map"
    identity = {"checkpoint": str(Path(exp.checkpoint.path).resolve()), "iteration": exp.checkpoint.iteration,
                "starts": [f"{k}:{n}" for k, n in kinds], "ad_step_size": float(step), "ad_noise": float(noise)}
    mapper = LandscapeMapper(exp.energy, ad_sampler, descent, settings, out, identity=identity,
                             progress=not args.no_progress, restart=args.restart, device=args.device)
    if "starts" not in mapper.tensors:
        torch.manual_seed(settings.seed)
        x, info = draw_starts(exp, kinds, settings.seed, args.device)
        mapper.set_starts(x, info)
    mapper.run()
    title = f"{exp.config.data.name}, {exp.config.energy.name}, iteration {exp.checkpoint.iteration}: " \
            f"T={settings.temperature:g}, alpha={mapper.state['alpha']:.3g}"
    summary = write_report(mapper, title=title, show=args.show)
    short = {k: summary[k] for k in ("out", "starts", "minima", "basins", "alpha", "delta", "seconds", "resumed")}
    if summary.get("clustering"):
        c = summary["clustering"]
        short["clustering"] = {m: {k: round(v, 4) for k, v in c[m].items()} for m in ("attraction_diffusion", "kmeans")}
    print(json.dumps(short))
    return 0


__all__ = ["START_KINDS", "map_arguments", "MAP_HELP", "cmd_map", "draw_starts", "parse_starts", "settings_from_args"]
