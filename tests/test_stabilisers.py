"""Each stabiliser changes the loss or the update exactly as documented
(docs/recipes.md), checked against hand computations on fixed batches."""

import math

import pytest
import torch
from torch import nn

import ebmkit
from ebmkit.config import parse_config
from ebmkit.errors import ConfigError
from ebmkit.training.schedule import lr_factor


class Linear(ebmkit.Energy):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return x.flatten(1) @ self.w


class Quadratic(ebmkit.Energy):
    """U(x) = a/2 ||x||^2, so grad U = a x."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


POS = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # U = [1, 3] with w = (1, 0); mean 2
NEG = torch.tensor([[-1.0, 5.0], [0.0, 1.0], [2.0, 0.0]])  # U = [-1, 0, 2]; mean 1/3


# -- objective ------------------------------------------------------------------------


def test_energy_penalty_adds_alpha_times_mean_squared_energies():
    energy = Linear([1.0, 0.0])
    obj = ebmkit.create_objective("maximum-likelihood", data_noise=0.0, energy_penalty=0.1)
    out = obj(energy, POS, NEG)
    gap = 2.0 - 1.0 / 3.0
    penalty = 0.1 * ((1 + 9) / 2 + (1 + 0 + 4) / 3)  # 0.1 * (5 + 5/3)
    assert out.loss.item() == pytest.approx(gap + penalty, rel=1e-6)
    assert out.logs["energy_penalty"] == pytest.approx(penalty, rel=1e-6)
    assert out.logs["gap"] == pytest.approx(gap, rel=1e-6)  # the logged gap is the raw one
    out.loss.backward()
    # d/dw: mean x_pos - mean x_neg + alpha * (2 mean U_pos x_pos + 2 mean U_neg x_neg)
    u_pos, u_neg = POS[:, 0], NEG[:, 0]
    expected = POS.mean(0) - NEG.mean(0) + 0.1 * (2 * (u_pos[:, None] * POS).mean(0) + 2 * (u_neg[:, None] * NEG).mean(0))
    torch.testing.assert_close(energy.w.grad, expected)


def test_gap_cap_is_c_tanh_gap_over_c_with_shrunk_gradient():
    energy = Linear([3.0, 0.0])  # U_pos = [3, 9] mean 6; U_neg = [-3, 0, 6] mean 1; gap 5
    obj = ebmkit.create_objective("maximum-likelihood", data_noise=0.0, gap_cap=2.0)
    out = obj(energy, POS, NEG)
    assert out.logs["gap"] == pytest.approx(5.0)
    assert out.loss.item() == pytest.approx(2.0 * math.tanh(5.0 / 2.0), rel=1e-6)
    out.loss.backward()
    shrink = 1 - math.tanh(2.5) ** 2
    torch.testing.assert_close(energy.w.grad, shrink * (POS.mean(0) - NEG.mean(0)))


def test_gap_cap_leaves_a_small_gap_nearly_unchanged():
    energy = Linear([0.001, 0.0])
    out = ebmkit.create_objective("maximum-likelihood", data_noise=0.0, gap_cap=100.0)(energy, POS, NEG)
    assert out.loss.item() == pytest.approx(out.logs["gap"], rel=1e-6)


def test_defaults_are_the_papers_plain_gap():
    energy = Linear([1.0, 0.0])
    out = ebmkit.create_objective("maximum-likelihood", data_noise=0.0)(energy, POS, NEG)
    assert out.loss.item() == pytest.approx(2.0 - 1.0 / 3.0, rel=1e-6)
    assert "energy_penalty" not in out.logs
    assert ebmkit.create_objective("maximum-likelihood").set_progress(5, 10) == {}


def test_data_noise_anneals_linearly_after_the_start_fraction():
    obj = ebmkit.create_objective("maximum-likelihood", data_noise=0.1, data_noise_final=0.0, data_noise_anneal_start=0.5)
    # total 11: begin at 5.5, reach the final value at the last iteration (10)
    sigmas = [obj.set_progress(i, 11)["data_noise"] for i in range(11)]
    assert sigmas[:6] == [0.1] * 6
    assert sigmas[7] == pytest.approx(0.1 * (1 - 1.5 / 4.5))
    assert sigmas[10] == 0.0
    # and the noise added to the data is the current sigma's
    energy = Linear([1.0, 1.0])
    obj.set_progress(7, 11)
    torch.manual_seed(3)
    out = obj(energy, torch.zeros(4, 2), torch.zeros(1, 2))
    torch.manual_seed(3)
    expected = (sigmas[7] * torch.randn(4, 2)).sum(1).mean()
    assert out.logs["energy_data"] == pytest.approx(expected.item(), rel=1e-5)


def test_annealed_sigma_is_logged_by_the_trainer(tiny, tmp_path):
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    cfg = parse_config(tiny(objective={"data_noise": 0.04, "data_noise_final": 0.0, "data_noise_anneal_start": 0.5}))
    Trainer(build_experiment(cfg)).fit()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("data_noise")
    got = [float(r.split(",")[col]) for r in rows[1:]]
    # 4 iterations, start 0.5: flat through iteration 2, the final value at iteration 3
    assert got == pytest.approx([0.04, 0.04, 0.04, 0.0], abs=1e-9)


# -- sampler --------------------------------------------------------------------------


def _one_step(z, **params):
    sampler = ebmkit.create_sampler("langevin", steps=1, step_size=1.0, noise=0.0, **params)
    return sampler.run(Quadratic(10.0), z)


def test_elementwise_gradient_clip_clamps_each_component():
    z = torch.tensor([[0.5, -0.05], [0.01, -2.0]])
    out = _one_step(z, grad_clip=1.0, grad_clip_mode="element")
    # grad = 10 z = [[5, -0.5], [0.1, -20]] -> clamp to [-1, 1]
    torch.testing.assert_close(out.x, z - torch.tensor([[1.0, -0.5], [0.1, -1.0]]))
    # the diagnostic is the unclipped gradient's norm
    assert out.grad_norm[0].item() == pytest.approx((10 * z).norm(dim=1).mean().item(), rel=1e-6)


def test_norm_gradient_clip_rescales_each_sample():
    z = torch.tensor([[0.3, 0.4], [0.03, 0.04]])  # grad norms 5 and 0.5
    out = _one_step(z, grad_clip=1.0, grad_clip_mode="norm")
    torch.testing.assert_close(out.x, z - torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_clip_is_the_same_with_keep_graph_and_for_gradient_descent():
    z = torch.tensor([[0.5, -0.05], [0.01, -2.0]])
    lv = ebmkit.create_sampler("langevin", steps=2, step_size=0.5, noise=0.0, grad_clip=0.7, grad_clip_mode="norm")
    gd = ebmkit.create_sampler("gradient-descent", steps=2, step_size=0.5, grad_clip=0.7, grad_clip_mode="norm")
    a = lv.run(Quadratic(10.0), z).x
    b = lv.run(Quadratic(10.0), z.clone().requires_grad_(True), keep_graph=True).x
    c = gd.run(Quadratic(10.0), z).x
    torch.testing.assert_close(a, b.detach())
    torch.testing.assert_close(a, c)


def test_no_clip_by_default():
    z = torch.tensor([[0.5, -2.0]])
    torch.testing.assert_close(_one_step(z).x, z - 10 * z)


def test_bad_clip_settings_name_the_field():
    with pytest.raises(ConfigError, match="grad_clip_mode"):
        ebmkit.create_sampler("langevin", grad_clip=1.0, grad_clip_mode="rows")
    with pytest.raises(ConfigError, match="grad_clip"):
        ebmkit.create_sampler("langevin", grad_clip=-1.0)
    with pytest.raises(ConfigError, match="energy_penalty"):
        ebmkit.create_objective("maximum-likelihood", energy_penalty=-0.1)


# -- energies ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape", [("mlp", (2,)), ("convnet", (1, 8, 8))])
def test_spectral_norm_makes_every_layer_unit_norm(name, shape):
    params = {"hidden": 16, "depth": 2} if name == "mlp" else {"nf": 4}
    energy = ebmkit.create_energy(name, shape=shape, spectral_norm=True, **params)
    x = torch.randn(8, *shape)
    for _ in range(30):  # power iterations run in training-mode forward passes
        energy(x)
    layers = [m for m in energy.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        # torch normalises the weight reshaped to (out, in * kernel): its top singular value is 1
        assert sigma == pytest.approx(1.0, rel=1e-2)
    plain = ebmkit.create_energy(name, shape=shape, **params)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


# -- learning rate ------------------------------------------------------------------------


def test_warmup_and_late_linear_annealing_from_the_config(tiny, tmp_path):
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    schedule = {"warmup": 2, "decay": "linear", "start": 0.5}
    cfg = parse_config(tiny(optimizer={"lr": 1e-3, "schedule": schedule}, training={"iterations": 6}))
    Trainer(build_experiment(cfg)).fit()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("lr")
    got = [float(r.split(",")[col]) for r in rows[1:]]
    # warm-up: 1/2, 1; flat until 3; then linear to 0 over iterations 3..6
    expected = [1e-3 * f for f in (0.5, 1.0, 1.0, 1.0, 2 / 3, 1 / 3)]
    assert got == pytest.approx(expected, rel=1e-6)
    assert [lr_factor(cfg.optimizer.schedule, i, 6, 1e-3) for i in range(6)] == pytest.approx([e / 1e-3 for e in expected])
