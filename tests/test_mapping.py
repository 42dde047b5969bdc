"""Attraction-Diffusion mapping on 2-D energies whose minima, saddles and AD thresholds are known exactly.

The four-well energy U(x, y) = h1 (x^2 - 1)^2 + h2 (y^2 - 1)^2 + tilt has its
minima near (+-1, +-1); crossing in x costs h1, in y h2.  A noise-free chain
pulled along x from a minimum stalls where the slope h1 * 4x(x^2 - 1) equals
alpha * T, so it crosses iff alpha > max slope / T = 8 h1 / (3 sqrt 3) / T
(the same for y with h2).  With h1 = 1 and h2 = 4 the thresholds are 1.54 and
6.16 at T = 1.
"""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from ebmkit import create_dataset, create_sampler
from ebmkit.mapping import (
    DisconnectivityGraph,
    LandscapeMapper,
    MagnetisedEnergy,
    MapSettings,
    attraction_diffusion,
    deduplicate,
    descend,
    purity,
)
from ebmkit.mapping.basins import Grouping
from ebmkit.mapping.calibration import choose
from ebmkit.mapping.clustering import scores
from ebmkit.mapping.report import write_report
from ebmkit.sampling import input_gradient

H1, H2 = 1.0, 4.0
TILT = (0.1, 0.05)
SLOPE = 8 / (3 * math.sqrt(3))  # max |d/dx (x^2 - 1)^2| on [-1, 1]


class FourWell(nn.Module):
    def __init__(self, h1=H1, h2=H2, tilt=TILT):
        super().__init__()
        self.h1, self.h2, self.tilt = h1, h2, tilt

    def forward(self, x):
        return (self.h1 * (x[:, 0] ** 2 - 1) ** 2 + self.h2 * (x[:, 1] ** 2 - 1) ** 2
                + self.tilt[0] * x[:, 0] + self.tilt[1] * x[:, 1])


def well_minimum(h, tilt):
    """The minima of h (s^2 - 1)^2 + tilt * s, by Newton from -1 and +1."""
    out = []
    for s in (-1.0, 1.0):
        for _ in range(50):
            s -= (4 * h * s * (s * s - 1) + tilt) / (h * (12 * s * s - 4))
        out.append(s)
    return out


def exact_minima():
    xs, ys = well_minimum(H1, TILT[0]), well_minimum(H2, TILT[1])
    pts = torch.tensor([[x, y] for x in xs for y in ys], dtype=torch.float32)
    return pts[torch.argsort(FourWell()(pts))]


def samplers(noise=0.01):
    return (create_sampler("langevin", steps=1, step_size=0.01, noise=noise),
            create_sampler("gradient-descent", steps=1, step_size=0.01))


def settings(**kw):
    base = dict(delta=0.1, patience=50, max_steps=3000, descent_steps=3000, descent_tolerance=1e-6, seed=0)
    return MapSettings(**{**base, **kw})


def mapped(tmp_path, name, **kw):
    ad, gd = samplers()
    m = LandscapeMapper(FourWell(), ad, gd, settings(**kw), tmp_path / name, progress=False)
    g = torch.Generator().manual_seed(1)
    m.set_starts(torch.rand(120, 2, generator=g) * 4 - 2, {})
    m.run()
    return m


def partition(m):
    """The basins as a set of frozensets of minimum positions (rounded)."""
    minima = m.tensors["minima"]
    groups = {}
    for i, b in enumerate(m.state["grouping"]["basin"]):
        groups.setdefault(b, []).append(tuple(torch.sign(minima[i]).int().tolist()))
    return {frozenset(v) for v in groups.values()}


def test_magnetised_energy_gradient_matches_autograd():
    targets = torch.randn(5, 2)
    mag = MagnetisedEnergy(FourWell(), targets, torch.tensor([0.5, 1, 2, 3, 4.0]), torch.tensor([1, 2, 0.5, 1, 3.0]))
    x = torch.randn(5, 2)
    fast = mag.input_grad_fn(x)(x)
    slow = input_gradient(mag, x, fast=False)(x)
    assert torch.allclose(fast, slow, atol=1e-5)
    # by hand for row 0: grad U / T + alpha (x - t) / |x - t|
    u = FourWell()
    gx = input_gradient(u, x, fast=False)(x)[0] / 1 + 0.5 * (x[0] - targets[0]) / (x[0] - targets[0]).norm()
    assert torch.allclose(fast[0], gx, atol=1e-5)


def test_descent_and_deduplication_find_exactly_the_four_minima():
    _, gd = samplers()
    starts = torch.rand(200, 2, generator=torch.Generator().manual_seed(0)) * 4 - 2
    res = descend(FourWell(), gd, starts, max_steps=3000, tolerance=1e-6)
    assert bool(res.converged.all())
    keep, owner = deduplicate(res.x, res.energy, delta=0.1)
    assert keep.numel() == 4
    found = res.x[keep]
    assert torch.allclose(found, exact_minima(), atol=2e-3)
    assert torch.all(res.energy[keep][1:] >= res.energy[keep][:-1])  # lowest first
    # every start is owned by the minimum of its own quadrant
    assert torch.equal(torch.sign(found[owner]), torch.sign(res.x))


def test_gmm_circle_minima_are_its_centres():
    """U = -log p of the gmm-circle toy (exact density): descent finds one minimum per mode."""
    toy = create_dataset("gmm-circle", modes=4, radius=0.7, sd=0.15)

    class NegLogDensity(nn.Module):
        def forward(self, x):
            return -toy.log_density(x)

    gd = create_sampler("gradient-descent", steps=1, step_size=0.002)
    starts = toy.sample(200, torch.Generator().manual_seed(0))
    res = descend(NegLogDensity(), gd, starts, max_steps=4000, tolerance=1e-7)
    keep, _ = deduplicate(res.x, res.energy, delta=0.05)
    assert keep.numel() == 4
    found = res.x[keep]
    centres = toy.centres()
    nearest = torch.cdist(found, centres).min(dim=1)
    assert sorted(nearest.indices.tolist()) == [0, 1, 2, 3]
    # each component's pull is offset only by its two neighbours' tails: within 1e-3 of the centre
    assert float(nearest.values.max()) < 1e-3


@pytest.mark.parametrize("factor, crosses", [(0.85, False), (1.15, True)])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_ad_threshold_is_the_closed_form_one(factor, crosses, temperature):
    """1-D double well h (x^2 - 1)^2 along x (no tilt): AD crosses iff alpha > 8h / (3 sqrt 3) / T."""
    energy = FourWell(h1=1.0, h2=4.0, tilt=(0.0, 0.0))
    ad, _ = samplers(noise=0.002)
    alpha = factor * SLOPE * 1.0 / temperature
    starts = torch.tensor([[-1.0, 1.0]]).repeat(8, 1)
    targets = torch.tensor([[1.0, 1.0]]).repeat(8, 1)
    r = attraction_diffusion(energy, ad, starts, targets, alpha=alpha, temperature=temperature, delta=0.05,
                             patience=200, max_steps=6000)
    assert bool(r.success.all()) if crosses else not bool(r.success.any())


def test_alpha_zero_never_reaches_a_far_target_and_a_huge_alpha_always_does():
    ad, _ = samplers()
    minima = exact_minima()
    starts = minima[0].repeat(24, 1)
    targets = minima[torch.tensor([1, 2, 3] * 8)]
    never = attraction_diffusion(FourWell(), ad, starts, targets, alpha=0.0, delta=0.1, patience=100, max_steps=3000)
    assert not bool(never.success.any())
    assert float(never.closest.min()) > 1.5  # it stayed in its own well
    always = attraction_diffusion(FourWell(), ad, starts, targets, alpha=200.0, delta=0.1, patience=20, max_steps=3000)
    assert bool(always.success.all())
    assert int(always.steps.max()) < 50  # 0.01 * 200 = 2 per step: straight there


def test_barrier_of_a_successful_trial_is_the_saddle_energy():
    """Crossing in y at x = x_min: the path's highest energy is the saddle U(x_min, 0) (within step sampling)."""
    ad, _ = samplers(noise=0.001)
    minima = exact_minima()
    low = minima[0]  # (x-, y-)
    up = torch.tensor([low[0], -low[1]])  # nearest minimum across y: same x, y+ (approximately)
    target = minima[torch.cdist(up[None], minima).argmin()]
    r = attraction_diffusion(FourWell(), ad, low[None].repeat(4, 1), target[None].repeat(4, 1), alpha=7.0, delta=0.05,
                             patience=100, max_steps=3000)
    saddle = float(FourWell()(torch.tensor([[float(low[0]), 0.0]])))
    assert bool(r.success.all())
    assert torch.all((r.barrier - saddle).abs() < 0.02 * H2), (r.barrier, saddle)


@pytest.mark.parametrize("alpha, temperature, expected", [
    (0.8, 1.0, 4),   # below both thresholds: every minimum its own basin
    (3.0, 1.0, 2),   # between 1.54 and 6.16: the x-crossings merge, the y-crossing does not
    (12.0, 1.0, 1),  # above both: one basin
    (3.0, 0.3, 4),   # colder: thresholds x 1/0.3 = 5.1 and 20.5
    (3.0, 3.0, 1),   # hotter: thresholds 0.51 and 2.05
])
def test_grouping_follows_the_known_barriers(tmp_path, alpha, temperature, expected):
    m = mapped(tmp_path, f"a{alpha}-t{temperature}", alpha=alpha, temperature=temperature)
    assert m.state["minima"] == 4
    groups = partition(m)
    assert len(groups) == expected
    if expected == 2:  # grouped by the sign of y: the cheap crossing is in x
        assert groups == {frozenset({(-1, -1), (1, -1)}), frozenset({(-1, 1), (1, 1)})}
    # basins are numbered by their lowest minimum, and every representative is its basin's lowest minimum
    energy = m.tensors["minima_energy"]
    for b, rep in enumerate(m.state["grouping"]["reps"]):
        members = [i for i, v in enumerate(m.state["grouping"]["basin"]) if v == b]
        assert rep == min(members, key=lambda i: float(energy[i]))


def test_barriers_and_graph_of_the_four_wells(tmp_path):
    """Below both thresholds: the graph joins the x-neighbours at their x-saddles (h1 -/+ the tilt)
    and the two pairs at the lower y-saddle."""
    m = mapped(tmp_path, "graph", alpha=0.8)
    minima, energy = m.tensors["minima"], m.tensors["minima_energy"]
    reps = m.state["grouping"]["reps"]
    graph = DisconnectivityGraph.build([float(energy[r]) for r in reps], m.barrier_matrix())
    assert len(graph.roots) == 1

    def basin_at(sx, sy):
        return next(b for b, r in enumerate(reps) if torch.sign(minima[r]).int().tolist() == [sx, sy])

    def saddle(x, y):
        return float(FourWell()(torch.tensor([[x, y]])))

    xs, ys = well_minimum(H1, TILT[0]), well_minimum(H2, TILT[1])
    for sy, y in ((-1, ys[0]), (1, ys[1])):
        got = graph.join_energy(basin_at(-1, sy), basin_at(1, sy))
        assert abs(got - saddle(0.0, y)) < 0.05 * H1, (got, saddle(0.0, y))
    top = graph.join_energy(basin_at(-1, -1), basin_at(1, 1))
    assert abs(top - min(saddle(xs[0], 0.0), saddle(xs[1], 0.0))) < 0.05 * H2
    summary = write_report(m)
    assert summary["basins"] == 4 and (tmp_path / "graph" / "disconnectivity.png").stat().st_size > 1000


def test_graph_json_round_trips(tmp_path):
    bar = torch.tensor([[math.inf, 1.0, 3.0, math.inf], [1.0, math.inf, 2.5, math.inf],
                        [3.0, 2.5, math.inf, math.inf], [math.inf] * 4])
    g = DisconnectivityGraph.build([0.0, 0.5, -1.0, 0.2], bar, sizes=[3, 4, 5, 6])
    path = g.save(tmp_path / "graph.json")
    back = DisconnectivityGraph.load(path)
    assert back == g
    assert json.loads(path.read_text()) == g.to_dict()
    # basins 0 and 1 meet at 1.0, then 2 joins at 2.5 (the lower of 2.5 and 3.0); 3 never joins
    assert g.join_energy(0, 1) == 1.0 and g.join_energy(0, 2) == 2.5 and g.join_energy(1, 2) == 2.5
    assert math.isinf(g.join_energy(0, 3)) and len(g.roots) == 2
    assert sorted(g.leaf_order()) == [0, 1, 2, 3]
    assert next(n for n in g.nodes if n.energy == 2.5).size == 12


def test_junctions_never_sit_below_their_leaves():
    g = DisconnectivityGraph.build([0.0, 2.0], torch.tensor([[math.inf, 1.0], [1.0, math.inf]]))
    assert g.nodes[g.roots[0]].energy == 2.0


def test_wave_size_does_not_change_the_grouping():
    """Waves only batch the trials: with an oracle for AD, any wave size gives the one-at-a-time result."""
    rng = np.random.default_rng(0)
    n = 23
    connected = rng.random((n, n)) < 0.25

    def oracle(a, b, alpha):
        s = torch.tensor([bool(connected[min(i, j), max(i, j)]) for i, j in zip(a, b)])
        return s, torch.tensor([float(max(i, j)) for i, j in zip(a, b)])

    results = []
    for wave in (1, 4, 7, 23):
        g = Grouping(n)
        while not g.finished:
            g.process_wave(oracle, 1.0, wave)
        results.append((g.basin, g.reps))
    assert all(r == results[0] for r in results)
    assert len(results[0][1]) > 1


def test_calibrated_alpha_lies_in_the_metastable_window(tmp_path):
    """Random pairs of the four minima, alphas 0.2..50: no pair connects below the x-threshold, every
    pair above the y-threshold; the chosen alpha falls between the two and gives the two basins."""
    m = mapped(tmp_path, "calibrated", calibration_pairs=6)
    cal = m.state["calibration"]
    assert SLOPE * H1 * 0.9 < m.state["alpha"] < SLOPE * H2 * 1.1
    lo, hi = cal["window"]
    assert lo < SLOPE * H1 * 1.1 and hi > SLOPE * H2 * 0.9
    assert len(partition(m)) == 2
    assert (tmp_path / "calibrated").exists()


def test_choose_window():
    (lo, hi), alpha, note = choose([0.1, 0.2, 0.4, 0.8, 1.6], [0.0, 0.0, 0.5, 0.5, 1.0])
    assert (lo, hi) == (0.2, 1.6) and alpha == pytest.approx(math.sqrt(0.2 * 1.6)) and not note
    assert "lower" in choose([1.0, 2.0], [0.5, 1.0])[2]
    # with a target rate: log-linear between the grid points that bracket it
    _, alpha, _ = choose([0.1, 0.2, 0.4, 0.8, 1.6], [0.0, 0.0, 0.5, 0.5, 1.0], rate=0.25)
    assert alpha == pytest.approx(math.sqrt(0.2 * 0.4))
    assert choose([0.1, 0.2, 0.4], [0.0, 0.5, 1.0], rate=0.75)[1] == pytest.approx(math.sqrt(0.2 * 0.4))
    _, alpha, note = choose([0.1, 0.2], [0.0, 0.5], rate=0.9)
    assert alpha == 0.2 and "largest" in note


def test_purity_and_ari_by_hand():
    labels = [0, 0, 0, 1, 1, 2]
    clusters = [5, 5, 7, 7, 7, 7]  # cluster 5: {0, 0} -> 2; cluster 7: {0, 1, 1, 2} -> 2
    assert purity(labels, clusters) == pytest.approx(4 / 6)
    s = scores(labels, labels)
    assert s["purity"] == 1.0 and s["ari"] == pytest.approx(1.0) and s["clusters"] == 3
    assert scores([0, 1, 0, 1], [0, 0, 0, 0])["ari"] == pytest.approx(0.0)


def test_a_map_saved_before_a_setting_existed_still_resumes(tmp_path):
    """Settings added later count as their defaults when an older state file is read."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    m = mapped(tmp_path, "old", alpha=3.0)
    path = tmp_path / "old" / "state.safetensors"
    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del state["settings"]["calibration_rate"]
    save_file(tensors, str(path), metadata={"state": json.dumps(state)})
    ad, gd = samplers()
    again = LandscapeMapper(FourWell(), ad, gd, m.settings, tmp_path / "old", progress=False)
    assert again.resumed and again.state["grouping"] == m.state["grouping"]
    with pytest.raises(Exception, match="different settings alpha"):
        LandscapeMapper(FourWell(), ad, gd, settings(alpha=2.0), tmp_path / "old", progress=False)
