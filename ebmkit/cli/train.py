"""``ebmkit train``: a run from a config file or a shipped preset."""

from __future__ import annotations

import argparse
import json

from ..presets import preset_names, resolve_config_path  # noqa: F401 (also cli's public names)
from .commands import command, command_argv, relaunch
from .options import count, resume_command


def _arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("config", help="config file, or a preset name (see `ebmkit presets`)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    t.add_argument("--out", help="run folder (overrides output.dir)")
    t.add_argument("--iterations", type=count(1), help="override training.iterations")
    t.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in the run folder")
    t.add_argument("--overwrite", action="store_true",
                   help="the run folder holds a run: move it aside to RUN.old-<date>-<time> and start afresh")
    t.add_argument("--num-processes", type=count(1), metavar="N",
                   help="train data-parallel on N processes on this machine (global batch = N x training.batch_size); "
                        "see docs/distributed.md for GPUs and several machines")


@command("train", help="train from a config file (TOML, YAML, JSON) or a preset name", arguments=_arguments)
def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..experiment import build_experiment
    from ..interrupts import Interrupted
    from ..run_folder import check_target
    from ..training.loop import Trainer

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"output.dir={json.dumps(str(args.out))}")
    if args.iterations is not None:
        overrides.append(f"training.iterations={args.iterations}")
    cfg = load_config(resolve_config_path(args.config), overrides)  # a bad config fails here, once
    # Refuse a folder this run may not use before reading any data; nothing is written until
    # the data, the components and the device have passed their checks too (Trainer.fit).
    check_target(cfg.output.dir, resume=args.resume, overwrite=args.overwrite)
    status = relaunch(args, "train")
    if status is not None:
        return status
    from ..training.diagnostics import callbacks_from_config

    trainer = Trainer(build_experiment(cfg), callbacks=callbacks_from_config(cfg.diagnostics))
    try:
        last = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    except Interrupted as exc:
        exc.args = (f"{exc} To continue: {resume_command(getattr(args, 'argv', None) or command_argv(args, 'train'), str(trainer.run_dir))}",)
        raise
    if trainer.is_main:
        summary = {k: last[k] for k in ("iteration", "energy_data", "energy_samples", "gap") if k in last}
        print(json.dumps({"run_dir": str(trainer.run_dir), **summary}))
    return 0
