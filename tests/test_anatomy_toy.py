"""2-D toys: exact densities, MMD / KL, landscapes, and a short run that learns the rings."""

import math

import pytest
import torch

from ebmkit.config import parse_config
from ebmkit.experiment import build_experiment
from ebmkit.training.landscape import landscape_panels, plot_landscape, sampler_beta
from ebmkit.metrics.toy import grid, kde_log_density, kl_on_grid, mmd, toy_distances
from ebmkit.training.loop import Trainer
from ebmkit_plugins.langevin import LangevinSampler
from ebmkit_plugins.toy_datasets import GaussianMixtureCircle, Rings


def gauss_log(points, mean, sd):
    return -((points - torch.tensor(mean, dtype=points.dtype)) ** 2).sum(1) / (2 * sd**2)


def test_mmd_of_identical_samples_is_zero_and_matches_the_kernel_by_hand():
    x = torch.randn(200, 2)
    assert mmd(x, x.clone(), 0.1) == pytest.approx(0.0, abs=1e-7)
    # one point each, distance d: MMD^2 = k(a,a) + k(b,b) - 2k(a,b) = 2 - 2 exp(-d^2 / (2h^2))
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.3, 0.4]])
    assert mmd(a, b, 0.5) == pytest.approx(math.sqrt(2 - 2 * math.exp(-0.25 / 0.5)), rel=1e-6)
    assert mmd(torch.randn(300, 2), torch.randn(300, 2) + 1.0, 1.0) > 3 * mmd(torch.randn(300, 2), torch.randn(300, 2), 1.0)


def test_kl_on_a_grid_matches_the_closed_form_for_two_gaussians():
    points, _ = grid(6.0, 300)
    m1, s1, m2, s2 = [0.0, 0.0], 0.5, [0.5, -0.3], 0.8
    # KL(N(m1, s1^2 I) || N(m2, s2^2 I)) in 2-D
    closed = 2 * math.log(s2 / s1) + (2 * s1**2 + 0.5**2 + 0.3**2) / (2 * s2**2) - 1
    assert kl_on_grid(gauss_log(points, m1, s1), gauss_log(points, m2, s2)) == pytest.approx(closed, rel=1e-3)
    assert kl_on_grid(gauss_log(points, m1, s1), gauss_log(points, m1, s1)) == pytest.approx(0.0, abs=1e-12)


def test_kde_is_a_normalised_density():
    points, axis = grid(3.0, 120)
    cell = float(axis[1] - axis[0]) ** 2
    kde = kde_log_density(torch.randn(300, 2) * 0.3, points, bandwidth=0.1)
    assert float(kde.exp().sum() * cell) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("toy", [Rings(rings=3, radius=0.3, sd=0.04), GaussianMixtureCircle(modes=6, radius=0.6, sd=0.07)])
def test_toy_log_density_is_exact(toy):
    points, axis = grid(1.6, 300)
    cell = float(axis[1] - axis[0]) ** 2
    assert float(toy.log_density(points.float()).double().exp().sum() * cell) == pytest.approx(1.0, abs=2e-3)
    # exact samples: their KDE is close to the density, uniform noise is not
    g = torch.Generator().manual_seed(0)
    ref = toy.sample(1000, g)
    kw = dict(extent=1.6, resolution=60, kde_bandwidth=0.05)
    own = toy_distances(toy.log_density, toy.sample(1000, g), ref, **kw)
    noise = toy_distances(toy.log_density, torch.rand(1000, 2) * 2 - 1, ref, **kw)
    assert own["mmd"] < 0.6 * noise["mmd"] and own["kl_samples"] < 0.4 * noise["kl_samples"], (own, noise)


def test_toy_sizes_radii_and_spread_are_parameters():
    ring = Rings(rings=3, radius=0.2, sd=0.01, count=40)
    assert len(ring.load("train")) == 40 and len(ring.load("test")) == 10
    r = ring.sample(3000).norm(dim=1)
    for radius in (0.2, 0.4, 0.6):
        assert ((r - radius).abs() < 0.05).float().mean() == pytest.approx(1 / 3, abs=0.04)
    gmm = GaussianMixtureCircle(modes=4, radius=0.5, sd=0.01)
    assert torch.allclose(gmm.sample(2000).norm(dim=1).mean(), torch.tensor(0.5), atol=0.01)


def test_landscape_panels_and_png(tmp_path):
    toy = Rings()
    energy = lambda x: 0.5 * (x**2).sum(1)  # noqa: E731
    panels = landscape_panels(extent=1.0, resolution=40, log_density=toy.log_density, energy=energy, beta=2.0,
                              samples={"short-run (KDE)": toy.sample(200)})
    assert set(panels) == {"true density", "learned exp(-U)", "short-run (KDE)"}
    assert all(p.shape == (40, 40) and float(p.sum()) == pytest.approx(1.0) for p in panels.values())
    # exp(-beta U) with beta = 2: a gaussian of variance 1/2, peaked at the centre
    learned = panels["learned exp(-U)"]
    assert learned[20, 20] > learned[0, 0]
    path = plot_landscape(tmp_path / "land.png", panels, extent=1.0)
    assert 1000 < path.stat().st_size < 300_000
    assert sampler_beta(LangevinSampler(steps=1, step_size=1.0, noise=0.1)) == pytest.approx(200.0)
    assert sampler_beta(LangevinSampler(steps=1, step_size=0.005, noise=0.1)) == pytest.approx(1.0)


@pytest.mark.slow
def test_a_short_run_on_the_rings_beats_the_initial_noise(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add synchronisation
    try:
        _short_ring_run(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _short_ring_run(tmp_path):
    cfg = parse_config({
        "data": {"name": "rings", "count": 2000},
        "energy": {"name": "mlp", "hidden": 64, "depth": 3, "activation": "leaky_relu"},
        "initializer": {"name": "persistent", "size": 1000},
        "sampler": {"name": "langevin", "steps": 20, "step_size": 1.0, "noise": 0.01},
        "objective": {"name": "maximum-likelihood", "data_noise": 0.0},
        "optimizer": {"name": "adam", "lr": 0.003, "betas": [0.5, 0.999]},
        "training": {"iterations": 300, "batch_size": 100, "sample_every": 0, "checkpoint_every": 0, "progress": False},
        "output": {"dir": str(tmp_path / "run")},
    })
    trainer = Trainer(build_experiment(cfg))
    ref = Rings().sample(1000, torch.Generator().manual_seed(1))
    before = mmd(trainer.sample(1000), ref)  # the bank is uniform noise before training
    trainer.fit()
    after = mmd(trainer.sample(1000), ref)
    assert after < 0.8 * before, (before, after)
