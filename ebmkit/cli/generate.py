"""Every verb that draws from a trained model: ``ebmkit sample | generate |
interpolate | reconstruct | super-resolve``, all through
:class:`~ebmkit.generation.generator.ShortRunGenerator`.

Each reads a trained checkpoint (a checkpoint or run folder).  ``sample``
writes a grid (or a ``.pt`` of samples), split across processes with
``--num-processes``; the others write their figures as PNG into ``--out`` (a
folder) and the numbers as ``<command>.json`` there, and print that JSON.
See docs/generator.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError
from .commands import CHECKPOINT_HELP, add_output_options, command, model_threads, output_folder, relaunch
from .options import count, device, number

if TYPE_CHECKING:  # torch loads only when a command runs, so `ebmkit --help` stays quick
    from torch import Tensor


def _common(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    add_output_options(p, verb)
    p.add_argument("--seed", type=count(0), default=0, help="seeds the chain starts and the chains' noise")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1 ...")


def _images(p: argparse.ArgumentParser, n: int) -> None:
    p.add_argument("--n", type=count(1), default=n, help="how many images")
    p.add_argument("--images", help=".pt / .npy / .npz file of (N, C, H, W) images in [-1, 1] "
                                    "(default: a seeded random pick from the checkpoint's dataset, --split)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="dataset split to pick from")


def _sample_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("checkpoint", help=CHECKPOINT_HELP)
    s.add_argument("--n", type=count(1), default=64, help="how many samples")
    s.add_argument("--out", default=None, help="a .png grid, or a .pt file of the samples themselves (default: "
                                               "RUN/sample/samples.png in the model's run folder)")
    s.add_argument("--scale", type=count(0), default=0, metavar="N",
                   help="enlarge each image in the grid N times (nearest); 0: small images grow to at least 32 px")
    s.add_argument("--steps", type=count(0), default=None, help="override K, the chain length (default: the trained K)")
    s.add_argument("--seed", type=count(0), default=0, help="batch j of the chains is seeded from (seed, j)")
    s.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1...; with several processes each uses its own GPU")
    s.add_argument("--batch-size", type=count(1), default=256, help="chains run at once per process")
    s.add_argument("--num-processes", type=count(1), metavar="N", help="split the n samples across N processes")


def _generate_arguments(g: argparse.ArgumentParser) -> None:
    _common(g, "generate")
    g.add_argument("--n", type=count(1), default=64, help="samples in the grid")
    g.add_argument("--steps", type=count(0), default=None, help="override K for the samples (default: the trained K)")
    g.add_argument("--chains", type=count(1), default=8, help="chains in the transition strip (one per row)")
    g.add_argument("--transition-steps", type=count(0), nargs="+", default=None, metavar="K",
                   help="steps shown in the strip (default: 8 from 0 to K)")
    g.add_argument("--batch-size", type=count(1), default=256, help="chains run at once")


def _interpolate_arguments(i: argparse.ArgumentParser) -> None:
    _common(i, "interpolate")
    i.add_argument("--pairs", type=count(1), default=6, help="pairs (rows of the grid)")
    i.add_argument("--points", type=count(1), default=9, help="rho grid points from 1 (z1) to 0 (z2)")
    i.add_argument("--rhos", type=number(0, 1), nargs="+", default=None, help="explicit rho grid (overrides --points)")
    i.add_argument("--fixed-noise", action="store_true", help="also interpolate with the Langevin noise held fixed")


def _reconstruct_arguments(r: argparse.ArgumentParser) -> None:
    _common(r, "reconstruct")
    _images(r, 64)
    r.add_argument("--iterations", type=count(1), default=200, help="optimiser steps (the paper: 200)")
    r.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="optimiser for z")
    r.add_argument("--lr", type=number(0, above=True), default=0.05, help="its learning rate")
    r.add_argument("--infer-noise", action="store_true", help="also fit the per-step Langevin noise")
    r.add_argument("--noise-prior", type=number(0), default=1.0, help="weight of the N(0, I) prior on inferred noise")
    r.add_argument("--checkpoint-every", type=count(0), default=0,
                   help="gradient checkpointing: steps per recomputed segment (0: off, 1: least memory)")
    r.add_argument("--batch-size", type=count(1), default=64, help="images reconstructed at once")
    r.add_argument("--show", type=count(1), default=8, help="images in the reconstruction-path figure")


def _super_resolve_arguments(s: argparse.ArgumentParser) -> None:
    _common(s, "super-resolve")
    _images(s, 8)
    s.add_argument("--seeds", type=count(0), nargs="+", default=[0, 1, 2], help="one output per seed and image")


# -- helpers ------------------------------------------------------------------------------


def _generator(args: argparse.Namespace):
    from ..generation.generator import ShortRunGenerator

    gen = ShortRunGenerator.from_checkpoint(args.checkpoint, device=args.device)
    model_threads(gen.experiment, args.device, getattr(args, "batch_size", 64))
    return gen


def _positive(**values: int) -> None:
    bad = [f"--{k.replace('_', '-')} = {v}" for k, v in values.items() if v is None or v < 1]
    if bad:
        raise ConfigError(f"must be positive: {', '.join(bad)}")


def _finish(args: argparse.Namespace, name: str, gen, numbers: dict[str, Any]) -> int:
    out = Path(args.out)
    record = {"command": name, "checkpoint": str(gen.experiment.checkpoint.path),
              "iteration": gen.experiment.checkpoint.iteration, "K": gen.steps, "seed": args.seed, **numbers}
    path = out / f"{name}.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    return 0


def _rows(*columns: Tensor) -> list[Tensor]:
    """Columns ``(N, *shape)`` each -> N figure rows, row i holding image i of every column."""

    import torch

    return list(torch.stack([c.detach().float().cpu() for c in columns], dim=1))


def load_image_file(path: str | Path) -> Tensor:
    """``(N, C, H, W)`` images in [-1, 1] from .pt (tensors only) or .npy / .npz (no pickle)."""
    from ..data import load_array

    x = load_array(path, what="images").float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DataError(f"{path}: expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    if x.numel() and (x.min() < -1.001 or x.max() > 1.001):
        raise DataError(f"{path}: images must be scaled to [-1, 1], found values in [{x.min():.3g}, {x.max():.3g}]")
    return x


def _pick_images(args: argparse.Namespace, gen) -> tuple[Tensor, str]:
    import torch

    if args.images:
        x = load_image_file(args.images)[: args.n]
        return x, str(args.images)
    from ..data import random_batch
    from ..experiment import load_dataset

    ds, _ = load_dataset(gen.experiment.config, args.split)
    x = random_batch(ds, args.n, generator=torch.Generator().manual_seed(args.seed))
    return x, f"{gen.experiment.config.data.name} ({args.split} split, seeded pick)"


def mean_image(gen, limit: int = 10_000) -> Tensor | None:
    """The mean of the training images: the constant baseline reconstruction."""
    import torch
    from ..experiment import load_dataset

    try:
        ds, _ = load_dataset(gen.experiment.config, "train")
    except DataError:
        return None
    n = min(len(ds), limit)
    return torch.stack([ds[j] for j in range(n)]).float().mean(0)


# -- commands -----------------------------------------------------------------------------


@command("sample", help="draw samples from a trained checkpoint", arguments=_sample_arguments)
def cmd_sample(args: argparse.Namespace) -> int:
    status = relaunch(args, "sample")
    if status is not None:
        return status
    import torch
    from accelerate import PartialState

    from ..distributed import map_batches
    from ..generation.generator import ShortRunGenerator
    from ..images import save_grid

    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a folder; give a file name such as grid.png (or samples.pt)")
    state = PartialState(cpu=args.device == "cpu")
    device = torch.device(args.device) if state.num_processes == 1 else state.device
    from ..checkpoint import run_folder
    from ..generation.generator import progress_bar

    gen = ShortRunGenerator.from_checkpoint(args.checkpoint, device=device)
    model_threads(gen.experiment, device, args.batch_size)
    target = Path(args.out) if args.out else run_folder(gen.experiment.checkpoint.path) / "sample" / "samples.png"
    batches = -(-args.n // args.batch_size)
    bar = progress_bar(range(-(-batches // state.num_processes)), state.is_main_process, "sample", unit="batch")

    def draw(start: int, stop: int):
        x = gen.draw(stop - start, steps=args.steps)
        bar.update(1)  # this process's batches
        return x

    # Batches split across processes; batch j seeded from (seed, j): the same samples on any process count.
    x = map_batches(draw, args.n, args.batch_size, seed=args.seed, state=state)
    bar.close()
    if not state.is_main_process:
        return 0
    if len(gen.shape) != 3 or target.suffix == ".pt":
        out = target.with_suffix(".pt")
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(x.cpu(), out)
    else:
        out = save_grid(x, target, scale=args.scale or None)
    ckpt = gen.experiment.checkpoint
    print(json.dumps({"checkpoint": str(ckpt.path), "iteration": ckpt.iteration, "n": args.n,
                      "processes": state.num_processes, "out": str(out)}))
    return 0


@command("generate", help="samples and a transition strip (the chain from z to x_K) from a checkpoint",
         arguments=_generate_arguments)
def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from ..images import save_grid, save_rows

    _positive(n=args.n, chains=args.chains, batch_size=args.batch_size)
    gen = _generator(args)
    out = output_folder(args, gen.experiment.checkpoint.path, "generate")
    x = gen.generate(args.n, seed=args.seed, batch_size=args.batch_size, steps=args.steps, progress=True)
    steps, strip = gen.transition(args.chains, steps=args.transition_steps, seed=args.seed)
    with torch.no_grad():
        energy = gen.energy(x.to(gen.device)).mean().item()
        strip_energy = [gen.energy(strip[:, j].to(gen.device)).mean().item() for j in range(len(steps))]
    save_grid(x, out / "samples.png", scale=args.scale or None)
    save_rows(list(strip), out / "transition.png", scale=args.scale or None)
    return _finish(args, "generate", gen, {
        "n": args.n, "steps": args.steps or gen.steps, "mean_energy": energy,
        "transition_steps": list(steps), "transition_mean_energy": strip_energy,
        "files": {"samples": str(out / "samples.png"), "transition": str(out / "transition.png")}})


@command("interpolate", help="M(z_rho), z_rho = rho*z1 + sqrt(1-rho^2)*z2, for pairs (z1, z2)",
         arguments=_interpolate_arguments)
def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch
    from ..images import save_rows

    _positive(pairs=args.pairs, points=args.points)
    rhos = args.rhos if args.rhos else [1.0 - j / max(1, args.points - 1) for j in range(args.points)]
    gen = _generator(args)
    out = output_folder(args, gen.experiment.checkpoint.path, "interpolate")
    z1 = gen.sample_z(args.pairs, seed=args.seed)
    z2 = gen.sample_z(args.pairs, seed=args.seed + 1)
    results = {}
    figures = {}
    for label, noise in (("noise_free", None), ("fixed_noise", gen.draw_noise(z1, seed=args.seed + 2))):
        if label == "fixed_noise" and not args.fixed_noise:
            continue
        path = gen.interpolate(z1, z2, rhos, noise=noise)  # (R, pairs, *shape)
        ends = {}
        for rho, z in ((1.0, z1), (0.0, z2)):  # exactness check of the endpoints, when the grid has them
            if rho in rhos:
                ends[f"rho={rho:g}"] = (path[rhos.index(rho)] - gen.map(z, noise)).abs().max().item()
        with torch.no_grad():
            energies = [gen.energy(row).mean().item() for row in path]
        name = "interpolation.png" if noise is None else "interpolation-fixed-noise.png"
        save_rows(list(path.transpose(0, 1)), out / name, scale=args.scale or None)
        figures[label] = str(out / name)
        results[label] = {"endpoint_max_abs_diff": ends, "mean_energy_per_rho": energies}
    return _finish(args, "interpolate", gen, {"pairs": args.pairs, "rhos": rhos, **results, "files": figures})


def record_points(iterations: int) -> tuple[int, ...]:
    """Optimiser iterations shown in the reconstruction path: 0 and about geometric steps up to the end."""
    return tuple(sorted({0, *(max(1, round(iterations * f)) for f in (0.02, 0.05, 0.1, 0.25, 0.5)), iterations}))


@command("reconstruct", help="fit z (and optionally the noise) so that M(z) matches held-out images",
         arguments=_reconstruct_arguments)
def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch
    from ..errors import validated
    from ..generation.generator import ReconstructParams
    from ..images import save_rows
    from ..metrics import reconstruction_quality

    _positive(n=args.n, batch_size=args.batch_size)
    gen = _generator(args)
    out = output_folder(args, gen.experiment.checkpoint.path, "reconstruct")
    from ..config import quick_cap

    args.iterations = min(args.iterations, quick_cap() or args.iterations)  # documentation examples under test
    params = validated(ReconstructParams, {
        "iterations": args.iterations, "optimizer": args.optimizer, "lr": args.lr, "infer_noise": args.infer_noise,
        "noise_prior": args.noise_prior, "checkpoint_every": args.checkpoint_every,
        "record": record_points(args.iterations), "seed": args.seed}, heading="bad reconstruct parameters",
        prefix="reconstruct")
    x, source = _pick_images(args, gen)
    x = gen._check_images(x)
    parts, curves, seconds, path = [], [], 0.0, None
    batches = -(-x.shape[0] // args.batch_size)
    for j, start in enumerate(range(0, x.shape[0], args.batch_size)):
        batch = x[start:start + args.batch_size]
        rec = gen.reconstruct(batch, progress=f"reconstruct {j + 1}/{batches}", **params.model_dump())
        parts.append(rec.x.cpu())
        curves.append((batch.shape[0], rec.losses))
        seconds += rec.seconds
        if path is None:
            path = rec.path
    x_hat = torch.cat(parts)
    n = x.shape[0]
    curve = [sum(m * c[j] for m, c in curves) / n for j in range(len(curves[0][1]))]
    q = reconstruction_quality(x, x_hat)
    mean = mean_image(gen)
    baseline = None
    if mean is not None:
        b = reconstruction_quality(x, mean.expand_as(x).contiguous())
        baseline = {"mse_per_pixel": b["mse"], "psnr": b["psnr"], "ssim": b["ssim"]}
    show = max(1, min(args.show, path[params.iterations].shape[0]))
    its = sorted(path)
    # One row per image: the observed x, then M(z_t) along the optimisation (the paper's Figure 7).
    save_rows(_rows(x[:show], *[path[t][:show] for t in its]), out / "reconstruction.png", scale=args.scale or None)
    return _finish(args, "reconstruct", gen, {
        "images": source, "n": n, "mse_per_pixel": q["mse"], "mse_per_pixel_01_scale": q["mse"] / 4, "psnr": q["psnr"],
        "ssim": q["ssim"], "mean_image_baseline": baseline, "params": params.model_dump(mode="json"),
        "loss_curve": {str(t): curve[t] for t in its}, "seconds": round(seconds, 3),
        "files": {"path": str(out / "reconstruction.png")}, "path_iterations": its})


@command("super-resolve", help="upsample images with a model trained from low-resolution starts, several seeds each",
         arguments=_super_resolve_arguments)
def cmd_super_resolve(args: argparse.Namespace) -> int:
    import torch.nn.functional as F

    from ..images import save_rows

    _positive(n=args.n)
    if not args.seeds:
        raise ConfigError("--seeds needs at least one seed")
    gen = _generator(args)
    out = output_folder(args, gen.experiment.checkpoint.path, "super-resolve")
    x, source = _pick_images(args, gen)
    full = gen.to_full_size(x)
    ups = gen.super_resolve(full, seeds=args.seeds).cpu()  # (S, N, *shape)
    start = gen.low_resolution_start(full).cpu()
    numbers: dict[str, Any] = {"images": source, "n": x.shape[0], "seeds": list(args.seeds),
                               "input_size": list(x.shape[-2:])}
    size = getattr(gen.initializer, "size", None)
    if tuple(x.shape[1:]) == gen.shape:  # full-size originals: how close are the upsampled images?
        numbers["mse_per_pixel_per_seed"] = [(u - x).pow(2).mean().item() for u in ups]
        numbers["mse_per_pixel_start"] = (start - x).pow(2).mean().item()
    if size:  # does the output keep the low-resolution content?
        low = F.adaptive_avg_pool2d(full, size)
        numbers["low_resolution_size"] = size
        numbers["low_resolution_mse_per_seed"] = [(F.adaptive_avg_pool2d(u, size) - low).pow(2).mean().item() for u in ups]
        if "mse_per_pixel_start" in numbers:  # a classical upsampler for scale
            bicubic = F.interpolate(low, size=gen.shape[1:], mode="bicubic", align_corners=False).clamp(-1, 1)
            numbers["mse_per_pixel_bicubic"] = (bicubic - x).pow(2).mean().item()
    columns = [start, *ups] + ([x] if tuple(x.shape[1:]) == gen.shape else [])
    save_rows(_rows(*columns), out / "super-resolution.png", scale=args.scale or None)
    numbers["files"] = {"grid": str(out / "super-resolution.png")}
    numbers["columns"] = ["start (low resolution, full size)", *[f"seed {s}" for s in args.seeds]] + (
        ["original"] if tuple(x.shape[1:]) == gen.shape else [])
    return _finish(args, "super-resolve", gen, numbers)
