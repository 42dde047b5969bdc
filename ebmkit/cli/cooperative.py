"""``ebmkit cooperative-sample``: a cooperative (VAE-initialised) model's proposals and their revisions."""

from __future__ import annotations

import argparse
import json

from .commands import CHECKPOINT_HELP, add_output_options, command, model_threads, output_folder
from .options import count, device


def _arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("checkpoint", help=CHECKPOINT_HELP + "; a cooperative (initializer = vae) model")
    add_output_options(c, "cooperative-sample", what="folder for the PNGs and summary.json")
    c.add_argument("--n", type=count(1), default=64, help="proposals (and revised samples) in the grids")
    c.add_argument("--steps", type=count(0), default=None, help="Langevin steps K of the revision (default: the trained K)")
    c.add_argument("--record", default=None, help="steps shown in the revision strip, e.g. 0,2,5,10 (default: 6 from 0 to K)")
    c.add_argument("--strip", type=count(0), default=8, help="rows (samples) in the revision strip (0: none)")
    c.add_argument("--pairs", type=count(0), default=4, help="latent pairs to interpolate (0: none)")
    c.add_argument("--points", type=count(2), default=8, help="points along each interpolation")
    c.add_argument("--seed", type=count(0), default=0, help="seeds the proposals and the chains")
    c.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1 ...")


@command("cooperative-sample", help="VAE proposals, Langevin revisions, revision strip and latent interpolation from a "
         "cooperative (initializer = vae) checkpoint", arguments=_arguments)
def cmd_cooperative_sample(args: argparse.Namespace) -> int:
    """VAE proposals, their Langevin revisions, the revision strip and a latent
    interpolation from a cooperative (VAE-initialised) checkpoint."""
    import torch

    from ..generation import cooperative
    from ..errors import ConfigError
    from ..experiment import load_trained
    from ..images import save_grid, save_rows

    exp = load_trained(args.checkpoint, device=args.device)
    model_threads(exp, args.device)
    cooperative.require_latent(exp.initializer, exp.config.initializer.name)
    k = exp.sampler.steps if args.steps is None else args.steps
    try:
        record = tuple(int(s) for s in args.record.split(",")) if args.record else cooperative.default_record(k)
    except ValueError:
        raise ConfigError(f"--record must be comma-separated step numbers, got '{args.record}'") from None
    if any(s < 0 or s > k for s in record):
        raise ConfigError(f"--record steps must lie in 0..K={k}, got {args.record}")
    out = output_folder(args, exp.checkpoint.path, "cooperative-sample")
    torch.manual_seed(args.seed)
    rev = cooperative.propose_and_revise(exp.energy, exp.initializer, exp.sampler, args.n, steps=k, record=record)
    scale = args.scale or None
    files = {"proposal": save_grid(rev.proposal, out / "proposal.png", scale=scale),
             "revised": save_grid(rev.revised, out / "revised.png", scale=scale)}
    if args.strip:
        files["strip"] = save_rows(cooperative.strip_rows(rev, args.strip), out / "revision-strip.png", scale=scale)
    if args.pairs:
        rho, x0, xk = cooperative.interpolate(exp.energy, exp.initializer, exp.sampler, pairs=args.pairs,
                                              points=args.points, steps=k)
        files["interpolation"] = save_rows([r for pair in zip(x0, xk) for r in pair], out / "interpolation.png", scale=scale)
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

