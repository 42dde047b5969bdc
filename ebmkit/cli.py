"""The ``ebmkit`` command line.

    ebmkit train CONFIG|PRESET [--set section.key=value ...] [--resume] [--num-processes N]
    ebmkit sample CHECKPOINT --n 64 --out grid.png [--num-processes N]
    ebmkit inpaint CHECKPOINT [--images test] [--mask centre:fraction=0.5] [--samples 4] [--out DIR]
    ebmkit cooperative-sample CHECKPOINT --out DIR [--steps K] [--record 0,5,10]
    ebmkit generate | interpolate | reconstruct | super-resolve CHECKPOINT [...]   (docs/generator.md)
    ebmkit map RUN --starts data:500 [...]   (docs/landscape.md)
    ebmkit plugins [--kind KIND]
    ebmkit presets

Errors meant for the user (bad config, missing data, corrupt checkpoint...)
print one message and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from .errors import EbmkitError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


# -- presets -----------------------------------------------------------------------------


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("ebmkit.presets").iterdir() if p.name.endswith(".toml"))


def resolve_config_path(name: str) -> Path:
    """A path to a config file, or the name of a shipped preset."""
    path = Path(name)
    if path.exists() or path.suffix:
        return path
    if name in preset_names():
        return Path(str(resources.files("ebmkit.presets") / f"{name}.toml"))
    from .errors import ConfigError, suggest

    raise ConfigError(f"no config file '{name}' and no preset of that name{suggest(name, preset_names())}; presets: {', '.join(preset_names())}")


# -- commands ----------------------------------------------------------------------------


@command
def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .experiment import build_experiment
    from .trainer import Trainer

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"output.dir={json.dumps(str(args.out))}")
    if args.iterations:
        overrides.append(f"training.iterations={args.iterations}")
    cfg = load_config(resolve_config_path(args.config), overrides)  # a bad config fails here, once
    status = _relaunch(args, "train")
    if status is not None:
        return status
    from .diagnostics import callbacks_from_config

    trainer = Trainer(build_experiment(cfg), callbacks=callbacks_from_config(cfg.diagnostics))
    last = trainer.fit(resume=args.resume)
    if trainer.is_main:
        summary = {k: last[k] for k in ("iteration", "energy_data", "energy_samples", "gap") if k in last}
        print(json.dumps({"run_dir": str(trainer.run_dir), **summary}))
    return 0


@command
def cmd_sample(args: argparse.Namespace) -> int:
    status = _relaunch(args, "sample")
    if status is not None:
        return status
    import torch
    from accelerate import PartialState

    from .distributed import map_batches
    from .errors import ConfigError
    from .experiment import load_trained
    from .images import save_grid

    if args.n < 1 or args.batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be positive, got {args.n} and {args.batch_size}")
    state = PartialState(cpu=args.device == "cpu")
    device = torch.device(args.device) if state.num_processes == 1 else state.device
    exp = load_trained(args.checkpoint, device=device)

    def draw(start: int, stop: int) -> torch.Tensor:
        n = stop - start
        z = exp.initializer.sample(n, data=_data_batch(exp, n, device) if exp.initializer.needs_data else None)
        return exp.sampler.run(exp.energy, z, steps=args.steps).x

    # Batches split across processes; batch j seeded from (seed, j): the same samples on any process count.
    x = map_batches(draw, args.n, args.batch_size, seed=args.seed, state=state)
    if not state.is_main_process:
        return 0
    if len(exp.shape) != 3 or Path(args.out).suffix == ".pt":
        out = Path(args.out).with_suffix(".pt")
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(x.cpu(), out)
    else:
        out = save_grid(x, args.out)
    print(json.dumps({"checkpoint": str(exp.checkpoint.path), "iteration": exp.checkpoint.iteration, "n": args.n,
                      "processes": state.num_processes, "out": str(out)}))
    return 0


@command
def cmd_cooperative_sample(args: argparse.Namespace) -> int:
    """VAE proposals, their Langevin revisions, the revision strip and a latent
    interpolation from a cooperative (VAE-initialised) checkpoint."""
    import torch

    from . import cooperative
    from .errors import ConfigError
    from .experiment import load_trained
    from .images import save_grid, save_rows

    if args.n < 1 or args.strip < 0 or args.pairs < 0:
        raise ConfigError(f"--n must be positive and --strip / --pairs not negative, got {args.n}, {args.strip}, {args.pairs}")
    if args.steps is not None and args.steps < 0:
        raise ConfigError(f"--steps must be 0 or more, got {args.steps}")
    exp = load_trained(args.checkpoint, device=args.device)
    cooperative.require_latent(exp.initializer, exp.config.initializer.name)
    k = exp.sampler.steps if args.steps is None else args.steps
    try:
        record = tuple(int(s) for s in args.record.split(",")) if args.record else cooperative.default_record(k)
    except ValueError:
        raise ConfigError(f"--record must be comma-separated step numbers, got '{args.record}'") from None
    if any(s < 0 or s > k for s in record):
        raise ConfigError(f"--record steps must lie in 0..K={k}, got {args.record}")
    out = Path(args.out)
    torch.manual_seed(args.seed)
    rev = cooperative.propose_and_revise(exp.energy, exp.initializer, exp.sampler, args.n, steps=k, record=record)
    files = {"proposal": save_grid(rev.proposal, out / "proposal.png"), "revised": save_grid(rev.revised, out / "revised.png")}
    if args.strip:
        files["strip"] = save_rows(cooperative.strip_rows(rev, args.strip), out / "revision-strip.png")
    if args.pairs:
        rho, x0, xk = cooperative.interpolate(exp.energy, exp.initializer, exp.sampler, pairs=args.pairs,
                                              points=args.points, steps=k)
        files["interpolation"] = save_rows([r for pair in zip(x0, xk) for r in pair], out / "interpolation.png")
    summary = {
        "checkpoint": str(exp.checkpoint.path), "iteration": exp.checkpoint.iteration, "n": args.n, "steps": k,
        "seed": args.seed, "strip_steps": sorted(rev.trajectory),
        "energy_proposal_mean": rev.energy_proposal.mean().item(), "energy_revised_mean": rev.energy_revised.mean().item(),
        "mean_abs_revision": (rev.revised - rev.proposal).abs().mean().item(),
        "files": {k_: str(v) for k_, v in files.items()},
        "layout": {"strip": "one row per sample: the proposal, then the chain at strip_steps",
                   "interpolation": "per pair two rows: VAE proposals at rho = 0..1, then after K Langevin steps"},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


def _data_batch(exp, n: int, device: str):
    import torch

    idx = torch.randperm(len(exp.dataset))[:n]
    return torch.stack([exp.dataset[int(i)] for i in idx]).to(device)


# -- inpainting (docs/conditional.md) ---------------------------------------------------


@command
def cmd_inpaint(args: argparse.Namespace) -> int:
    import torch

    from .errors import ConfigError
    from .experiment import load_trained
    from .images import save_rows
    from .inpainting import ebm_fill, inpainting_scores, masked_view, mean_fill, nearest_fill

    if args.n < 1 or args.samples < 1 or args.show < 0:
        raise ConfigError(f"--n and --samples must be positive and --show not negative, got {args.n}, {args.samples}, {args.show}")
    torch.manual_seed(args.seed)
    exp = load_trained(args.checkpoint, device=args.device, with_data=True)
    if len(exp.shape) != 3:
        raise ConfigError(f"inpainting needs an image model; this checkpoint's data has shape {exp.shape}")
    images = _inpaint_images(args.images, exp)[: args.n].to(args.device)
    height, width = images.shape[-2:]
    missing = _inpaint_masks(args.mask, exp, images.shape[0], height, width, args.seed).to(args.device)
    filled, starts = ebm_fill(exp.energy, exp.sampler, exp.initializer, images, missing, samples=args.samples,
                              steps=args.steps, return_starts=True)
    scores = {"ebm": inpainting_scores(images, filled, missing)}
    learnt = exp.initializer.optimizer_state_dict() is not None
    if learnt:  # a learnt proposal (conditional-vae): score the chain starts alone too
        scores["proposal"] = inpainting_scores(images, starts, missing)
    if not args.no_baselines:  # both read the whole training set
        train = torch.stack([exp.dataset[i] for i in range(len(exp.dataset))]).to(args.device)
        scores["mean_fill"] = inpainting_scores(images, mean_fill(train, images, missing), missing)
        scores["nearest_fill"] = inpainting_scores(images, nearest_fill(train, images, missing), missing)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    show = min(args.show, images.shape[0])
    rows = [torch.cat([masked_view(images[i : i + 1], missing[i : i + 1]), *((starts[:1, i],) if learnt else ()),
                       filled[:, i], images[i : i + 1]]) for i in range(show)]
    strip = save_rows(rows, out / "inpaint.png") if rows else None
    summary = {"checkpoint": str(exp.checkpoint.path), "iteration": exp.checkpoint.iteration, "images": args.images,
               "n": int(images.shape[0]), "mask": args.mask or "(the checkpoint's)", "samples": args.samples,
               "missing_fraction": float(missing.float().mean()), "scores": scores,
               "strip": str(strip) if strip else None,
               "strip_layout": "one row per image: masked input (missing pixels grey), "
                               + ("the first sample's proposal, " if learnt else "") + "the samples, the truth"}
    (out / "scores.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


def _inpaint_images(source: str, exp):
    """'test' / 'train' (the checkpoint's dataset), a folder of images, or a .npy / .pt array in [-1, 1]."""
    import numpy as np
    import torch

    from .data import check_dataset
    from .errors import DataError
    from .experiment import load_dataset
    from .registry import default_registry

    if source in ("test", "train"):
        ds, _ = load_dataset(exp.config, source)
    else:
        path = Path(source)
        if path.suffix.lower() in (".npy", ".pt"):
            if not path.is_file():
                raise DataError(f"--images: file not found: {path}")
            arr = torch.as_tensor(np.load(path)) if path.suffix.lower() == ".npy" else torch.load(path, weights_only=True)
            from .data import TensorImages

            ds = TensorImages(torch.as_tensor(arr).float())
        else:
            c, h, _ = exp.shape
            ds = default_registry().build("dataset", "image-folder", {"root": str(path), "image_size": h, "channels": c},
                                          where="--images").load("train")
    shape = check_dataset(ds, name=source)
    if tuple(shape) != tuple(exp.shape):
        raise DataError(f"--images {source}: images of shape {tuple(shape)}, the checkpoint models {tuple(exp.shape)}")
    return torch.stack([ds[i] for i in range(len(ds))])


def _inpaint_masks(spec: str | None, exp, n: int, height: int, width: int, seed: int):
    """--mask NAME[:key=value,...] (a registered mask generator), a mask file, or the checkpoint's own generator."""
    import torch

    from .config import parse_value
    from .errors import ConfigError
    from .inpainting import load_mask_file
    from .registry import default_registry

    if spec and Path(spec).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".npy", ".pt"):
        m = load_mask_file(spec, height, width)
        if m.shape[0] not in (1, n):
            raise ConfigError(f"--mask {spec} holds {m.shape[0]} masks for {n} images")
        return m.expand(n, -1, -1, -1)
    if spec:
        name, _, rest = spec.partition(":")
        params = {}
        for item in filter(None, rest.split(",")):
            key, eq, raw = item.partition("=")
            if not eq:
                raise ConfigError(f"--mask {spec}: write parameters as key=value, e.g. centre:fraction=0.5")
            params[key.strip()] = parse_value(raw)
        generator = default_registry().build("mask", name.strip(), params, where="--mask")
    else:
        generator = getattr(exp.initializer, "masks", None)
        if generator is None:
            raise ConfigError("this checkpoint's initializer draws no masks; give --mask NAME[:key=value,...]")
    return generator.sample(n, height, width, generator=torch.Generator().manual_seed(seed))


# -- data-parallel runs (ebmkit.distributed) ---------------------------------------------


def _relaunch(args: argparse.Namespace, command: str) -> int | None:
    """With ``--num-processes N`` (N > 1) outside a launcher: run N copies of
    this command through torch.distributed's launcher and return their exit
    status.  ``None`` when this process does the work itself (one process,
    or already one of N started by a launcher)."""
    from .distributed import launch, launched

    n = getattr(args, "num_processes", None)
    if n is not None and n < 1:
        from .errors import ConfigError

        raise ConfigError(f"--num-processes must be at least 1, got {n}")
    if not n or n == 1 or launched():
        return None
    return launch(command_argv(args, command), n)


def command_argv(args: argparse.Namespace, command: str) -> list[str]:
    """The command line that parses back to ``args`` (less ``--num-processes``),
    for the launched copies; works for any option the sub-command declares."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    argv = [command]
    for action in sub._actions:
        if action.dest in ("help", "num_processes"):
            continue
        value = getattr(args, action.dest, action.default)
        if not action.option_strings:  # a positional
            argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        elif value == action.default:
            continue
        elif action.nargs == 0:  # store_true / store_false / store_const
            argv.append(action.option_strings[-1])
        elif isinstance(action, argparse._AppendAction):
            argv += [f"{action.option_strings[-1]}={v}" for v in value]
        elif isinstance(value, (list, tuple)):
            argv += [action.option_strings[-1], *map(str, value)]
        else:
            argv.append(f"{action.option_strings[-1]}={value}")
    return argv


@command
def cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import HOOKS, default_registry

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        reg = default_registry()
    kinds = [args.kind] if args.kind else list(HOOKS)
    rows = [(r.kind, r.name, r.source, r.plugin, r.summary) for k in kinds for r in sorted(reg.components(k).values(), key=lambda r: r.name)]
    widths = [max(len(str(r[i])) for r in rows + [("kind", "name", "source", "plug-in", "")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("kind", "name", "source", "plug-in"), widths)) + "  description")
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    for failure in reg.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 0


@command
def cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        text = (resources.files("ebmkit.presets") / f"{name}.toml").read_text()
        first = text.splitlines()[0].lstrip("# ") if text else ""
        print(f"{name:28s} {first}")
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebmkit", description="Energy-based models with short-run MCMC.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a config file (TOML, YAML, JSON) or a preset name")
    t.add_argument("config", help="config file, or a preset name (see `ebmkit presets`)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    t.add_argument("--out", help="run folder (overrides output.dir)")
    t.add_argument("--iterations", type=int, help="override training.iterations")
    t.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in the run folder")
    t.add_argument("--num-processes", type=int, metavar="N",
                   help="train data-parallel on N processes on this machine (global batch = N x training.batch_size); "
                        "see docs/distributed.md for GPUs and several machines")

    s = sub.add_parser("sample", help="draw samples from a trained checkpoint")
    s.add_argument("checkpoint", help="checkpoint folder or run folder (newest checkpoint)")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", default="samples.png")
    s.add_argument("--steps", type=int, default=None, help="override K")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1...; with several processes each uses its own GPU")
    s.add_argument("--batch-size", type=int, default=256, help="chains run at once per process")
    s.add_argument("--num-processes", type=int, metavar="N", help="split the n samples across N processes")

    _inpaint_parser(sub)
    c = sub.add_parser("cooperative-sample", help="VAE proposals, Langevin revisions, revision strip and latent "
                       "interpolation from a cooperative (initializer = vae) checkpoint")
    c.add_argument("checkpoint", help="checkpoint folder or run folder (newest checkpoint)")
    c.add_argument("--out", default="cooperative-samples", help="folder for the PNGs and summary.json")
    c.add_argument("--n", type=int, default=64, help="proposals (and revised samples) in the grids")
    c.add_argument("--steps", type=int, default=None, help="Langevin steps K of the revision (default: the trained K)")
    c.add_argument("--record", default=None, help="steps shown in the revision strip, e.g. 0,2,5,10 (default: 6 from 0 to K)")
    c.add_argument("--strip", type=int, default=8, help="rows (samples) in the revision strip (0: none)")
    c.add_argument("--pairs", type=int, default=4, help="latent pairs to interpolate (0: none)")
    c.add_argument("--points", type=int, default=8, help="points along each interpolation")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu")

    pl = sub.add_parser("plugins", help="list every registered component and its source")
    pl.add_argument("--kind", choices=["energy", "initializer", "sampler", "objective", "dataset", "mask"])

    sub.add_parser("presets", help="list the shipped preset configs")

    from .generator_cli import add_generator_commands  # generate, interpolate, reconstruct, super-resolve

    add_generator_commands(sub, COMMANDS)
    from .mapping.run import add_map_command  # ebmkit map (docs/landscape.md)

    add_map_command(sub, COMMANDS)
    return p


def _inpaint_parser(sub) -> None:
    i = sub.add_parser("inpaint", help="fill in masked pixels with a conditional checkpoint; PNG strips and PSNR / SSIM")
    i.add_argument("checkpoint", help="checkpoint folder or run folder of a conditional model (docs/conditional.md)")
    i.add_argument("--images", default="test", help="'test' or 'train' (the checkpoint's dataset), a folder of images, "
                                                    "or a .npy / .pt array (N, C, H, W) in [-1, 1]")
    i.add_argument("--mask", help="mask generator NAME[:key=value,...] (e.g. centre:fraction=0.5, half:side=left; "
                                  "see `ebmkit plugins --kind mask`) or a mask file (PNG: white = missing; .npy/.pt: "
                                  "nonzero = missing); default: the checkpoint's")
    i.add_argument("--n", type=int, default=256, help="images to inpaint (the first N)")
    i.add_argument("--samples", type=int, default=4, help="completions per image")
    i.add_argument("--show", type=int, default=8, help="images in the PNG strip")
    i.add_argument("--steps", type=int, default=None, help="override K")
    i.add_argument("--seed", type=int, default=0, help="seeds the masks and the chains")
    i.add_argument("--device", default="cpu")
    i.add_argument("--out", default="inpaint", help="folder for inpaint.png and scores.json")
    i.add_argument("--no-baselines", action="store_true",
                   help="skip mean and nearest-neighbour fill (they read the whole training set)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings meant for users (a corrupt checkpoint skipped, a plug-in that
    failed to load, a rollback) as one plain line, not a source location."""
    print(f"ebmkit: warning: {message}", file=file or sys.stderr)


class _StderrHandler(logging.StreamHandler):
    """Log lines ("resuming from ...") to whatever sys.stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    log = logging.getLogger("ebmkit")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("ebmkit: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except EbmkitError as exc:
        print(f"ebmkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
