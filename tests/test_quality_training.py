"""Quality tools in training: the EMA of the weights, the [evaluation] section,
the best-so-far checkpoint, and the noise-free final stretch of a chain."""

import csv
import json

import pytest
import torch

from ebmkit import create_energy, create_sampler
from ebmkit.config import parse_config
from ebmkit.errors import ConfigError
from ebmkit.experiment import build_experiment, load_trained
from ebmkit.training.ema import WeightAverage
from ebmkit.training.loop import Trainer


def tiny_config(tmp_path, **sections):
    cfg = {
        "data": {"name": "digits", "image_size": 8},
        "energy": {"name": "convnet", "nf": 4},
        "initializer": {"name": "uniform"},
        "sampler": {"name": "langevin", "steps": 3},
        "objective": {"name": "maximum-likelihood"},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"iterations": 6, "batch_size": 8, "sample_every": 0, "checkpoint_every": 0, "progress": False,
                     "device": "cpu"},
        "output": {"dir": str(tmp_path / "run"), "grid_size": 4},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return parse_config(cfg)


def test_ema_equals_the_hand_computed_average():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    ema = WeightAverage(net, decay=0.9)
    expected = None
    for _ in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net)
        now = {k: v.detach().clone() for k, v in net.state_dict().items()}
        # the first update copies the weights after the first step; then theta_ema <- 0.9 theta_ema + 0.1 theta
        expected = now if expected is None else {k: 0.9 * expected[k] + 0.1 * now[k] for k in now}
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, decay=1.0)


def test_trainer_keeps_saves_and_samples_with_the_average(tmp_path):
    cfg = tiny_config(tmp_path, ema={"decay": 0.5})
    trainer = Trainer(build_experiment(cfg))
    start = {k: v.clone() for k, v in trainer.unwrapped_energy.state_dict().items()}
    trainer.fit()
    live = trainer.unwrapped_energy.state_dict()
    averaged = trainer.ema.module.state_dict()
    name = next(iter(live))
    assert not torch.equal(live[name], start[name])  # it trained
    assert not torch.equal(averaged[name], live[name])  # and the average lags behind
    assert trainer.sampling_energy is trainer.ema.module
    loaded = load_trained(tmp_path / "run")  # a loaded run samples with the averaged weights
    assert torch.equal(loaded.energy.state_dict()[name], averaged[name])
    # resuming restores the average (and its update count) exactly
    again = Trainer(build_experiment(cfg))
    again.resume()
    for k, v in again.ema.module.state_dict().items():
        assert torch.equal(v, averaged[k]), k
    assert int(again.ema.averaged.n_averaged) == int(trainer.ema.averaged.n_averaged) == 6


def test_ema_off_by_default_and_sample_false_uses_live_weights(tmp_path):
    assert Trainer(build_experiment(tiny_config(tmp_path))).ema is None
    cfg = tiny_config(tmp_path, ema={"decay": 0.5, "sample": False})
    trainer = Trainer(build_experiment(cfg))
    trainer.fit()
    assert trainer.sampling_energy is trainer.unwrapped_energy
    name = next(iter(trainer.unwrapped_energy.state_dict()))
    loaded = load_trained(tmp_path / "run")
    assert torch.equal(loaded.energy.state_dict()[name], trainer.unwrapped_energy.state_dict()[name])


def test_evaluation_section_writes_its_columns_and_keeps_the_best(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMKIT_CLASSIFIER_CACHE", str(tmp_path / "classifiers"))
    from ebmkit.metrics import classifier as cm

    real_train = cm.train_classifier
    monkeypatch.setattr(cm, "train_classifier", lambda *a, **kw: real_train(*a, **{**kw, "epochs": 2}))  # fast
    cfg = tiny_config(tmp_path, evaluation={"every": 3, "samples": 20, "keep_best": "fd"})
    last = Trainer(build_experiment(cfg)).fit()
    assert {"eval_recognisable", "eval_coverage", "eval_fd"} <= set(last)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    scored = [r for r in rows if r["eval_fd"]]
    assert [int(r["iteration"]) for r in scored] == [3, 6]
    for r in scored:
        assert 0.0 <= float(r["eval_recognisable"]) <= 1.0 and 0.0 <= float(r["eval_coverage"]) <= 1.0
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    fds = {int(r["iteration"]): float(r["eval_fd"]) for r in scored}
    assert best["metric"] == "fd" and best["iteration"] == min(fds, key=fds.get)
    assert best["value"] == pytest.approx(min(fds.values()))
    assert load_trained(tmp_path / "run" / "best").checkpoint.iteration == best["iteration"]


def test_evaluation_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="keep_best"):
        tiny_config(tmp_path, evaluation={"every": 3, "metrics": ["fid"], "keep_best": "fd"})
    cfg = tiny_config(tmp_path, data={"name": "patches", "image_size": 8, "count": 40}, energy={"nf": 4},
                      evaluation={"every": 3, "samples": 8})
    with pytest.raises(ConfigError, match="no labels"):
        Trainer(build_experiment(cfg)).fit()


def test_noise_free_final_stretch():
    torch.manual_seed(0)
    energy = create_energy("mlp", (4,), hidden=8)
    z = torch.randn(5, 4)
    noise = torch.randn(6, 5, 4)
    noisy = create_sampler("langevin", steps=6, step_size=0.1, noise=0.3)
    quiet = create_sampler("langevin", steps=6, step_size=0.1, noise=0.3, final_noise_free=2)
    descent = create_sampler("gradient-descent", steps=2, step_size=0.1)
    head = noisy.run(energy, z, noise=noise, steps=4).x  # the first 4 steps are the same chain
    expected = descent.run(energy, head).x  # then 2 steps of plain gradient descent
    assert torch.allclose(quiet.run(energy, z, noise=noise).x, expected, atol=1e-6)
    assert not torch.allclose(noisy.run(energy, z, noise=noise).x, expected, atol=1e-3)
    everything = create_sampler("langevin", steps=6, step_size=0.1, noise=0.3, final_noise_free=6)
    assert torch.allclose(everything.run(energy, z, noise=noise).x,
                          create_sampler("gradient-descent", steps=6, step_size=0.1).run(energy, z).x, atol=1e-6)


def test_a_short_run_of_the_main_job_beats_noise_on_the_classifier(tmp_path, monkeypatch):
    """The README's main job, cut to 400 iterations: its samples are already far from noise by the data's own
    classifier (the full run's targets are measured by `python -m benchmarks.run quality`, not asserted here)."""
    import json as _json

    from ebmkit.cli import resolve_config_path
    from ebmkit.config import load_config

    monkeypatch.setenv("EBMKIT_CLASSIFIER_CACHE", str(tmp_path / "classifiers"))
    cfg = load_config(resolve_config_path("digits-cpu"), [
        f"output.dir={_json.dumps(str(tmp_path / 'run'))}", "training.iterations=400", "training.progress=false",
        "training.sample_every=0", "training.checkpoint_every=0", "evaluation.every=400", "evaluation.samples=200"])
    last = Trainer(build_experiment(cfg)).fit()
    assert last["eval_recognisable"] > 0.2  # uniform noise scores 0.0
    assert last["eval_coverage"] > 0.7


def test_quality_suite_quick_form_writes_its_table(tmp_path, monkeypatch, capsys):
    from benchmarks.quality import QUICK, run_quality
    from benchmarks.suites import SuiteArgs, get_suite

    monkeypatch.setenv("EBMKIT_CLASSIFIER_CACHE", str(tmp_path / "classifiers"))
    from ebmkit.metrics import classifier as cm

    real_train = cm.train_classifier
    monkeypatch.setattr(cm, "train_classifier", lambda *a, **kw: real_train(*a, **{**kw, "epochs": 2}))
    assert get_suite("quality").name == "quality"
    out = tmp_path / "quality"
    assert run_quality(QUICK, SuiteArgs(suite="quality-quick", out=out, progress=False)) == 0
    table = json.loads((out / "tables" / "quality.json").read_text())
    assert [r["variant"] for r in table["rows"]] == ["preset", "ema-0.99", "held-out real images", "uniform noise"]
    for r in table["rows"][:2]:
        assert 0 <= r["recognisable"] <= 1 and r["train s"] > 0 and r["seeds"] == 1
    assert table["rows"][3]["recognisable"] < 0.05
    assert "| variant |" in capsys.readouterr().out
