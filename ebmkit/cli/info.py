"""``ebmkit plugins`` and ``ebmkit presets``: what is installed."""

from __future__ import annotations

import argparse
import sys
import warnings
from importlib import resources

from .commands import command
from ..presets import preset_names


def _plugins_arguments(p: argparse.ArgumentParser) -> None:
    from ..interfaces import KINDS

    p.add_argument("--kind", choices=[k.name for k in KINDS], help="only this kind of component (default: every kind)")


@command("plugins", help="list every registered component and its source", arguments=_plugins_arguments)
def cmd_plugins(args: argparse.Namespace) -> int:
    from ..interfaces import KINDS
    from ..registry import default_registry

    with warnings.catch_warnings(record=True):  # failures are listed below, once
        warnings.simplefilter("always")
        reg = default_registry()
        kinds = [args.kind] if args.kind else [k.name for k in KINDS]
        rows = [(r.kind, r.name, r.source, r.plugin, r.summary) for k in kinds
                for r in sorted(reg.components(k).values(), key=lambda r: r.name)]
    widths = [max(len(str(r[i])) for r in rows + [("kind", "name", "source", "plug-in", "")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("kind", "name", "source", "plug-in"), widths)) + "  description")
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    for failure in reg.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 0


@command("presets", help="list the shipped preset configs", arguments=lambda p: None)
def cmd_presets(args: argparse.Namespace) -> int:
    names = preset_names()
    width = max(map(len, names), default=0)  # one column for the descriptions, however long a name
    for name in names:
        text = (resources.files("ebmkit.presets") / f"{name}.toml").read_text()
        first = text.splitlines()[0].lstrip("# ") if text else ""
        print(f"{name.ljust(width)}  {first}")
    return 0
