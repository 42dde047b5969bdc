"""Figures for docs/recipes.md from a finished run folder: the d_st trace and the final samples.

    python -m benchmarks.recipe_figures runs/digits-cpu --name digits-cpu --out docs/img

writes ``<name>-dst.png`` (d_st = mean U(data) - mean U(samples) per iteration,
raw and smoothed) and ``<name>-samples.png`` (the run's ``samples/final.png``,
enlarged with nearest-neighbour so that 8x8 / 16x16 pixels stay visible), and
prints the trace's summary numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def read_trace(run: Path) -> dict[str, list[float]]:
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in ("iteration", "gap", "energy_data", "energy_samples", "time")}


def summary(t: dict[str, list[float]]) -> dict[str, float]:
    gaps, n = t["gap"], len(t["gap"])
    tail = gaps[-200:]
    return {"iterations": n, "seconds": t["time"][-1], "max_abs_gap": max(abs(g) for g in gaps),
            "mean_gap_last_200": sum(tail) / len(tail), "final_energy_data": t["energy_data"][-1],
            "final_energy_samples": t["energy_samples"][-1]}


def plot_trace(t: dict[str, list[float]], title: str, path: Path, other: dict[str, list[float]] | None = None,
               other_label: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    it, gap = np.array(t["iteration"]), np.array(t["gap"])
    w = 25
    smooth = np.convolve(gap, np.ones(w) / w, mode="valid")
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.plot(it, gap, lw=0.5, color="#9ab", label="d_st per iteration")
    ax.plot(it[w - 1:], smooth, lw=1.5, color="#c44e52", label=f"mean of {w}")
    if other is not None:  # e.g. the same preset without its stabiliser, up to its divergence
        ax.plot(other["iteration"], other["gap"], lw=0.8, color="#555", ls="--", label=other_label)
        ax.set_yscale("symlog", linthresh=1.0)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("iteration")
    ax.set_ylabel("d_st = E U(data) - E U(samples)", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def enlarge(src: Path, dst: Path, scale: int) -> Path:
    from PIL import Image

    im = Image.open(src)
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(dst, optimize=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recipe_figures", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--scale", type=int, default=3, help="enlargement of the sample grid")
    p.add_argument("--compare", type=Path, help="a second run folder whose d_st is drawn dashed (e.g. without the stabiliser)")
    p.add_argument("--compare-label", default="without the stabiliser")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    t = read_trace(a.run)
    s = summary(t)
    other = read_trace(a.compare) if a.compare else None
    plot_trace(t, f"{a.name}: d_st over {s['iterations']} iterations", a.out / f"{a.name}-dst.png", other, a.compare_label)
    if (a.run / "samples" / "final.png").is_file():  # a diverged run has none
        enlarge(a.run / "samples" / "final.png", a.out / f"{a.name}-samples.png", a.scale)
    every = max(1, len(t["gap"]) // 10)
    s["gap_every_%d" % every] = [round(g, 3) for g in t["gap"][every - 1 :: every]]
    print(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
