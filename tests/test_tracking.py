"""[logging] trackers through accelerate: the TensorBoard event file read back."""

import csv

import pytest

from ebmkit.config import parse_config
from ebmkit.errors import ConfigError

pytest.importorskip("tensorboard")


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_every_logged_number_and_the_sample_grids(tiny, tmp_path):
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    cfg = parse_config(tiny(training={"iterations": 4, "log_every": 2, "sample_every": 2},
                            logging={"trackers": ["tensorboard"]}))
    trainer = Trainer(build_experiment(cfg))
    trainer.fit()
    run = trainer.run_dir
    ev = _events(run)
    tags = set(ev.Tags()["scalars"])
    assert {"energy_data", "energy_samples", "gap", "grad_norm", "chain_grad_norm", "lr", "loss"} <= tags
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for tag in ("gap", "grad_norm", "lr"):
        got = {e.step: e.value for e in ev.Scalars(tag)}
        assert sorted(got) == [2, 4]  # every log_every iterations
        for step, value in got.items():
            assert value == pytest.approx(float(rows[step - 1][tag]), rel=1e-6, abs=1e-7)
    images = ev.Images("samples")
    assert [i.step for i in images] == [2, 4, 4]  # iter-2, iter-4, final
    # 4 digits of 8x8 in a 2x2 grid, each enlarged 4x to 32 px: 2 * (32 + 2) + 2 = 70
    assert (images[0].width, images[0].height) == (70, 70)


def test_a_missing_tracker_package_names_its_install_line(tiny, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    from ebmkit.tracking import check_trackers

    with pytest.raises(ConfigError, match=r"'tensorboard' needs its package.*shortrun-ebm\[tensorboard\]"):
        check_trackers(["tensorboard"])
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'"):
        check_trackers(["tensorbord"])


def test_no_trackers_no_tracking_folder(tiny):
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    trainer = Trainer(build_experiment(parse_config(tiny(training={"iterations": 2}))))
    trainer.fit()
    assert not (trainer.run_dir / "tensorboard").exists()
    assert (trainer.run_dir / "metrics.csv").exists()


def test_evaluation_scores_reach_the_tracker(tiny, tmp_path, monkeypatch):
    """[evaluation] numbers (eval_*) go to TensorBoard at the iterations they were measured."""
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    monkeypatch.setenv("EBMKIT_CLASSIFIER_CACHE", str(tmp_path / "classifiers"))
    cfg = parse_config(tiny(training={"iterations": 3, "log_every": 2}, evaluation={"every": 3, "samples": 16},
                            logging={"trackers": ["tensorboard"], "images": False}))
    trainer = Trainer(build_experiment(cfg))
    trainer.fit()
    ev = _events(trainer.run_dir)
    evals = [t for t in ev.Tags()["scalars"] if t.startswith("eval_")]
    assert "eval_recognisable" in evals
    assert [e.step for e in ev.Scalars("eval_recognisable")] == [3]
    assert not ev.Tags()["images"]
