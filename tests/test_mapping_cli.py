"""`ebmkit map` on a tiny trained digits run: files, clustering scores, resuming, bad input."""

import csv
import json

import pytest

from ebmkit.cli import main
from ebmkit.mapping import DisconnectivityGraph

FAST = ["--descent-steps", "20", "--max-steps", "40", "--patience", "10", "--check-every", "5", "--wave", "4",
        "--barrier-ladder", "2", "4", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import tiny_config

    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.trainer import Trainer

    root = tmp_path_factory.mktemp("mapping")
    cfg = tiny_config(root, training={"iterations": 3})
    Trainer(build_experiment(parse_config(cfg))).fit()
    return cfg["output"]["dir"]


def call(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_map_writes_every_file_and_scores_the_clustering(run_dir, tmp_path, capsys):
    out = tmp_path / "m"
    code, stdout, err = call(capsys, "map", run_dir, "--starts", "data:16,noise:4", "--starts", "samples:3", "--calibration-pairs", "4",
                             "--calibration-alphas", "0.01", "0.1", "1", "10", "--out", str(out), *FAST)
    assert code == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["starts"] == 23 and res["basins"] >= 1 and res["minima"] >= res["basins"]
    for name in ("minima.csv", "minima.json", "basins.csv", "barriers.csv", "assignments.csv", "graph.json",
                 "disconnectivity.png", "basins.png", "calibration.png", "clustering.json", "summary.json",
                 "progress.json", "state.safetensors"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["alphas"] == [0.01, 0.1, 1.0, 10.0]
    assert summary["alpha"] == pytest.approx(summary["calibration"]["alpha"])
    assert summary["settings"]["box"] == [-1.0, 1.0]  # images: the wall is on by default
    rows = list(csv.DictReader(open(out / "assignments.csv")))
    assert len(rows) == 23 and [r["kind"] for r in rows] == ["data"] * 16 + ["noise"] * 4 + ["samples"] * 3
    assert all(r["label"] != "" for r in rows if r["kind"] == "data") and all(r["label"] == "" for r in rows if r["kind"] != "data")
    clustering = json.loads((out / "clustering.json").read_text())
    assert clustering["starts_scored"] == 16
    for method in ("attraction_diffusion", "kmeans"):
        assert 0 < clustering[method]["purity"] <= 1 and -1 <= clustering[method]["ari"] <= 1
    assert clustering["kmeans"]["clusters"] == clustering["attraction_diffusion"]["clusters"]
    graph = DisconnectivityGraph.load(out / "graph.json")
    assert len(graph.leaves) == res["basins"]
    assert sorted(graph.leaf_order()) == list(range(res["basins"]))
    assert len(list((out / "basins").glob("basin-*.png"))) == len({r["basin"] for r in rows})


def test_interrupted_map_resumes_to_the_uninterrupted_result(run_dir, tmp_path, capsys, monkeypatch):
    args = ["map", run_dir, "--starts", "data:14", "--alpha", "0.3", *FAST]
    code, _, err = call(capsys, *args, "--out", str(tmp_path / "whole"))
    assert code == 0, err

    from ebmkit.mapping.basins import Grouping

    real, calls = Grouping.process_wave, []

    def interrupted(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Grouping, "process_wave", interrupted)
    code, _, _ = call(capsys, *args, "--out", str(tmp_path / "cut"))
    assert code == 130
    progress = json.loads((tmp_path / "cut" / "progress.json").read_text())
    assert progress["stage"] == "grouping" and progress["grouping"]["minima_done"] == 4
    monkeypatch.setattr(Grouping, "process_wave", real)
    code, stdout, err = call(capsys, *args, "--out", str(tmp_path / "cut"))
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["resumed"] is True
    for name in ("minima.json", "basins.csv", "barriers.csv", "graph.json"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    # a finished map is not recomputed; other settings are refused, --restart starts afresh
    before = json.loads((tmp_path / "cut" / "summary.json").read_text())["seconds"]
    code, stdout, _ = call(capsys, *args, "--out", str(tmp_path / "cut"))
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["seconds"] == before
    code, _, err = call(capsys, *args[:-len(FAST)], *FAST, "--delta", "0.5", "--out", str(tmp_path / "cut"))
    assert code == 2 and "different settings delta" in err and "--restart" in err
    code, _, err = call(capsys, *args, "--delta", "0.5", "--restart", "--out", str(tmp_path / "cut"))
    assert code == 0, err


@pytest.mark.parametrize("argv, message", [
    (["--starts", "pixels:10"], "unknown kind 'pixels'"),
    (["--starts", "data:0"], "positive count"),
    (["--starts", "data"], "positive count"),
    (["--alpha", "-1"], "map.alpha"),
    (["--temperature", "0"], "map.temperature"),
])
def test_bad_settings_are_one_line_errors(run_dir, capsys, argv, message):
    code, _, err = call(capsys, "map", run_dir, *argv, "--no-progress")
    assert code == 2 and message in err and "Traceback" not in err


def test_folder_without_a_checkpoint_is_an_error(tmp_path, capsys):
    code, _, err = call(capsys, "map", str(tmp_path), "--no-progress")
    assert code == 2 and "no checkpoint found" in err


def test_conditional_model_is_refused(tmp_path, tiny, capsys):
    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.trainer import Trainer

    cfg = tiny(energy={"name": "conditional-convnet", "nf": 8}, initializer={"name": "masked", "mask": "half"},
               training={"iterations": 1})
    cfg["sampler"] = {"name": "clamped", "inner": {"name": "langevin", "steps": 2}}
    trainer = Trainer(build_experiment(parse_config(cfg)))
    trainer.fit()
    code, _, err = call(capsys, "map", str(trainer.run_dir), "--starts", "data:4", "--no-progress")
    assert code == 2 and "conditional" in err and "Traceback" not in err
