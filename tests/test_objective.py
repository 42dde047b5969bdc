import pytest
import torch
from torch import nn

import ebmkit


class Linear(ebmkit.Energy):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


def test_gradient_equals_analytic_difference_on_a_linear_energy():
    energy = Linear(6)
    pos, neg = torch.randn(10, 6), torch.randn(12, 6) + 1
    out = ebmkit.create_objective("maximum-likelihood", data_noise=0.0)(energy, pos, neg)
    out.loss.backward()
    torch.testing.assert_close(energy.w.grad, pos.mean(0) - neg.mean(0))
    assert energy.b.grad.item() == pytest.approx(0.0, abs=1e-6)
    assert out.logs["gap"] == pytest.approx(out.logs["energy_data"] - out.logs["energy_samples"], abs=1e-6)


def test_data_noise_smooths_the_positive_batch_only():
    energy = Linear(4)
    pos, neg = torch.zeros(20000, 4), torch.zeros(5, 4)
    obj = ebmkit.create_objective("maximum-likelihood", data_noise=0.5)
    torch.manual_seed(0)
    out = obj(energy, pos, neg)
    out.loss.backward()
    # grad_w = mean(0 + 0.5 eps) - mean(0): zero in expectation, sd 0.5/sqrt(n)
    assert energy.w.grad.abs().max() < 5 * 0.5 / 20000**0.5
    torch.manual_seed(0)
    noise = 0.5 * torch.randn(20000, 4)
    torch.testing.assert_close(energy.w.grad, noise.mean(0))


def test_negatives_are_detached():
    energy = Linear(3)
    neg = torch.randn(4, 3, requires_grad=True)
    ebmkit.create_objective("maximum-likelihood", data_noise=0.0)(energy, torch.randn(4, 3), neg).loss.backward()
    assert neg.grad is None
