"""End to end: Algorithm 1 trains, checkpoints, resumes and samples."""

import json

import torch

import ebmkit
from ebmkit.checkpoint import find_checkpoint, list_checkpoints
from ebmkit.cli import main
from ebmkit.config import parse_config
from ebmkit.experiment import build_experiment, load_trained
from ebmkit.training.loop import Trainer


def test_short_run_on_shipped_data_lowers_the_gap_and_checkpoints(tiny, tmp_path, capsys):
    cfg = parse_config(tiny(training={"iterations": 20, "checkpoint_every": 5, "keep_checkpoints": 2},
                            optimizer={"lr": 1e-3}))
    trainer = Trainer(build_experiment(cfg))
    trainer.fit()
    import csv

    rows = list(csv.DictReader(open(cfg.output.dir / "metrics.csv")))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 21))
    gaps = [float(r["gap"]) for r in rows]
    # the loss (the gap) falls, and data ends up below noise in energy
    assert sum(gaps[-5:]) / 5 < gaps[0] - 0.2
    x = trainer.experiment.dataset.data[:64]
    assert trainer.energy(x).mean() < trainer.energy(torch.rand_like(x) * 2 - 1).mean() - 0.2
    assert [p.name for p in list_checkpoints(cfg.output.dir / "checkpoints")] == ["iter-00000015", "iter-00000020"]
    assert (cfg.output.dir / "samples" / "final.png").exists()

    out = tmp_path / "grid.png"
    assert main(["sample", str(cfg.output.dir), "--n", "9", "--out", str(out)]) == 0
    assert out.exists() and json.loads(capsys.readouterr().out)["iteration"] == 20


def test_resume_reproduces_an_uninterrupted_run_exactly(tiny, tmp_path):
    def run(out, iterations, resume=False):
        cfg = parse_config(tiny(training={"iterations": iterations, "checkpoint_every": 3}, output={"dir": str(out)}))
        t = Trainer(build_experiment(cfg))
        t.fit(resume=resume)
        return t

    full = run(tmp_path / "a", 8)
    run(tmp_path / "b", 5)  # "killed" after iteration 5; newest checkpoint is 3
    ckpts = list_checkpoints(tmp_path / "b" / "checkpoints")
    assert ckpts[-1].name == "iter-00000005"
    import shutil

    shutil.rmtree(ckpts[-1])  # pretend the kill came before the final save
    resumed = run(tmp_path / "b", 8, resume=True)
    for p, q in zip(full.energy.parameters(), resumed.energy.parameters()):
        assert torch.equal(p, q)
    import csv

    a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [r["gap"] for r in a] == [r["gap"] for r in b]


def test_load_trained_restores_weights(tiny):
    cfg = parse_config(tiny(training={"iterations": 2}))
    t = Trainer(build_experiment(cfg))
    t.fit()
    exp = load_trained(cfg.output.dir)
    for p, q in zip(t.energy.parameters(), exp.energy.parameters()):
        assert torch.equal(p, q)
    assert exp.checkpoint.iteration == 2


def test_mlp_on_a_toy_trains_from_python(tmp_path):
    cfg = ebmkit.ExperimentConfig.model_validate({
        "data": {"name": "rings", "count": 512},
        "energy": {"name": "mlp", "hidden": 16, "depth": 2},
        "initializer": {"name": "uniform"},
        "sampler": {"name": "langevin", "steps": 5, "epsilon": 0.05},
        "objective": {"name": "maximum-likelihood", "data_noise": 0.0},
        "training": {"iterations": 3, "batch_size": 32, "progress": False, "checkpoint_every": 0, "sample_every": 0},
        "output": {"dir": str(tmp_path / "toy")},
    })
    last = Trainer(build_experiment(cfg)).fit()
    assert last["iteration"] == 3 and find_checkpoint(tmp_path / "toy").iteration == 3
