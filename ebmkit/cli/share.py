"""``ebmkit export RUN DIR``: a trained model as a folder that stands alone (:mod:`ebmkit.export`)."""

from __future__ import annotations

import argparse
import json

from .commands import CHECKPOINT_HELP, command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=CHECKPOINT_HELP)
    p.add_argument("out", help="the folder to write: weights (safetensors), state.json, config.toml, README.md "
                               "(the model card), samples.png")
    p.add_argument("--name", default=None, help="the model's name on its card (default: the folder's name)")
    p.add_argument("--command", dest="train_command", default=None, help="how the model was trained, shown on the card "
                                                  "(e.g. \"ebmkit train digits-cpu\")")
    p.add_argument("--judge", action="store_true", help="score the samples with a classifier of the data's own classes "
                                                       "for the card (labelled data: digits, mnist5k)")
    p.add_argument("--samples", type=int, default=64, help="samples in the card's grid")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")


@command("export", help="write a trained model as a self-contained folder with a model card", arguments=_arguments)
def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export

    out = export(args.run, args.out, overwrite=args.overwrite, n_samples=args.samples, judge=args.judge,
                 command=args.train_command, name=args.name)
    state = json.loads((out / "state.json").read_text())
    print(json.dumps({"out": str(out), "iteration": state["iteration"], "files": sorted(p.name for p in out.iterdir()),
                      "quality": state["export"].get("quality") or None}))
    return 0
