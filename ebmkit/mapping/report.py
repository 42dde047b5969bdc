"""The files a finished map writes: tables, the graph, grids and scores.

    minima.csv / minima.json     each distinct minimum: energy, |grad U|, basin, barrier to its basin's representative
    basins.csv                   each basin: representative, energy, minima, starts, majority label
    barriers.csv                 each pair of basins: estimated barrier and the alpha that connected them
    assignments.csv              each start: kind, dataset index, label, minimum, basin, k-means cluster
    graph.json                   the disconnectivity graph (DisconnectivityGraph.load reads it back)
    disconnectivity.png          the graph, a representative image (the basin's lowest minimum) per leaf
    basins.png, basins/*.png     per basin: its minimum and the starts that fell into it
    calibration.png              alpha calibration (when alpha was calibrated)
    clustering.json              purity / ARI of the basins and of k-means (labelled starts only)
    summary.json                 settings, counts, alpha, seconds per stage, files
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .calibration import Calibration, plot_calibration
from .clustering import compare_with_kmeans, kmeans
from .disconnectivity import DisconnectivityGraph, plot_disconnectivity
from .engine import LandscapeMapper


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _num(v: float | None, digits: int = 6) -> float | None:
    return None if v is None else round(float(v), digits)


def write_report(mapper: LandscapeMapper, *, title: str = "", show: int = 64) -> dict[str, Any]:
    """Write every output file of a finished map; returns the summary."""
    out = mapper.out
    st, tz = mapper.state, mapper.tensors
    info = st.get("start_info", {})
    kinds: list[str] = info.get("kind", ["start"] * tz["starts"].shape[0])
    index: list[int | None] = info.get("index", [None] * len(kinds))
    labels: list[int | None] = info.get("label") or [None] * len(kinds)
    g = st["grouping"]
    basin_of_min = g["basin"]
    reps = g["reps"]
    owner = tz["minimum_of_start"].tolist()
    basin_of_start = [basin_of_min[m] for m in owner]
    k = len(reps)
    files: dict[str, str] = {}

    # -- minima --------------------------------------------------------------------------
    energy = tz["minima_energy"]
    src = tz["minimum_source"]
    grad, conv = tz["descent_grad"][src], tz["descent_converged"][src]
    starts_per_min = Counter(owner)
    minima_rows = [{"minimum": m, "energy": _num(energy[m]), "grad_norm": _num(grad[m]), "settled": bool(conv[m]),
                    "basin": basin_of_min[m], "representative": reps[basin_of_min[m]] == m,
                    "barrier_to_representative": _num(g["barrier"][m]), "starts": starts_per_min.get(m, 0)}
                   for m in range(len(basin_of_min))]
    (out / "minima.json").write_text(json.dumps(minima_rows, indent=1) + "\n")
    files["minima"] = str(_csv(out / "minima.csv", list(minima_rows[0]), [list(r.values()) for r in minima_rows]))

    # -- basins and clustering --------------------------------------------------------------
    start_count = Counter(basin_of_start)
    majority: list[tuple[int | None, float | None]] = []
    for b in range(k):
        labs = [labels[i] for i in range(len(labels)) if basin_of_start[i] == b and labels[i] is not None]
        if labs:
            lab, cnt = Counter(labs).most_common(1)[0]
            majority.append((lab, cnt / len(labs)))
        else:
            majority.append((None, None))
    files["basins"] = str(_csv(out / "basins.csv", ["basin", "representative", "energy", "minima", "starts",
                                                    "majority_label", "majority_share"],
                               [[b, reps[b], _num(energy[reps[b]]), basin_of_min.count(b), start_count.get(b, 0),
                                 majority[b][0], _num(majority[b][1], 4)] for b in range(k)]))
    barriers = mapper.barrier_matrix()
    alpha_used = st["barriers"]["alpha"]
    files["barriers"] = str(_csv(out / "barriers.csv", ["basin_a", "basin_b", "barrier", "alpha"],
                                 [[j, i, _num(barriers[j][i]) if torch.isfinite(barriers[j][i]) else None,
                                   _num(alpha_used[j][i])] for j in range(k) for i in range(j)]))

    clustering: dict[str, Any] | None = None
    labelled = [i for i, lab in enumerate(labels) if lab is not None]
    kmeans_of: dict[int, int] = {}
    if labelled:
        x = tz["starts"][labelled]
        ad = [basin_of_start[i] for i in labelled]
        lab = [labels[i] for i in labelled]
        clustering = {"starts_scored": len(labelled), "note": "labelled starts only; k-means in pixel space with as many "
                      "clusters as the basins these starts fell into", **compare_with_kmeans(x, lab, ad, seed=mapper.settings.seed)}
        km = kmeans(x, clustering["attraction_diffusion"]["clusters"], seed=mapper.settings.seed)
        kmeans_of = dict(zip(labelled, km.tolist()))
        (out / "clustering.json").write_text(json.dumps(clustering, indent=1) + "\n")
        files["clustering"] = str(out / "clustering.json")
    files["assignments"] = str(_csv(out / "assignments.csv", ["start", "kind", "index", "label", "minimum", "basin", "kmeans"],
                                    [[i, kinds[i], index[i], labels[i], owner[i], basin_of_start[i], kmeans_of.get(i)]
                                     for i in range(len(owner))]))

    # -- the graph -----------------------------------------------------------------------
    graph = DisconnectivityGraph.build([float(energy[r]) for r in reps], barriers,
                                       sizes=[start_count.get(b, 0) for b in range(k)])
    files["graph"] = str(graph.save(out / "graph.json"))
    leaf_labels = [f"#{b} n={start_count.get(b, 0)}" + (f" '{majority[b][0]}' {majority[b][1]:.0%}"
                                                         if majority[b][0] is not None else "") for b in range(k)]
    minima = tz["minima"]
    is_image = minima.dim() == 4
    files["disconnectivity"] = str(plot_disconnectivity(graph, out / "disconnectivity.png",
                                                        images=minima[reps] if is_image else None, labels=leaf_labels,
                                                        title=title))
    if is_image:
        files.update(_basin_grids(out, tz["starts"], minima, reps, basin_of_start, graph.leaf_order(), show))
    elif minima.shape[1] == 2:
        files["scatter"] = str(_scatter(out / "basins.png", tz["starts"], minima, basin_of_start, reps))
    if "calibration" in st:
        plot_calibration(Calibration.from_dict(st["calibration"]), out / "calibration.png")
        files["calibration"] = str(out / "calibration.png")

    summary = {"out": str(out), "starts": len(owner), "minima": len(basin_of_min), "basins": k,
               "alpha": st["alpha"], "temperature": mapper.settings.temperature, "delta": st["delta"],
               "calibration": st.get("calibration"), "trials": {"grouping": g["trials"], "barriers": st["barriers"]["trials"]},
               "descent_settled": int(tz["descent_converged"].sum()), "clustering": clustering,
               "seconds": {k_: round(v, 1) for k_, v in st.get("seconds", {}).items()}, "resumed": mapper.resumed,
               "identity": mapper.identity, "settings": mapper.settings.model_dump(mode="json"), "files": files}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _basin_grids(out: Path, starts: Tensor, minima: Tensor, reps: list[int], basin_of_start: list[int], order: list[int],
                 show: int) -> dict[str, str]:
    """basins/basin-K.png (up to ``show`` of its starts) and basins.png: one row per basin in
    the graph's leaf order -- its minimum, then up to 12 of its starts (grey: fewer)."""
    from ..images import save_grid, save_rows

    files = {}
    width = 13
    rows = []
    for b in order:
        members = [i for i, v in enumerate(basin_of_start) if v == b]
        if members:
            save_grid(starts[members[:show]], out / "basins" / f"basin-{b:03d}.png")
        row = [minima[reps[b]][None], starts[members[:width - 1]]]
        blank = torch.zeros(width - 1 - min(len(members), width - 1), *minima.shape[1:])
        rows.append(torch.cat(row + [blank]))
    files["basin_grids"] = str(out / "basins")
    files["basins_overview"] = str(save_rows(rows[:48], out / "basins.png"))
    return files


def _scatter(path: Path, starts: Tensor, minima: Tensor, basin_of_start: list[int], reps: list[int]) -> Path:
    """2-D maps: starts coloured by basin, minima as crosses, representatives ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..images import save_figure

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(starts[:, 0].numpy(), starts[:, 1].numpy(), c=[f"C{b % 10}" for b in basin_of_start], s=4, alpha=0.6)
    ax.scatter(minima[:, 0].numpy(), minima[:, 1].numpy(), marker="x", color="k", s=20)
    ax.scatter(minima[reps, 0].numpy(), minima[reps, 1].numpy(), facecolors="none", edgecolors="r", s=80)
    ax.set_aspect("equal")
    ax.set_title("starts by basin; x minima, o representatives", fontsize=8)
    return save_figure(fig, path)


__all__ = ["write_report"]
