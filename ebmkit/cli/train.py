"""``ebmkit train``: a run from a config file or a shipped preset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..presets import preset_names, resolve_config_path  # noqa: F401 (also cli's public names)
from .commands import command, relaunch


def _arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("config", help="config file, or a preset name (see `ebmkit presets`)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    t.add_argument("--out", help="run folder (overrides output.dir)")
    t.add_argument("--iterations", type=int, help="override training.iterations")
    t.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in the run folder")
    t.add_argument("--num-processes", type=int, metavar="N",
                   help="train data-parallel on N processes on this machine (global batch = N x training.batch_size); "
                        "see docs/distributed.md for GPUs and several machines")


@command("train", help="train from a config file (TOML, YAML, JSON) or a preset name", arguments=_arguments)
def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..experiment import build_experiment
    from ..training.loop import Trainer

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"output.dir={json.dumps(str(args.out))}")
    if args.iterations:
        overrides.append(f"training.iterations={args.iterations}")
    cfg = load_config(resolve_config_path(args.config), overrides)  # a bad config fails here, once
    status = relaunch(args, "train")
    if status is not None:
        return status
    from ..training.diagnostics import callbacks_from_config

    trainer = Trainer(build_experiment(cfg), callbacks=callbacks_from_config(cfg.diagnostics))
    last = trainer.fit(resume=args.resume)
    if trainer.is_main:
        summary = {k: last[k] for k in ("iteration", "energy_data", "energy_samples", "gap") if k in last}
        print(json.dumps({"run_dir": str(trainer.run_dir), **summary}))
    return 0
