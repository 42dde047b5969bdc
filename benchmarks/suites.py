"""The suite registry.

A suite is a function ``run(args: SuiteArgs) -> int`` (the exit code)
registered under a name.  To add one, write a module in ``benchmarks/`` and
register it there::

    from benchmarks.suites import SuiteArgs, register_suite

    @register_suite("stability", help="energy-gap stability sweep")
    def run(args: SuiteArgs) -> int:
        ...
        return 0

then add the module's name to :data:`SUITE_MODULES` (one line).  The
harness's helpers -- :class:`benchmarks.harness.Budget`, resumable
:class:`~benchmarks.harness.Cell` lists run by
:meth:`~benchmarks.harness.RunContext.run_cells`, and
:class:`~benchmarks.harness.Table` (markdown, CSV, JSON and a plot) -- are
there to be reused; see docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ebmkit.errors import ConfigError, suggest

SUITE_MODULES: tuple[str, ...] = (
    "benchmarks.comparison",  # quick, standard, paper: the short-run paper's comparison tables
    "benchmarks.stability",  # issue 11's stability sweep (skipped while it does not exist)
    "benchmarks.inpainting",  # issue 10: conditional EBM vs mean / nearest-neighbour fill (PSNR, SSIM)
    "benchmarks.cooperative",  # issue 5: cooperative EBM + VAE vs short-run from noise at equal CPU time
    "benchmarks.quality",  # issue 15: a preset's sample quality over seeds, and what each quality option buys
    "benchmarks.speed",  # issue 7: sampling / training speed against the paper's loop and PyPI peers
)


@dataclass
class SuiteArgs:
    """What the command line hands a suite."""

    suite: str
    out: Path
    only: list[str] = field(default_factory=list)
    budget: str | None = None
    fresh: bool = False
    progress: bool = True
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    inception: str | None = None
    n_fid: int | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Suite:
    name: str
    run: Callable[[SuiteArgs], int]
    help: str
    module: str


_SUITES: dict[str, Suite] = {}


def register_suite(name: str, *, help: str = "") -> Callable[[Callable[[SuiteArgs], int]], Callable[[SuiteArgs], int]]:
    def deco(fn: Callable[[SuiteArgs], int]) -> Callable[[SuiteArgs], int]:
        if name in _SUITES and _SUITES[name].run is not fn:
            raise ConfigError(f"suite '{name}' is registered twice: by {_SUITES[name].module} and by {fn.__module__}")
        _SUITES[name] = Suite(name, fn, help, fn.__module__)
        return fn

    return deco


def load_suites() -> dict[str, Suite]:
    """Import every suite module (a missing optional one is skipped)."""
    for module in SUITE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but something it imports does not
                raise
    return dict(_SUITES)


def get_suite(name: str) -> Suite:
    suites = load_suites()
    if name not in suites:
        raise ConfigError(f"unknown suite '{name}'{suggest(name, suites)}; suites: {', '.join(sorted(suites))}")
    return suites[name]
