"""Metropolis-adjusted Langevin: invariance, acceptance, wiring."""

import pytest
import torch
from torch import nn

from ebmkit.config import parse_config
from ebmkit.errors import ConfigError
from ebmkit.experiment import build_experiment
from ebmkit.registry import default_registry
from ebmkit.training.loop import Trainer
from ebmkit_plugins.mala import MALASampler


class Quadratic(nn.Module):
    """U(x) = 0.5 sum((x - mean)^2 / var): the gaussian N(mean, diag(var))."""

    def __init__(self, mean, var):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("var", torch.tensor(var))

    def forward(self, x):
        return 0.5 * ((x - self.mean) ** 2 / self.var).sum(1)


def build(**params):
    return default_registry().build("sampler", "mala", params)


def test_mala_leaves_a_2d_gaussian_invariant():
    energy = Quadratic([0.5, -1.0], [0.25, 1.0])
    z = torch.randn(4000, 2) * 0.5 + torch.tensor([0.5, -1.0])
    out = build(steps=200, epsilon=0.6).run(energy, z * 0 + torch.tensor([2.0, 2.0]))  # start far away
    x = out.x
    assert torch.allclose(x.mean(0), torch.tensor([0.5, -1.0]), atol=0.04)
    assert torch.allclose(x.var(0), torch.tensor([0.25, 1.0]), rtol=0.1)
    assert 0.0 < out.acceptance <= 1.0


def test_mala_1d_moments_from_the_target():
    energy = Quadratic([1.0], [4.0])
    z = 1.0 + 2.0 * torch.randn(5000, 1)
    x = build(steps=50, epsilon=2.5).run(energy, z).x  # a large step: MH keeps the target exact
    assert abs(float(x.mean()) - 1.0) < 0.1
    assert abs(float(x.var()) - 4.0) < 0.3


def test_decoupled_form_targets_exp_minus_beta_u():
    # step 1, noise 0.5: beta = 2 * 1 / 0.25 = 8, so the variance shrinks 8-fold
    energy = Quadratic([0.0, 0.0], [1.0, 1.0])
    sampler = build(steps=150, step_size=0.02, noise=0.2)
    assert sampler.beta == pytest.approx(1.0)
    sampler = build(steps=150, step_size=1.0, noise=0.5)
    assert sampler.beta == pytest.approx(8.0)
    x = sampler.run(energy, torch.randn(4000, 2) / 8**0.5).x
    assert torch.allclose(x.var(0), torch.full((2,), 1 / 8), rtol=0.12)


def test_acceptance_falls_as_the_step_grows_and_tends_to_one():
    energy = Quadratic([0.0, 0.0], [1.0, 1.0])
    z = torch.randn(2000, 2)
    rates = [build(steps=20, epsilon=eps).run(energy, z).acceptance for eps in (0.001, 0.5, 1.5, 2.5)]
    assert rates[0] > 0.999
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    assert all(0 < a <= 1 for a in rates)


def test_fixed_noise_and_diagnostics():
    energy = Quadratic([0.0], [1.0])
    z = torch.full((3, 1), 2.0)
    noise = torch.zeros(4, 3, 1)
    s = MALASampler(steps=4, step_size=0.1, noise=0.1)
    out = s.run(energy, z, noise=noise, record=(0, 4))
    # zero noise: the proposal is a gradient step x - 0.1 x, which lowers U and is accepted here
    assert torch.allclose(out.x, z * 0.9**4)
    assert torch.allclose(out.grad_norm, torch.tensor([2.0 * 0.9**k for k in range(4)]))
    assert set(out.trajectory) == {0, 4}
    with pytest.raises(ValueError, match="not differentiable"):
        s.run(energy, z, keep_graph=True)


def test_mala_params_are_checked():
    with pytest.raises(ConfigError, match="not both"):
        build(epsilon=0.1, noise=0.1)
    with pytest.raises(ConfigError, match="both step_size and noise"):
        build(step_size=0.1)


def test_trainer_logs_the_acceptance_rate(tiny):
    cfg = parse_config(tiny(sampler={"name": "mala", "steps": 3, "step_size": 5e-5, "noise": 0.01}, training={"iterations": 2}))
    last = Trainer(build_experiment(cfg)).fit()
    assert 0.0 <= last["acceptance"] <= 1.0
