"""The ``ebmkit`` command line.

    ebmkit train CONFIG|PRESET [--set section.key=value ...] [--resume] [--num-processes N]
    ebmkit sample CHECKPOINT --n 64 --out grid.png [--num-processes N]
    ebmkit generate | interpolate | reconstruct | super-resolve CHECKPOINT [...]   (docs/generator.md)
    ebmkit inpaint CHECKPOINT [--images test] [--mask centre:fraction=0.5] [--samples 4] [--out DIR]
    ebmkit cooperative-sample CHECKPOINT --out DIR [--steps K] [--record 0,5,10]
    ebmkit map RUN --starts data:500 [...]   (docs/landscape.md)
    ebmkit export RUN DIR [--judge] [--command "..."]                         (a model folder that stands alone)
    ebmkit plugins [--kind KIND]
    ebmkit presets

One registry of verbs (:mod:`ebmkit.cli.commands`); a module per group of
verbs: :mod:`~ebmkit.cli.train`, :mod:`~ebmkit.cli.generate` (every verb
that draws from a trained model, through
:class:`~ebmkit.generation.generator.ShortRunGenerator`),
:mod:`~ebmkit.cli.inpaint`, :mod:`~ebmkit.cli.cooperative`,
:mod:`~ebmkit.cli.share` (``export``), :mod:`~ebmkit.cli.info`.  Inference
verbs write under the model's run folder unless given ``--out``.

Errors meant for the user (bad config, missing data, corrupt checkpoint...)
print one message and exit with status 2; no traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

from ..errors import EbmkitError
# Each group registers its verbs on import, in the order `ebmkit --help` lists them.
from . import train  # noqa: F401, I001
from . import generate  # noqa: F401
from . import inpaint  # noqa: F401
from . import cooperative  # noqa: F401
from . import mapping  # noqa: F401
from . import share  # noqa: F401
from . import info  # noqa: F401
from .commands import COMMANDS, build_parser, command_argv, subparser
from .options import one_line
from .train import preset_names, resolve_config_path


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings meant for users (a corrupt checkpoint skipped, a plug-in that
    failed to load, a rollback) as one plain line, not a source location."""
    print(f"ebmkit: warning: {message}", file=file or sys.stderr)


class _StderrHandler(logging.StreamHandler):
    """Log lines ("resuming from ...") to whatever sys.stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def main(argv: list[str] | None = None) -> int:
    from ..interrupts import Interrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the verb's parser, which names the command
            subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # a bad option (one line already printed, status 2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = argv
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    log = logging.getLogger("ebmkit")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("ebmkit: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        status = COMMANDS[args.command].run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except Interrupted as exc:  # SIGINT / SIGTERM: the iteration reached is saved
        print(f"ebmkit {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except EbmkitError as exc:
        print(f"ebmkit {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"ebmkit {args.command}: interrupted by {signal.Signals(signum).name}; stopped at once, without a checkpoint "
              "of the work in progress (earlier checkpoints are intact)", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `ebmkit presets | head`: the reader left; end quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        warnings.showwarning = shown


__all__ = ["COMMANDS", "build_parser", "command_argv", "main", "preset_names", "resolve_config_path"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
