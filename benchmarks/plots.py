"""The plots the suites share: a bar per method, a line over an ablated symbol.
Each returns a ``plot(table, path)`` for :class:`benchmarks.harness.Table`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .harness import Table


def num(v: Any) -> float:
    """A table cell as a float (a missing value is NaN, a gap in the plot)."""
    return float("nan") if v is None else float(v)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    return plt, fig, ax


def _save(plt, fig, ax, table: Table, path: Path) -> Path:
    ax.set_title(table.title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bars(column: str, log: bool = False):
    """One bar per row (method) of ``column``; for FID, the mean real-vs-real floor as a dashed line."""

    def plot(table: Table, path: Path) -> Path:
        plt, fig, ax = _figure()
        labels = [str(r.get("method")) for r in table.rows]
        values = [num(r.get(column)) for r in table.rows]
        ax.bar(labels, values, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"][: len(values)])
        floors = [num(r.get(f"floor {column}")) for r in table.rows]
        if column == "FID" and any(not math.isnan(f) for f in floors):
            ax.axhline(np.nanmean(floors), color="k", ls="--", lw=1, label="real-vs-real floor")
            ax.legend()
        ax.set_ylabel(column)
        if log:
            ax.set_yscale("log")
        if max(len(label) for label in labels or [""]) > 8:  # long names (reference rows) would overlap
            ax.tick_params(axis="x", labelrotation=20, labelsize=7)
        return _save(plt, fig, ax, table, path)

    return plot


def plot_line(symbol: str):
    """FID and its real-vs-real floor over the rows' ``symbol`` (K, sigma, nf)."""

    def plot(table: Table, path: Path) -> Path:
        plt, fig, ax = _figure()
        xs = [num(r[symbol]) for r in table.rows]
        ax.plot(xs, [num(r["FID"]) for r in table.rows], "o-", label="FID")
        ax.plot(xs, [num(r["floor FID"]) for r in table.rows], "k--", lw=1, label="real-vs-real floor")
        ax.set_xlabel(symbol)
        ax.set_ylabel("FID")
        ax.legend()
        return _save(plt, fig, ax, table, path)

    return plot
