"""Anatomy diagnostics d_st / r_t, the recipe's scalings, and the callback."""

import csv

import numpy as np
import pytest
import torch
from torch import nn

from ebmkit.cli import main as cli_main
from ebmkit.config import OptimizerConfig, ScheduleConfig, parse_config
from ebmkit.training.diagnostics import (
    COLUMNS, Diagnostics, autocorrelation, chain_gradient_magnitude, energy_difference, gradient_magnitude,
)
from ebmkit.experiment import build_experiment
from ebmkit.training.schedule import lr_factor
from ebmkit.training.loop import Trainer
from ebmkit_plugins.langevin import LangevinSampler
from ebmkit_plugins.maximum_likelihood import MaximumLikelihood


class HalfSquare(nn.Module):
    """U(x) = 0.5 |x|^2, so grad U = x and |grad U| = |x|."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(1)


def test_d_st_is_its_definition_on_a_fixed_energy():
    data = torch.tensor([[1.0, 0.0], [0.0, 2.0]])      # U: 0.5, 2.0 -> mean 1.25
    samples = torch.tensor([[3.0, 4.0], [0.0, 0.0]])   # U: 12.5, 0 -> mean 6.25
    assert energy_difference(HalfSquare(), data, samples) == pytest.approx(-5.0)
    assert energy_difference(HalfSquare(), data, samples, scale=2 / 0.1**2) == pytest.approx(-1000.0)


def test_r_t_equals_hand_computation_on_a_fixed_chain():
    eps = 0.2
    sampler = LangevinSampler(steps=3, step_size=eps**2 / 2, noise=eps)
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    noise = torch.tensor([[[0.5, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]], [[-1.0, 0.0], [2.0, 0.0]]])
    out = sampler.run(HalfSquare(), z, noise=noise, record=(0, 1, 2))
    # by hand: x_{k+1} = x_k - (eps^2/2) x_k + eps * noise_k = 0.98 x_k + 0.2 noise_k
    x0 = z
    x1 = 0.98 * x0 + 0.2 * noise[0]
    x2 = 0.98 * x1 + 0.2 * noise[1]
    norms = [x.norm(dim=1) for x in (x0, x1, x2)]  # |grad U(x_k)| = |x_k| at the points the gradient is taken
    by_hand = eps**2 / 2 * float(torch.stack(norms).mean())
    assert gradient_magnitude(eps**2 / 2, out.grad_norm) == pytest.approx(by_hand, rel=1e-6)
    states = [out.trajectory[k] for k in (0, 1, 2)]
    assert chain_gradient_magnitude(HalfSquare(), states, eps**2 / 2) == pytest.approx(by_hand, rel=1e-6)


def test_autocorrelation_of_known_series():
    alt = np.array([1.0, -1.0] * 50)
    acf = autocorrelation(alt, 3)
    assert acf[0] == pytest.approx(1.0)
    assert acf[1] == pytest.approx(-99 / 100) and acf[2] == pytest.approx(98 / 100)
    assert np.allclose(autocorrelation(np.ones(10), 4), [1, 0, 0, 0, 0])


def test_loss_is_scaled_by_two_over_eps_squared():
    energy = HalfSquare()
    pos, neg = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]])  # U: 1, 2 -> gap -1
    plain = MaximumLikelihood(data_noise=0.0)(energy, pos, neg)
    scaled = MaximumLikelihood(data_noise=0.0, epsilon_scale=0.1)(energy, pos, neg)
    assert float(plain.loss) == pytest.approx(-1.0)
    assert float(scaled.loss) == pytest.approx(-200.0)
    assert scaled.logs["gap"] == pytest.approx(-1.0)  # the logged gap stays unscaled


def test_sgd_lr_scaled_by_eps_squared_over_two_and_decays_to_a_floor(tiny):
    opt = OptimizerConfig(name="sgd", lr=0.1, epsilon_scale=0.1,
                          schedule=ScheduleConfig(decay="multiplicative", gamma=0.5, every=2, min_lr=0.02))
    assert opt.lr_multiplier() == pytest.approx(0.005)
    sched = opt.effective_schedule()
    assert sched.min_lr == pytest.approx(1e-4)  # the floor is scaled with the lr
    base = 0.1 * 0.005
    lrs = [base * lr_factor(sched, i, 100, base) for i in range(8)]
    assert lrs == pytest.approx([5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4, 1.25e-4, 1e-4, 1e-4])
    cfg = parse_config(tiny(optimizer=opt.model_dump(), training={"iterations": 5}))
    trainer = Trainer(build_experiment(cfg))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    trainer.fit()
    with open(trainer.run_dir / "metrics.csv") as f:
        logged = [float(r["lr"]) for r in csv.DictReader(f)]
    assert logged == pytest.approx(lrs[:5])


def test_diagnostics_csv_and_plots_in_a_tiny_run(tiny):
    eps = 0.01
    cfg = parse_config(tiny(
        objective={"epsilon_scale": eps},
        training={"iterations": 4},
        diagnostics={"enabled": True, "plot_every": 2, "long_run_every": 3, "long_run_steps": 12, "long_run_chains": 4},
    ))
    trainer = Trainer(build_experiment(cfg), callbacks=[Diagnostics(cfg.diagnostics)])
    trainer.fit()
    run = trainer.run_dir
    with open(run / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    with open(run / "metrics.csv") as f:
        metrics = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 4
    for d, m in zip(rows, metrics):
        assert float(d["d_st"]) == pytest.approx(2 / eps**2 * float(m["gap"]))      # loss units
        assert float(d["r_t"]) == pytest.approx(1.0 * float(m["chain_grad_norm"]))  # step_size 1
        assert float(d["energy_data"]) - float(d["energy_samples"]) == pytest.approx(float(m["gap"]), abs=1e-5)
    assert (run / "diagnostics.png").stat().st_size > 1000
    assert (run / "diagnostics" / "longrun" / "iter-00000003.png").exists()  # at the interval ...
    assert (run / "diagnostics" / "longrun" / "iter-00000004.png").exists()  # ... and at the end
    with open(run / "diagnostics" / "longrun.csv") as f:
        assert [r["steps"] for r in csv.DictReader(f)] == ["12", "12"]


def test_diagnostics_from_the_command_line(tiny, tmp_path, capsys):
    import json

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(tiny(training={"iterations": 2}, diagnostics={"enabled": True})))
    assert cli_main(["train", str(path)]) == 0
    run = tmp_path / "run"
    assert (run / "diagnostics.csv").exists() and (run / "diagnostics.png").exists()
    path.write_text(json.dumps(tiny(training={"iterations": 2}, output={"dir": str(tmp_path / "off")})))
    assert cli_main(["train", str(path)]) == 0
    assert not (tmp_path / "off" / "diagnostics.csv").exists()  # off unless enabled


@pytest.mark.parametrize("name", ["anatomy-rings-convergent", "anatomy-rings-nonconvergent",
                                  "anatomy-digits-convergent", "anatomy-digits-nonconvergent"])
def test_anatomy_presets_are_valid(name):
    from ebmkit.cli import preset_names, resolve_config_path
    from ebmkit.config import load_config

    assert name in preset_names()
    cfg = load_config(resolve_config_path(name))
    assert cfg.diagnostics.enabled
    if "nonconvergent" in name:
        assert cfg.initializer.name == "uniform"
    else:  # the recipe's scalings go together: loss x 2/eps^2, lr x eps^2/2, noise eps
        assert cfg.initializer.name == "persistent"
        eps = cfg.sampler.params["noise"]
        assert cfg.objective.params["epsilon_scale"] == eps and cfg.optimizer.epsilon_scale == eps


def test_diagnostics_csv_reads_as_one_run_after_a_rollback(tmp_path):
    from types import SimpleNamespace

    from ebmkit.config import DiagnosticsConfig

    trainer = SimpleNamespace(run_dir=tmp_path, is_main=True, iteration=0, objective=SimpleNamespace(loss_scale=2.0),
                              sampler=SimpleNamespace(step_size=0.5))
    cb = Diagnostics(DiagnosticsConfig(enabled=True))
    cb.on_train_start(trainer)
    for it in (1, 2, 3, 2, 3, 4):  # the divergence guard rolled back from 3 to the checkpoint at 1
        trainer.iteration = it
        cb.on_step_end(trainer, {"iteration": it, "gap": float(it), "chain_grad_norm": 10.0 * it})
    with open(tmp_path / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["d_st"]) for r in rows] == [2.0, 4.0, 6.0, 8.0]   # loss_scale x gap
    assert [float(r["r_t"]) for r in rows] == [5.0, 10.0, 15.0, 20.0]  # step x chain_grad_norm
