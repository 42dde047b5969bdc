"""Disconnectivity graphs: a tree of basins joined at their barrier energies.

Leaves are basins, drawn at the energy of their lowest minimum.  Two groups
of basins join at the lowest barrier that connects any basin of one to any
basin of the other (single linkage on the barrier matrix, i.e. Kruskal's
minimum spanning tree): the height at which two leaves meet is the lowest
"highest energy" of any chain of estimated transitions between them.  Pairs
with no estimated barrier (inf) never join; their groups stay separate roots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import Tensor


@dataclass
class Node:
    """A leaf (``basin`` set, no children) or a junction at ``energy``."""

    id: int
    energy: float
    children: list[int] = field(default_factory=list)
    basin: int | None = None
    size: int = 0


@dataclass
class DisconnectivityGraph:
    """Nodes (leaves first, one per basin, in basin order) and the roots."""

    nodes: list[Node]
    roots: list[int]

    @classmethod
    def build(cls, leaf_energy: Sequence[float], barriers: Tensor | Sequence[Sequence[float]],
              sizes: Sequence[int] | None = None) -> "DisconnectivityGraph":
        """Join basins in increasing order of barrier; ``barriers[i][j]`` is
        the estimated barrier energy between basins i and j (inf: unknown).
        A junction is never drawn below the nodes it joins."""
        k = len(leaf_energy)
        sizes = list(sizes) if sizes is not None else [1] * k
        nodes = [Node(id=i, energy=float(leaf_energy[i]), basin=i, size=int(sizes[i])) for i in range(k)]
        top = list(range(k))  # the current root node of each basin's group

        def root(i: int) -> int:
            while top[i] != i:
                top[i] = top[top[i]]
                i = top[i]
            return i

        group_node = list(range(k))  # group representative -> its current tree node
        edges = sorted((float(barriers[i][j]), i, j) for i in range(k) for j in range(i) if math.isfinite(float(barriers[i][j])))
        for bar, i, j in edges:
            ri, rj = root(i), root(j)
            if ri == rj:
                continue
            a, b = group_node[ri], group_node[rj]
            node = Node(id=len(nodes), energy=max(bar, nodes[a].energy, nodes[b].energy), children=[a, b],
                        size=nodes[a].size + nodes[b].size)
            nodes.append(node)
            top[rj] = ri
            group_node[ri] = node.id
        roots = sorted({group_node[root(i)] for i in range(k)}, key=lambda n: nodes[n].energy)
        return cls(nodes=nodes, roots=roots)

    # -- queries -----------------------------------------------------------------------
    @property
    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.basin is not None]

    def leaf_order(self) -> list[int]:
        """Basins left to right: depth first, the lower child first."""
        order: list[int] = []

        def low(n: int) -> float:
            node = self.nodes[n]
            return node.energy if not node.children else min(low(c) for c in node.children)

        def visit(n: int) -> None:
            node = self.nodes[n]
            if node.basin is not None:
                order.append(node.basin)
            for c in sorted(node.children, key=low):
                visit(c)

        for r in self.roots:
            visit(r)
        return order

    def join_energy(self, a: int, b: int) -> float:
        """Energy at which basins a and b meet (inf: never)."""
        parent = {c: n.id for n in self.nodes for c in n.children}

        def ancestors(i: int) -> list[int]:
            out = [i]
            while out[-1] in parent:
                out.append(parent[out[-1]])
            return out

        common = set(ancestors(a)) & set(ancestors(b))
        return min((self.nodes[n].energy for n in common), default=math.inf)

    # -- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"nodes": [asdict(n) for n in self.nodes], "roots": list(self.roots)}

    @classmethod
    def from_dict(cls, d: dict) -> "DisconnectivityGraph":
        return cls(nodes=[Node(**n) for n in d["nodes"]], roots=list(d["roots"]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DisconnectivityGraph":
        return cls.from_dict(json.loads(Path(path).read_text()))


def plot_disconnectivity(graph: DisconnectivityGraph, path: str | Path, *, images: Tensor | None = None,
                         labels: Sequence[str] | None = None, title: str = "") -> Path:
    """Draw the tree (energy upwards) as a PNG; ``images[k]`` (C, H, W in
    [-1, 1]) is shown under the leaf of basin k, ``labels[k]`` under that."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..images import to_unit

    order = graph.leaf_order()
    xpos: dict[int, float] = {}
    for i, basin in enumerate(order):
        xpos[next(n.id for n in graph.nodes if n.basin == basin)] = float(i)
    energies = [n.energy for n in graph.nodes]
    lo, hi = min(energies), max(energies)
    span = (hi - lo) or 1.0
    top = hi + 0.08 * span

    def x_of(n: int) -> float:
        if n not in xpos:
            xpos[n] = sum(x_of(c) for c in graph.nodes[n].children) / len(graph.nodes[n].children)
        return xpos[n]

    k = len(order)
    width = max(5.0, 0.45 * k + 1.8)
    left = 1.0 / width  # one inch for the energy axis, whatever the width
    with_images = images is not None and images.dim() == 4
    rotate = 90 if k > 6 else 0
    fig = plt.figure(figsize=(width, 5.4 if with_images else 4.2))
    ax = fig.add_axes((left, 0.34 if with_images else 0.16, 0.97 - left, 0.58 if with_images else 0.76))
    for node in graph.nodes:
        x = x_of(node.id)
        for c in node.children:
            cx = x_of(c)
            ax.plot([cx, cx], [graph.nodes[c].energy, node.energy], color="k", lw=1)
            ax.plot([cx, x], [node.energy, node.energy], color="k", lw=1)
    for r in graph.roots:  # each root's stem goes to the top; several roots: never connected
        ax.plot([x_of(r), x_of(r)], [graph.nodes[r].energy, top], color="k", lw=1, ls="-" if len(graph.roots) == 1 else ":")
    for node in graph.leaves:
        ax.plot([x_of(node.id)], [node.energy], "o", color="C0", ms=3)
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylim(lo - 0.05 * span, top)
    ax.set_ylabel("energy U")
    ax.set_xticks([])
    for s in ("top", "right", "bottom"):
        ax.spines[s].set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    if with_images:
        strip = fig.add_axes((left, 0.03, 0.97 - left, 0.28), sharex=ax)
        for i, basin in enumerate(order):
            img = to_unit(images[basin]).permute(1, 2, 0).numpy()
            side = min(0.9, 0.45 * width / max(k, 1))  # square tiles when there is room
            strip.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                         extent=(i - 0.45, i + 0.45, 1.0 - side, 1.0), aspect="auto")
            if labels is not None:
                strip.text(i, 1.0 - side - 0.05, labels[basin].replace(" ", "\n") if not rotate else labels[basin],
                           ha="center", va="top", fontsize=7, rotation=rotate)
        strip.set_ylim(-0.1 if labels is not None else 0.0, 1.02)
        strip.axis("off")
    elif labels is not None:
        for i, basin in enumerate(order):
            ax.text(i, lo - 0.04 * span, labels[basin], ha="center", va="top", fontsize=7, rotation=rotate)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)  # axes placed by hand: no tight_layout
    plt.close(fig)
    return path


__all__ = ["DisconnectivityGraph", "Node", "plot_disconnectivity"]
