"""``ebmkit map``: energy-landscape mapping of a trained run (docs/landscape.md)."""

from __future__ import annotations

import argparse

from ..mapping.run import MAP_HELP, map_arguments
from .commands import command


@command("map", help=MAP_HELP, arguments=map_arguments)
def cmd_map(args: argparse.Namespace) -> int:
    from ..mapping.run import cmd_map as run_map

    return run_map(args)
