"""Command-line options that are checked as they are parsed.

Every numeric option goes through a typed range (``count(1)`` for "a
positive integer", ``number(0, 1)`` for a fraction...), so that ``--steps -1``
is refused by the parser with one line naming the option, never later as a
traceback.  :class:`Parser` prints parse errors as that one line (without the
usage block) and exits with status 2, like every other user error.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def count(minimum: int = 1) -> Callable[[str], int]:
    """An integer option of at least ``minimum`` (``count(0)``: 0 or more)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be {'positive' if minimum == 1 else f'at least {minimum}'}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A finite float in [minimum, maximum] (``above=True``: strictly above ``minimum``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        low_ok = minimum is None or (value > minimum if above else value >= minimum)
        if not low_ok or (maximum is not None and value > maximum):
            if maximum is None:
                want = f"{'above' if above else 'at least'} {minimum:g}"
            elif minimum is None:
                want = f"at most {maximum:g}"
            else:
                want = f"in {'(' if above else '['}{minimum:g}, {maximum:g}]"
            raise argparse.ArgumentTypeError(f"must be {want}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """A device this machine has (cpu, cuda, cuda:N, mps); checked at parse time."""
    from ..devices import check_device
    from ..errors import ConfigError

    try:
        check_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def one_line(message: str) -> str:
    """A multi-line error message as one line: 'invalid configuration:' and the
    problems under it joined into 'invalid configuration: a; b'."""
    out = ""
    for part in (p.strip() for p in str(message).splitlines()):
        if not part:
            continue
        out = part if not out else out + (" " if out.endswith(":") else "; ") + part
    return out


def resume_command(argv: list[str], run_dir: str) -> str:
    """The command line that continues this training run: the same command with
    ``--resume`` (and without ``--overwrite``), its folder named explicitly."""
    import shlex

    args = [a for a in argv if a not in ("--resume", "--overwrite")]
    if "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", str(run_dir)]
    return shlex.join(["ebmkit", *args, "--resume"])
