"""`ebmkit generate | interpolate | reconstruct | super-resolve` from a tiny trained checkpoint."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ebmkit.cli import main


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny 8x8 digits models: uniform starts, and low-resolution (4x4) starts."""
    from conftest import tiny_config

    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    root = tmp_path_factory.mktemp("generator")
    runs = {}
    for name, init in (("uniform", {"name": "uniform"}), ("lowres", {"name": "lowres", "size": 4, "noise": 0.1})):
        cfg = tiny_config(root / name, initializer=init, training={"iterations": 3})
        Trainer(build_experiment(parse_config(cfg))).fit()
        runs[name] = cfg["output"]["dir"]
    return runs


def run(capsys, *argv):
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def png(path, rows, cols, side=8, pad=2):
    """The PNG exists and is a rows x cols grid of side-pixel images, enlarged to a readable size
    (8 px -> 32 px, nearest), with torchvision's padding."""
    from ebmkit.images import grid_scale

    side *= grid_scale(side)
    w, h = Image.open(path).size
    assert (w, h) == (cols * (side + pad) + pad, rows * (side + pad) + pad)


def test_generate_writes_samples_transition_and_json(checkpoints, tmp_path, capsys):
    out = tmp_path / "gen"
    res = run(capsys, "generate", checkpoints["uniform"], "--n", "9", "--chains", "2", "--transition-steps", "0", "2", "5",
              "--out", str(out))
    assert res["n"] == 9 and res["K"] == 5 and res["transition_steps"] == [0, 2, 5]
    assert len(res["transition_mean_energy"]) == 3
    png(out / "samples.png", 3, 3)
    png(out / "transition.png", 2, 3)
    assert json.loads((out / "generate.json").read_text()) == res


def test_interpolate_writes_both_grids_and_exact_endpoints(checkpoints, tmp_path, capsys):
    out = tmp_path / "interp"
    res = run(capsys, "interpolate", checkpoints["uniform"], "--pairs", "2", "--points", "5", "--fixed-noise", "--out", str(out))
    assert res["rhos"] == [1.0, 0.75, 0.5, 0.25, 0.0]
    for label in ("noise_free", "fixed_noise"):
        assert res[label]["endpoint_max_abs_diff"] == {"rho=1": 0.0, "rho=0": 0.0}
    png(out / "interpolation.png", 2, 5)
    png(out / "interpolation-fixed-noise.png", 2, 5)
    assert (out / "interpolate.json").exists()


def test_reconstruct_writes_path_and_beats_nothing_worse_than_its_start(checkpoints, tmp_path, capsys):
    out = tmp_path / "rec"
    res = run(capsys, "reconstruct", checkpoints["uniform"], "--n", "4", "--iterations", "6", "--lr", "0.1",
              "--checkpoint-every", "2", "--show", "3", "--out", str(out))
    assert res["n"] == 4 and res["params"]["checkpoint_every"] == 2
    curve = res["loss_curve"]
    assert res["path_iterations"] == [0, 1, 2, 3, 6]
    assert curve["6"] == pytest.approx(res["mse_per_pixel"], rel=1e-5)
    assert curve["6"] < curve["0"]
    assert res["mse_per_pixel_01_scale"] == pytest.approx(res["mse_per_pixel"] / 4)
    assert res["mean_image_baseline"]["mse_per_pixel"] > 0
    png(out / "reconstruction.png", 3, 1 + 5)
    assert json.loads((out / "reconstruct.json").read_text()) == res


def test_reconstruct_reads_an_image_file_and_rejects_bad_ones(checkpoints, tmp_path, capsys):
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    np.save(tmp_path / "x.npy", x.numpy())
    res = run(capsys, "reconstruct", checkpoints["uniform"], "--images", str(tmp_path / "x.npy"), "--iterations", "2",
              "--out", str(tmp_path / "r"))
    assert res["n"] == 3 and res["images"].endswith("x.npy")
    np.save(tmp_path / "bad.npy", (x.numpy() + 1) * 127)
    assert main(["reconstruct", checkpoints["uniform"], "--images", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "b")]) == 2
    assert "scaled to [-1, 1]" in capsys.readouterr().err
    assert main(["reconstruct", checkpoints["uniform"], "--iterations", "0", "--out", str(tmp_path / "b")]) == 2
    assert "argument --iterations: must be positive, got 0" in capsys.readouterr().err  # refused as it is parsed


def test_super_resolve_writes_grid_with_one_column_per_seed(checkpoints, tmp_path, capsys):
    out = tmp_path / "sr"
    res = run(capsys, "super-resolve", checkpoints["lowres"], "--n", "3", "--seeds", "0", "1", "--out", str(out))
    assert res["seeds"] == [0, 1] and res["low_resolution_size"] == 4
    assert len(res["mse_per_pixel_per_seed"]) == 2 and res["mse_per_pixel_start"] > 0 and res["mse_per_pixel_bicubic"] > 0
    assert res["columns"] == ["start (low resolution, full size)", "seed 0", "seed 1", "original"]
    png(out / "super-resolution.png", 3, 4)
    assert json.loads((out / "super-resolve.json").read_text()) == res
    # Low-resolution inputs (4x4) are brought to full size first.
    low = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 8, 8) * 2 - 1, 2)
    torch.save(low, tmp_path / "low.pt")
    res = run(capsys, "super-resolve", checkpoints["lowres"], "--images", str(tmp_path / "low.pt"), "--seeds", "3",
              "--out", str(tmp_path / "sr2"))
    assert res["input_size"] == [4, 4] and "mse_per_pixel_per_seed" not in res
    png(tmp_path / "sr2" / "super-resolution.png", 2, 2)


def test_super_resolve_needs_a_lowres_model(checkpoints, tmp_path, capsys):
    assert main(["super-resolve", checkpoints["uniform"], "--out", str(tmp_path / "x")]) == 2
    assert "lowres" in capsys.readouterr().err
