"""Divergence: detected at the iteration it appears, explained, never
checkpointed, and optionally rolled back with a lower learning rate."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from ebmkit.checkpoint import list_checkpoints
from ebmkit.cli import main
from ebmkit.config import DivergenceConfig, ScheduleConfig, parse_config
from ebmkit.errors import DivergenceError
from ebmkit.experiment import build_experiment
from ebmkit.interfaces import ObjectiveOutput
from ebmkit.training.divergence import DivergenceGuard
from ebmkit.training.loop import Callback, Trainer
from ebmkit.training.schedule import LearningRate


def _faulty(tiny, *, at, fault="nan", times=1, divergence=None, **training):
    return tiny(
        objective={"name": "test-faulty", "at": at, "fault": fault, "times": times},
        training={"iterations": 10, "checkpoint_every": 2, "keep_checkpoints": 5,
                  "divergence": divergence or {}, **training},
    )


def _rows(run: Path):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _names(run: Path):
    return [p.name for p in list_checkpoints(run / "checkpoints")]


# -- the criterion ------------------------------------------------------------------


def _guard(**cfg):
    return DivergenceGuard(DivergenceConfig(**cfg))


def _Out(gap, loss=None):
    return ObjectiveOutput(loss=torch.tensor(gap if loss is None else loss),
                           logs={"energy_data": gap, "energy_samples": 0.0, "gap": gap}, gap=gap)


class _Chain:
    def __init__(self, x=0.0, g=1.0):
        self.x = torch.full((2, 3), x)
        self.grad_norm = torch.full((4,), g)


def test_exploding_gap_rule_relative_to_the_recent_median_with_a_floor():
    g = _guard(max_gap=1e4, gap_factor=100.0, gap_window=5, gap_floor=10.0)
    for t, gap in enumerate([0.1, -0.2, 0.1, 0.3, -0.1], 1):  # the window fills; median |gap| = 0.1
        g.check_forward(t, _Out(gap), _Chain())
    g.check_forward(6, _Out(9.0), _Chain())  # 90x the median, but under the floor of 10: fine
    g.check_forward(7, _Out(-9.5), _Chain())
    # window now 0.1 0.3 0.1 9 9.5: median 0.3 -> limit max(10, 30) = 30
    g.check_forward(8, _Out(29.0), _Chain())  # under the limit, but above the floor: kept out of the median
    assert list(g.gaps) == [0.1, 0.3, 0.1, 9.0, 9.5]
    with pytest.raises(DivergenceError, match=r"iteration 9: the energy gap exploded: .* = 31 > 30 = max\(gap_floor 10, "
                       r"gap_factor 100 x the median \|gap\| 0.3 of the last 5 iterations with \|gap\| <= 10\)") as e:
        g.check_forward(9, _Out(31.0), _Chain())
    assert e.value.iteration == 9 and e.value.reason == "exploding energy gap"
    assert "step size or noise is too large" in str(e.value) and "learning rate is too high" in str(e.value)


def test_absolute_gap_limit_and_switching_the_gap_rules_off():
    with pytest.raises(DivergenceError, match=r"iteration 1: the energy gap exploded: .* = 2e\+05 > max_gap = 10000"):
        _guard().check_forward(1, _Out(-2e5), _Chain())
    g = _guard(max_gap=None, gap_factor=None)
    for t in range(1, 60):
        g.check_forward(t, _Out(1e3 * t), _Chain())  # growing without bound, but only finiteness is checked


def test_non_finite_checks_name_what_went_wrong():
    with pytest.raises(DivergenceError, match=r"iteration 3: non-finite samples .*chain gradients \(first at Langevin step 1\)") as e:
        _guard().check_forward(3, _Out(0.1), _Chain(x=math.nan, g=math.inf))
    assert e.value.reason == "non-finite samples"
    with pytest.raises(DivergenceError, match=r"iteration 4: non-finite loss, energy_data, gap"):
        _guard().check_forward(4, _Out(math.nan), _Chain())
    with pytest.raises(DivergenceError, match=r"iteration 5: the gradient .* parameters is non-finite \(norm nan\)"):
        _guard().check_gradients(5, torch.tensor(math.nan))
    scaled = DivergenceGuard(DivergenceConfig(), scaled_gradients=True)
    scaled.check_gradients(5, torch.tensor(math.inf))  # fp16 loss scaling: an overflow is routine
    scaled.check_logs(5, {"grad_norm": math.inf, "loss": 0.1})


def test_the_gap_window_travels_with_the_checkpoint():
    a = _guard(gap_window=3)
    for t, gap in enumerate([0.5, 0.25, 1.0], 1):
        a.check_forward(t, _Out(gap), _Chain())
    a.lr_scale, a.rollbacks = 0.25, 2
    state = json.loads(json.dumps(a.state_dict()))  # as stored in state.json

    b = _guard(gap_window=3)
    b.load_state_dict(state)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    lr = LearningRate(optimizer, ScheduleConfig(), total=10)  # the one writer of the rate reads the guard's factor
    assert list(b.gaps) == [0.5, 0.25, 1.0] and b.rollbacks == 2 and lr.bases(b.lr_scale) == [0.25e-3]
    assert lr.apply(0, b.lr_scale) == 0.25e-3 and optimizer.param_groups[0]["lr"] == 0.25e-3


# -- in the trainer -------------------------------------------------------------------


def test_nan_energy_stops_at_that_iteration_and_keeps_only_good_checkpoints(tiny, stateful_plugin, capsys):
    cfg = _faulty(tiny, at=7)
    assert main(["train", json_file(cfg)]) == 2
    err = capsys.readouterr().err
    run = Path(cfg["output"]["dir"])
    assert "ebmkit train: error: training diverged at iteration 7: non-finite loss, energy_data, energy_samples, gap." in err
    assert "Likely causes: the Langevin step size or noise is too large" in err and "optimizer.lr" in err
    # iteration 7 ran on the weights saved as iter-6: that checkpoint is moved aside, iter-4 is the last good one
    assert f"The last good checkpoint is {run / 'checkpoints' / 'iter-00000004'} (iteration 4)" in err
    assert "moved to" in err and 'set training.divergence.action = "rollback"' in err
    assert _names(run) == ["iter-00000002", "iter-00000004"]
    assert [p.name for p in (run / "checkpoints" / "diverged").iterdir()] == ["iter-00000006"]
    assert [int(r["iteration"]) for r in _rows(run)] == [1, 2, 3, 4, 5, 6]  # no row of NaNs
    event = json.loads((run / "events.jsonl").read_text().splitlines()[-1])
    assert event["iteration"] == 7 and event["action"] == "stop" and event["moved_aside"] == ["iter-00000006"]
    # --resume continues from the last good checkpoint
    assert main(["train", json_file(_faulty(tiny, at=99)), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().err and _names(run)[-1] == "iter-00000010"


def test_exploding_gap_stops_the_run(tiny, stateful_plugin):
    cfg = parse_config(_faulty(tiny, at=5, fault="explode"))
    with pytest.raises(DivergenceError, match=r"diverged at iteration 5: the energy gap exploded: .* > max_gap = 10000") as e:
        Trainer(build_experiment(cfg)).fit()
    assert e.value.reason == "exploding energy gap"
    assert "The last good checkpoint is" in str(e.value) and "iter-00000002 (iteration 2)" in str(e.value)


def test_nan_samples_are_caught_before_they_reach_the_weights(tiny):
    cfg = parse_config(tiny(training={"iterations": 6}))
    trainer = Trainer(build_experiment(cfg))
    run = trainer.sampler.run

    def poisoned(energy, z, **kw):
        out = run(energy, z, **kw)
        if trainer.iteration + 1 == 4:
            out.x = out.x * math.nan
        return out

    trainer.sampler.run = poisoned
    with pytest.raises(DivergenceError, match=r"iteration 4: non-finite samples \(the chain ran off to NaN or infinity\)"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.energy.parameters())


def test_nan_gradients_are_caught_before_the_optimiser_step(tiny):
    cfg = parse_config(tiny(training={"iterations": 6}))
    trainer = Trainer(build_experiment(cfg))
    first = next(trainer.energy.parameters())
    first.register_hook(lambda g: g * math.nan if trainer.iteration + 1 == 3 else g)
    seen = {}

    class Snapshot(Callback):
        def on_step_end(self, t, logs):
            seen[t.iteration] = [p.detach().clone() for p in t.energy.parameters()]

    trainer.callbacks.append(Snapshot())
    with pytest.raises(DivergenceError, match=r"iteration 3: the gradient of the loss .* non-finite \(norm nan\)"):
        trainer.fit()
    # the optimiser never moved: the weights are those after iteration 2, untouched by the NaN gradient
    assert all(torch.equal(p, q) for p, q in zip(trainer.energy.parameters(), seen[2]))


def test_rollback_reloads_the_last_good_checkpoint_with_a_lower_lr(tiny, stateful_plugin):
    cfg = parse_config(_faulty(tiny, at=7, divergence={"action": "rollback"}))
    trainer = Trainer(build_experiment(cfg))
    with pytest.warns(RuntimeWarning, match=r"diverged at iteration 7 \(non-finite energies\); rollback 1 of at most 3: "
                      r"continuing from .*iter-00000004 \(iteration 4\) with the learning rate x0.5 = 0.0005"):
        last = trainer.fit()
    assert last["iteration"] == 10
    run = trainer.run_dir
    rows = _rows(run)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 11))  # one run, no gap, no duplicate
    assert [float(r["lr"]) for r in rows] == [1e-3] * 4 + [5e-4] * 6
    (event,) = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert event["action"] == "rollback" and event["iteration"] == 7 and event["resume_iteration"] == 4
    assert event["lr_scale"] == 0.5 and event["moved_aside"] == ["iter-00000006"]
    # the lower rate is part of the run's state: checkpoints carry it, --resume keeps it
    from ebmkit.checkpoint import find_checkpoint

    assert find_checkpoint(run).state["divergence"]["lr_scale"] == 0.5


def test_rollback_gives_up_after_max_rollbacks(tiny, stateful_plugin):
    cfg = parse_config(_faulty(tiny, at=3, times=100, divergence={"action": "rollback", "max_rollbacks": 2}))
    trainer = Trainer(build_experiment(cfg))
    with pytest.warns(RuntimeWarning, match="rollback"), pytest.raises(DivergenceError) as e:
        trainer.fit()
    msg = str(e.value)
    assert "iteration 3" in msg and "Rollback: gave up after 2 rollback(s) (learning rate x0.25)" in msg
    # with rollbacks on, an iteration-0 checkpoint was written to have somewhere to go back to
    assert "iter-00000000 (iteration 0)" in msg
    events = [json.loads(line) for line in (trainer.run_dir / "events.jsonl").read_text().splitlines()]
    assert [ev["action"] for ev in events] == ["rollback", "rollback", "stop"]


def json_file(cfg) -> str:
    path = Path(cfg["output"]["dir"]).parent / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_diverging_again_from_the_same_checkpoint_steps_one_further_back(tiny, stateful_plugin):
    cfg = parse_config(_faulty(tiny, at=7, times=2, divergence={"action": "rollback"}))
    trainer = Trainer(build_experiment(cfg))
    with pytest.warns(RuntimeWarning, match="rollback"):
        trainer.fit()
    events = [json.loads(line) for line in (trainer.run_dir / "events.jsonl").read_text().splitlines()]
    # 1st: back to iter-4 (iter-6 held the failed weights); 7 fails again, iter-4 was already
    # on the way up: 2nd goes back to iter-2, with the rate quartered
    assert [(ev["iteration"], ev["resume_iteration"], ev["lr_scale"]) for ev in events] == [(7, 4, 0.5), (7, 2, 0.25)]
    rows = _rows(trainer.run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 11))
    assert [float(r["lr"]) for r in rows] == [1e-3] * 2 + [2.5e-4] * 8


def test_resume_after_the_only_checkpoint_was_set_aside_says_so_and_how_to_continue(tiny, stateful_plugin, capsys):
    """Iteration 3 diverges on the weights saved as iter-2, the only checkpoint: it is set aside, and the
    next --resume is an error naming it -- not a silent restart from iteration 0."""
    cfg = _faulty(tiny, at=3)
    assert main(["train", json_file(cfg)]) == 2
    run = Path(cfg["output"]["dir"])
    assert _names(run) == [] and (run / "checkpoints" / "diverged" / "iter-00000002").is_dir()
    capsys.readouterr()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", json_file(_faulty(tiny, at=99)), "--resume"]) == 2
    err = capsys.readouterr().err
    aside = run / "checkpoints" / "diverged" / "iter-00000002"
    assert f"--resume: no checkpoint to resume in {run / 'checkpoints'}" in err
    assert (f"{run / 'checkpoints' / 'diverged'} holds iter-00000002, set aside when training diverged at iteration 3 "
            "(non-finite energies): its weights led to the blow-up. To continue from it anyway, move it back "
            f"(mv {aside} {run / 'checkpoints'}/)") in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written
    # moved back as the message says, it resumes
    aside.rename(run / "checkpoints" / "iter-00000002")
    assert main(["train", json_file(_faulty(tiny, at=99)), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().err


def test_resuming_an_older_checkpoint_names_the_newer_ones_set_aside(tiny, stateful_plugin, capsys):
    cfg = _faulty(tiny, at=7)
    assert main(["train", json_file(cfg)]) == 2
    capsys.readouterr()
    assert main(["train", json_file(_faulty(tiny, at=99)), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming from" in err and "iter-00000004 (iteration 4)" in err
    assert "ebmkit: warning: " in err and "diverged holds iter-00000006, set aside when training diverged at iteration 7" in err
