"""Langevin / gradient-descent samplers against hand-computed updates."""

import math

import pytest
import torch
from torch import nn

import ebmkit


class Quadratic(ebmkit.Energy):
    """U(x) = 0.5 * a * ||x||^2, so grad U = a x."""

    def __init__(self, a=1.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x):
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


def test_one_langevin_step_matches_hand_computation():
    sampler = ebmkit.create_sampler("langevin", steps=1, step_size=0.1, noise=0.05)
    z = torch.randn(3, 1, 2, 2)
    noise = torch.randn(1, 3, 1, 2, 2)
    x1 = sampler.run(Quadratic(2.0), z, noise=noise).x
    expected = z - 0.1 * (2.0 * z) + 0.05 * noise[0]
    torch.testing.assert_close(x1, expected)


def test_coupled_form_uses_eps_squared_over_two():
    sampler = ebmkit.create_sampler("langevin", steps=1, epsilon=0.2)
    assert sampler.step_size == pytest.approx(0.02) and sampler.noise == pytest.approx(0.2)
    z, noise = torch.randn(4, 3), torch.randn(1, 4, 3)
    x1 = sampler.run(Quadratic(1.0), z, noise=noise).x
    torch.testing.assert_close(x1, z - 0.02 * z + 0.2 * noise[0])


def test_both_forms_at_once_is_an_error():
    with pytest.raises(ebmkit.errors.ConfigError, match="either epsilon"):
        ebmkit.create_sampler("langevin", epsilon=0.1, step_size=1.0)


def test_k_steps_of_gradient_descent_on_a_quadratic_is_geometric():
    s = ebmkit.create_sampler("gradient-descent", steps=7, step_size=0.3)
    z = torch.randn(5, 4)
    x = s.run(Quadratic(1.0), z).x
    torch.testing.assert_close(x, (1 - 0.3) ** 7 * z)


def test_gradient_descent_is_deterministic_given_z():
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=4)
    s = ebmkit.create_sampler("gradient-descent", steps=5, step_size=0.5)
    z = torch.rand(3, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    a = s.run(energy, z).x
    torch.manual_seed(2)
    b = s.run(energy, z).x
    assert torch.equal(a, b)


def test_fixed_noise_makes_langevin_deterministic_and_free_noise_does_not():
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=4)
    s = ebmkit.create_sampler("langevin", steps=4, step_size=0.5, noise=0.1)
    z = torch.rand(2, 1, 8, 8)
    noise = torch.randn(4, 2, 1, 8, 8)
    assert torch.equal(s.run(energy, z, noise=noise).x, s.run(energy, z, noise=noise).x)
    assert not torch.equal(s.run(energy, z).x, s.run(energy, z).x)


def test_sampling_leaves_no_parameter_grads_and_restores_requires_grad():
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=4)
    first = next(energy.parameters())
    first.requires_grad_(False)  # a user-frozen parameter stays frozen
    flags = [p.requires_grad for p in energy.parameters()]
    ebmkit.create_sampler("langevin", steps=3).run(energy, torch.rand(2, 1, 8, 8))
    assert all(p.grad is None for p in energy.parameters())
    assert [p.requires_grad for p in energy.parameters()] == flags


def test_grad_norm_diagnostic_is_per_step_batch_mean():
    s = ebmkit.create_sampler("gradient-descent", steps=2, step_size=0.5)
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    r = s.run(Quadratic(1.0), z)
    # step 0: |grad| = |z| -> (5 + 1)/2; step 1: x = 0.5 z -> half of that
    torch.testing.assert_close(r.grad_norm, torch.tensor([3.0, 1.5]))


def test_keep_graph_differentiates_through_the_chain():
    s = ebmkit.create_sampler("gradient-descent", steps=3, step_size=0.2)
    z = torch.randn(2, 3, requires_grad=True)
    x = s.run(Quadratic(1.0), z, keep_graph=True).x
    x.sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 0.8**3))


def test_trajectory_records_requested_steps():
    s = ebmkit.create_sampler("gradient-descent", steps=4, step_size=0.5)
    z = torch.ones(1, 2)
    r = s.run(Quadratic(1.0), z, record=(0, 2, 4))
    assert sorted(r.trajectory) == [0, 2, 4]
    torch.testing.assert_close(r.trajectory[2], 0.25 * z)
    torch.testing.assert_close(r.trajectory[4], r.x)


def test_langevin_samples_a_gaussian():
    """Coupled Langevin with a small step on U = ||x||^2/2 has stationary sd ~ 1."""
    s = ebmkit.create_sampler("langevin", steps=600, epsilon=0.1)
    x = s.run(Quadratic(1.0), torch.zeros(4000, 1)).x
    # exact stationary variance of the discretised chain: 1 / (1 - (eps^2/2)/2)... ~1.0025
    assert x.mean().abs() < 0.06
    assert math.isclose(x.var().item(), 1.0 / (1 - 0.1**2 / 4), rel_tol=0.08)
