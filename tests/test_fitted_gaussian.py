"""fitted-gaussian: chains start from N(mean, cov) of the training data."""

import pytest
import torch

from ebmkit.config import parse_config
from ebmkit.errors import DataError
from ebmkit.experiment import build_experiment, load_trained
from ebmkit.training.loop import Trainer
from ebmkit_plugins.simple_initializers import FittedGaussianInit


def _known_gaussian(n: int = 40_000):
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.5, -0.25, 0.0])
    a = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]])
    cov = a @ a.T
    return mean, cov, mean + torch.randn(n, 3, generator=g) @ a.T


def test_fit_recovers_a_known_gaussian_and_samples_follow_it():
    mean, cov, data = _known_gaussian()
    init = FittedGaussianInit.fit(data, shrinkage=0.0)
    assert torch.allclose(init.mean, mean, atol=0.02)
    assert torch.allclose(init.factor @ init.factor.T, cov, atol=0.03)  # the factor reproduces the covariance
    torch.manual_seed(1)
    z = init.sample(40_000)
    assert z.shape == (40_000, 3)
    assert torch.allclose(z.mean(0), mean, atol=0.03) and torch.allclose(torch.cov(z.T), cov, atol=0.05)


def test_shrinkage_scale_and_rank_act_as_stated():
    _, cov, data = _known_gaussian()
    sample_cov = torch.cov(data.T)
    shrunk = FittedGaussianInit.fit(data, shrinkage=0.5)
    expected = 0.5 * sample_cov + 0.5 * sample_cov.diagonal().mean() * torch.eye(3)
    assert torch.allclose(shrunk.factor @ shrunk.factor.T, expected, atol=1e-4)
    wide = FittedGaussianInit.fit(data, shrinkage=0.0, scale=2.0)
    torch.manual_seed(2)
    assert torch.allclose(torch.cov(wide.sample(40_000).T), 4 * sample_cov, atol=0.2)  # sd x2, variance x4
    top = FittedGaussianInit.fit(data, rank=1, shrinkage=0.0)
    values, vectors = torch.linalg.eigh(sample_cov)
    assert top.factor.shape == (3, 1)
    assert torch.allclose(top.factor @ top.factor.T, values[-1] * vectors[:, -1:] @ vectors[:, -1:].T, atol=1e-4)


def test_fit_keeps_the_image_shape_and_refuses_one_item():
    data = torch.rand(50, 1, 4, 4) * 2 - 1
    assert FittedGaussianInit.fit(data).sample(7).shape == (7, 1, 4, 4)
    with pytest.raises(DataError, match="at least 2 training items"):
        FittedGaussianInit.fit(data[:1])


def test_trains_from_config_and_its_fit_comes_back_from_a_checkpoint(tiny):
    cfg = parse_config(tiny(initializer={"name": "fitted-gaussian", "rank": 10}, training={"iterations": 2,
                                                                                          "checkpoint_every": 2}))
    trainer = Trainer(build_experiment(cfg))
    data = torch.stack([trainer.experiment.dataset[i] for i in range(len(trainer.experiment.dataset))])
    assert torch.allclose(trainer.initializer.mean, data.flatten(1).mean(0), atol=1e-5)
    trainer.fit()
    exp = load_trained(cfg.output.dir)  # rebuilt without the dataset: the checkpoint's fit replaces the placeholders
    assert torch.equal(exp.initializer.factor, trainer.initializer.factor)
    assert torch.equal(exp.initializer.mean, trainer.initializer.mean)


def test_interpolation_blends_about_the_mean_and_keeps_the_distribution():
    mean, cov, data = _known_gaussian()
    init = FittedGaussianInit.fit(data, shrinkage=0.0)
    torch.manual_seed(3)
    z1, z2 = init.sample(40_000), init.sample(40_000)
    a = b = 0.5 ** 0.5
    z = init.blend(z1, z2, a, b)
    assert torch.allclose(z.mean(0), mean, atol=0.03)  # a plain a*z1 + b*z2 would sit at 1.41 x mean
    assert torch.allclose(torch.cov(z.T), cov, atol=0.06)
    assert torch.equal(init.blend(z1, z2, 1.0, 0.0), z1)
