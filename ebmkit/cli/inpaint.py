"""``ebmkit inpaint``: fill in masked pixels with a conditional checkpoint; strips and scores (docs/conditional.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .commands import CHECKPOINT_HELP, add_output_options, command, model_threads, output_folder
from .options import count, device


def _arguments(i: argparse.ArgumentParser) -> None:
    i.add_argument("checkpoint", help=CHECKPOINT_HELP + "; a conditional model (docs/conditional.md)")
    i.add_argument("--images", default="test", help="'test' or 'train' (the checkpoint's dataset), a folder of images, "
                                                    "or a .npy / .pt array (N, C, H, W) in [-1, 1]")
    i.add_argument("--mask", help="mask generator NAME[:key=value,...] (e.g. centre:fraction=0.5, half:side=left; "
                                  "see `ebmkit plugins --kind mask`) or a mask file (PNG: white = missing; .npy/.pt: "
                                  "nonzero = missing); default: the checkpoint's")
    i.add_argument("--n", type=count(1), default=256, help="images to inpaint (the first N)")
    i.add_argument("--samples", type=count(1), default=4, help="completions per image")
    i.add_argument("--show", type=count(0), default=8, help="images in the PNG strip")
    i.add_argument("--steps", type=count(0), default=None, help="override K, the chain length (default: the trained K)")
    i.add_argument("--seed", type=count(0), default=0, help="seeds the masks and the chains")
    i.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1 ...")
    add_output_options(i, "inpaint", what="folder for inpaint.png and scores.json")
    i.add_argument("--no-baselines", action="store_true",
                   help="skip mean and nearest-neighbour fill (they read the whole training set)")


@command("inpaint", help="fill in masked pixels with a conditional checkpoint; PNG strips and PSNR / SSIM", arguments=_arguments)
def cmd_inpaint(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..experiment import load_trained
    from ..images import save_rows
    from ..generation.inpainting import ebm_fill, inpainting_scores, masked_view, mean_fill, nearest_fill

    torch.manual_seed(args.seed)
    generator = _mask_generator(args.mask)  # a bad --mask fails before anything is loaded
    exp = load_trained(args.checkpoint, device=args.device, with_data=True)
    model_threads(exp, args.device)
    if len(exp.shape) != 3:
        raise ConfigError(f"inpainting needs an image model; this checkpoint's data has shape {exp.shape}")
    images = _inpaint_images(args.images, exp)[: args.n].to(args.device)
    height, width = images.shape[-2:]
    missing = _inpaint_masks(args.mask, generator, exp, images.shape[0], height, width, args.seed).to(args.device)
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
    out = output_folder(args, exp.checkpoint.path, "inpaint")
    out.mkdir(parents=True, exist_ok=True)
    show = min(args.show, images.shape[0])
    rows = [torch.cat([masked_view(images[i : i + 1], missing[i : i + 1]), *((starts[:1, i],) if learnt else ()),
                       filled[:, i], images[i : i + 1]]) for i in range(show)]
    strip = save_rows(rows, out / "inpaint.png", scale=args.scale or None) if rows else None
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
    import torch

    from ..data import TensorImages, check_dataset, load_array
    from ..errors import DataError
    from ..experiment import load_dataset
    from ..registry import default_registry

    if source in ("test", "train"):
        ds, _ = load_dataset(exp.config, source)
    else:
        path = Path(source)
        if path.suffix.lower() in (".npy", ".npz", ".pt"):
            ds = TensorImages(load_array(path, what="--images").float())
        else:
            c, h, _ = exp.shape
            ds = default_registry().build("dataset", "image-folder", {"root": str(path), "image_size": h, "channels": c},
                                          where="--images").load("train")
    shape = check_dataset(ds, name=source)
    if tuple(shape) != tuple(exp.shape):
        raise DataError(f"--images {source}: images of shape {tuple(shape)}, the checkpoint models {tuple(exp.shape)}")
    return torch.stack([ds[i] for i in range(len(ds))])


MASK_FILES = (".png", ".jpg", ".jpeg", ".bmp", ".npy", ".npz", ".pt")


def _mask_generator(spec: str | None):
    """The mask generator ``--mask NAME[:key=value,...]`` names (None for a mask file or no --mask)."""
    from ..config import parse_value
    from ..errors import ConfigError
    from ..registry import default_registry

    if not spec or Path(spec).suffix.lower() in MASK_FILES:
        return None
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, raw = item.partition("=")
        if not eq:
            raise ConfigError(f"--mask {spec}: write parameters as key=value, e.g. centre:fraction=0.5")
        params[key.strip()] = parse_value(raw)
    return default_registry().build("mask", name.strip(), params, where="--mask")


def _inpaint_masks(spec: str | None, generator, exp, n: int, height: int, width: int, seed: int):
    """Masks from --mask: a registered mask generator (built by :func:`_mask_generator`), a mask file, or the
    checkpoint's own generator."""
    import torch

    from ..errors import ConfigError
    from ..generation.inpainting import load_mask_file

    if spec and Path(spec).suffix.lower() in MASK_FILES:
        m = load_mask_file(spec, height, width)
        if m.shape[0] not in (1, n):
            raise ConfigError(f"--mask {spec} holds {m.shape[0]} masks for {n} images")
        return m.expand(n, -1, -1, -1)
    if generator is None:
        generator = getattr(exp.initializer, "masks", None)
        if generator is None:
            raise ConfigError("this checkpoint's initializer draws no masks; give --mask NAME[:key=value,...]")
    return generator.sample(n, height, width, generator=torch.Generator().manual_seed(seed))
