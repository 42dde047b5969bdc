"""The command registry: each verb of ``ebmkit`` declared once, with its help
line, its arguments and the function that runs it.

A module per group of verbs (:mod:`~ebmkit.cli.train`,
:mod:`~ebmkit.cli.generate`, ...) registers its verbs with :func:`command`;
:func:`build_parser` builds the parser from what is registered, and
:func:`command_argv` turns parsed arguments back into a command line for the
processes of a data-parallel launch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from .options import Parser, count

Arguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One verb: ``ebmkit NAME ...``."""

    name: str
    help: str
    arguments: Arguments
    run: Run


COMMANDS: dict[str, Command] = {}
"""Every registered verb, in the order the parser lists them."""


def command(name: str, *, help: str, arguments: Arguments) -> Callable[[Run], Run]:
    """Register the decorated function as the verb ``name``."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless that is nothing (None, False) or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and "default" not in text
                and action.nargs != 0):
            shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else "%(default)s"
            text += f" (default: {shown})"
        return text


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = Parser(prog="ebmkit", description="Energy-based models with short-run MCMC.", formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"ebmkit {__version__} (distribution shortrun-ebm)")
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for c in COMMANDS.values():
        c.arguments(sub.add_parser(c.name, help=c.help, description=c.help, formatter_class=HelpFormatter))
    return p


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the verb ``name`` inside ``parser`` (from :func:`build_parser`)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def add_output_options(p: argparse.ArgumentParser, verb: str, *, what: str = "output folder") -> None:
    """``--out`` (default: under the model's run folder) and ``--scale`` for a verb that writes figures."""
    p.add_argument("--out", default=None, help=f"{what} (default: RUN/{verb}/ in the model's run folder; runs/NAME/{verb}/ "
                                               "for a shipped model)")
    p.add_argument("--scale", type=count(0), default=0, metavar="N",
                   help="enlarge each image in the figures N times (nearest); 0: small images grow to at least 32 px")


def output_folder(args: argparse.Namespace, checkpoint_path, verb: str):
    """``--out`` as given, else RUN/<verb>/ (:func:`ebmkit.checkpoint.run_folder`); stored back in ``args.out``."""
    from pathlib import Path

    from ..checkpoint import run_folder

    if not args.out:
        args.out = str(run_folder(checkpoint_path) / verb)
    return Path(args.out)


CHECKPOINT_HELP = ("a run folder (its newest checkpoint), a checkpoint folder, a folder written by `ebmkit export`, "
                   "or the name of a model shipped with ebmkit (e.g. digits)")


def command_argv(args: argparse.Namespace, name: str) -> list[str]:
    """The command line that parses back to ``args`` (less ``--num-processes``),
    for the launched copies; works for any option the verb declares."""
    parser = Parser(prog=f"ebmkit {name}")
    COMMANDS[name].arguments(parser)
    argv = [name]
    for action in parser._actions:
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


def relaunch(args: argparse.Namespace, name: str) -> int | None:
    """With ``--num-processes N`` (N > 1) outside a launcher: run N copies of
    this command through torch.distributed's launcher and return their exit
    status.  ``None`` when this process does the work itself (one process,
    or already one of N started by a launcher)."""
    from .. import distributed

    n = getattr(args, "num_processes", None)
    if n is not None and n < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--num-processes must be at least 1, got {n}")
    if not n or n == 1 or distributed.launched():
        return None
    return distributed.launch(command_argv(args, name), n)


def model_threads(exp, device, batch: int = 256) -> int:
    """``performance.threads`` of the model's config (auto: from its size and the free cores) for an inference verb,
    as the trainer does for training."""
    from ..performance import apply_threads

    return apply_threads(exp.config.performance.threads, energy=exp.energy, shape=exp.shape, batch=batch, device=device)
