"""``ebmkit map``: energy-landscape mapping of a trained run (docs/landscape.md)."""

from __future__ import annotations

import argparse

from ..mapping.run import MAP_HELP, map_arguments
from .commands import command
from .options import count, device


def _arguments(m: argparse.ArgumentParser) -> None:
    """map's own options (its numbers are validated by MapSettings before the checkpoint loads);
    --device and --show checked as they are parsed, like every verb's."""
    map_arguments(m)
    for action in m._actions:
        if action.dest == "device":
            action.type = device
        elif action.dest == "show":
            action.type = count(0)


@command("map", help=MAP_HELP, arguments=_arguments)
def cmd_map(args: argparse.Namespace) -> int:
    from ..mapping.run import cmd_map as run_map

    return run_map(args)
