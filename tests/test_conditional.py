"""Conditional energies, clamped sampling, inpainting scores and a short training run."""

import json
import math

import numpy as np
import pytest
import torch

from ebmkit import create, create_energy, create_initializer, create_sampler
from ebmkit.conditional import bound, masked_condition
from ebmkit.config import parse_config
from ebmkit.errors import ConfigError
from ebmkit.experiment import build_experiment, load_dataset, load_trained
from ebmkit.generation.inpainting import ebm_fill, inpainting_scores, mean_fill, missing_psnr, nearest_fill
from ebmkit.training.loop import Trainer


def _model(nf=8, size=8):
    energy = create_energy("conditional-convnet", (1, size, size), nf=nf)
    init = create_initializer("masked", (1, size, size), mask={"name": "centre", "fraction": 0.5})
    return energy, init


def test_observed_pixels_unchanged_after_clamped_sampling():
    energy, init = _model()
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    z = init.sample(6, data=x)
    observed = init.condition.observed
    assert torch.equal(z[observed], x[observed]) and not torch.equal(z[~observed], x[~observed])
    clamped = create_sampler("clamped", inner={"name": "langevin", "steps": 5, "step_size": 1.0, "noise": 0.1})
    plain = create_sampler("langevin", steps=5, step_size=1.0, noise=0.1)
    with bound(energy, init.condition):
        out = clamped.run(energy, z, record=(0, 5))
        loose = plain.run(energy, z)
    assert torch.equal(out.x[observed], x[observed])  # exactly, not approximately
    assert torch.equal(out.trajectory[5][observed], x[observed])
    assert not torch.equal(out.x[~observed], z[~observed])  # the missing pixels did move
    assert not torch.allclose(loose.x[observed], x[observed])  # without clamping the noise moves them


def test_conditional_energy_reads_x_only_where_missing():
    energy, init = _model()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    cond = masked_condition(x, init.masks.sample(4, 8, 8))
    other = x.clone()
    other[cond.observed] = 0.7  # change only observed pixels
    probe = other.clone().requires_grad_(True)
    with bound(energy, cond):
        assert torch.allclose(energy(x), energy(other))
        (g,) = torch.autograd.grad(energy(probe).sum(), probe)
        # [data; samples] in one pass: a condition of 4 rows serves 8
        assert energy(torch.cat([x, x])).shape == (8,)
    assert (g[cond.observed] == 0).all() and g[~cond.observed].abs().sum() > 0
    assert cond.tensor.shape == (4, 2, 8, 8)  # masked image + observed mask


def test_conditional_parts_refuse_to_run_without_a_condition():
    energy, init = _model()
    with pytest.raises(ConfigError, match="without a condition"):
        energy(torch.zeros(2, 1, 8, 8))
    uncond = create_energy("convnet", (1, 8, 8), nf=8)
    with pytest.raises(ConfigError, match="unconditional"):
        with bound(uncond, masked_condition(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8, dtype=torch.bool))):
            pass
    with pytest.raises(ConfigError, match="initializer.mask"):
        create_initializer("masked", (1, 8, 8), mask={"name": "centre", "fraction": 2})


def test_psnr_and_ssim_agree_with_hand_values():
    truth = torch.zeros(1, 1, 4, 4)
    missing = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    missing[..., :2, :2] = True
    filled = truth.clone()
    filled[missing] = 0.5  # error 0.25 on the 4 missing pixels
    assert missing_psnr(truth, filled, missing) == pytest.approx(10 * math.log10(4 / 0.25))  # data range 2
    whole = inpainting_scores(truth, filled, missing)
    assert whole["psnr"] == pytest.approx(10 * math.log10(4 / (0.25 * 4 / 16)))
    assert whole["mse_missing"] == pytest.approx(0.25)
    # SSIM of a 7x7 pair: one 7x7 window covers the image, so it is the global formula (sample covariance),
    # on the [0, 1] scale with data range 1 (standard SSIM)
    rng = np.random.default_rng(0)
    a_signed = rng.uniform(-1, 1, (7, 7))
    b_signed = 0.5 * a_signed + 0.1 + 0.05 * rng.standard_normal((7, 7))
    a, b = (a_signed + 1) / 2, (b_signed + 1) / 2
    n = a.size
    ua, ub = a.mean(), b.mean()
    va, vb = a.var(ddof=1), b.var(ddof=1)
    cov = ((a - ua) * (b - ub)).sum() / (n - 1)
    c1, c2 = 0.01**2, 0.03**2
    by_hand = (2 * ua * ub + c1) * (2 * cov + c2) / ((ua**2 + ub**2 + c1) * (va + vb + c2))
    t = lambda v: torch.from_numpy(v).view(1, 1, 7, 7)  # noqa: E731
    m7 = torch.ones(1, 1, 7, 7, dtype=torch.bool)
    assert inpainting_scores(t(a_signed), t(b_signed), m7)["ssim"] == pytest.approx(by_hand, rel=1e-6)


def test_baselines_by_hand():
    train = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0)])  # a black and a white image
    x = torch.tensor([[[[0.9, 0.8], [0.0, 0.0]]]])
    missing = torch.tensor([[[[False, False], [True, True]]]])
    assert torch.equal(mean_fill(train, x, missing), torch.tensor([[[[0.9, 0.8], [0.0, 0.0]]]]))
    assert torch.equal(nearest_fill(train, x, missing), torch.tensor([[[[0.9, 0.8], [1.0, 1.0]]]]))  # white is nearer


def _paired_folders(root, n_train=20, n_test=4, side_by_side=False):
    """Pairs where A is a colour image and B its negative: B = 255 - A."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            if side_by_side:
                (root / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.concatenate([a, 255 - a], 1)).save(root / split / f"{i}.png")
            else:
                for side, img in (("A", a), ("B", 255 - a)):
                    (root / side / split).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(root / side / split / f"{i}.png")


@pytest.mark.parametrize("side_by_side", [False, True])
def test_paired_folders_pack_target_then_condition(tmp_path, side_by_side):
    from ebmkit import create_dataset

    _paired_folders(tmp_path, n_train=3, n_test=2, side_by_side=side_by_side)
    ds = create_dataset("paired-folders", root=str(tmp_path), image_size=8).load("train")
    assert len(ds) == 3 and ds[0].shape == (6, 8, 8)
    assert torch.allclose(ds[0][:3], -ds[0][3:], atol=1e-5)  # target A, then condition B = its negative
    assert len(create_dataset("paired-folders", root=str(tmp_path), image_size=8).load("test")) == 2


def test_paired_training_runs_and_keeps_channels(tmp_path, tiny):
    _paired_folders(tmp_path / "pairs")
    cfg = parse_config(tiny(data={"name": "paired-folders", "root": str(tmp_path / "pairs"), "image_size": 8},
                            energy={"name": "conditional-convnet", "nf": 8, "target_channels": 3},
                            initializer={"name": "paired", "target_channels": 3},
                            training={"iterations": 2}))
    trainer = Trainer(build_experiment(cfg))
    last = trainer.fit()
    assert math.isfinite(last["gap"]) and trainer.sample(4).shape == (4, 3, 8, 8)


def _clamped(cfg: dict, **inner) -> dict:
    cfg["sampler"] = {"name": "clamped", "inner": {"name": "langevin", **inner}}  # replace, not merge
    return cfg


def test_inpainting_training_checkpoint_and_fill(tiny):
    cfg = parse_config(_clamped(tiny(energy={"name": "conditional-convnet", "nf": 8},
                                     initializer={"name": "masked", "mask": "random-pixels"},
                                     training={"iterations": 2}), steps=3))
    trainer = Trainer(build_experiment(cfg))
    trainer.fit()
    exp = load_trained(trainer.run_dir)
    x = trainer.experiment.dataset.data[:5]
    missing = create("mask", "half").sample(5, 8, 8)
    filled = ebm_fill(exp.energy, exp.sampler, exp.initializer, x, missing, samples=3)
    assert filled.shape == (3, 5, 1, 8, 8)
    assert torch.equal(filled[:, ~missing.expand_as(x)], x[~missing.expand_as(x)].expand(3, -1))


@pytest.mark.slow
def test_short_cpu_run_beats_mean_fill(tiny):
    """digits 8x8, centre holes; about 15 s on a 2-core CPU."""
    cfg = parse_config(_clamped(tiny(energy={"name": "conditional-convnet", "nf": 16},
                                     initializer={"name": "masked", "mask": {"name": "centre", "fraction": 0.5},
                                                  "fill": "zeros"},
                                     optimizer={"name": "adam", "lr": 3e-3, "betas": [0.5, 0.999]},
                                     training={"iterations": 200, "batch_size": 16}), steps=10, step_size=2.0, noise=0.01))
    exp = build_experiment(cfg)
    Trainer(exp).fit()
    test, _ = load_dataset(cfg, "test")
    x = test.data[:128]
    missing = exp.initializer.masks.sample(len(x), 8, 8)
    ebm = ebm_fill(exp.energy.eval(), exp.sampler, exp.initializer, x, missing, samples=1)
    ebm_psnr = missing_psnr(x, ebm[0], missing)
    mean_psnr = missing_psnr(x, mean_fill(exp.dataset.data, x, missing), missing)
    assert ebm_psnr > mean_psnr + 0.3, json.dumps({"ebm": ebm_psnr, "mean": mean_psnr})


def test_inpaint_command_writes_strip_and_scores(tiny, tmp_path, capsys):
    from PIL import Image

    from ebmkit.cli import main

    cfg = parse_config(_clamped(tiny(energy={"name": "conditional-convnet", "nf": 8},
                                     initializer={"name": "masked", "mask": "centre"}, training={"iterations": 2}), steps=3))
    trainer = Trainer(build_experiment(cfg))
    trainer.fit()
    out = tmp_path / "inp"
    assert main(["inpaint", str(trainer.run_dir), "--n", "6", "--samples", "2", "--show", "3",
                 "--mask", "half:side=left", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 6 and summary["missing_fraction"] == 0.5
    assert set(summary["scores"]) == {"ebm", "mean_fill", "nearest_fill"}
    assert set(summary["scores"]["ebm"]) == {"psnr", "psnr_missing", "ssim", "mse_missing"}
    with Image.open(out / "inpaint.png") as im:  # 3 rows of 1 + 2 + 1 images of 8 px shown at 32 px, 2 px padding
        assert im.size == (2 + 4 * 34, 2 + 3 * 34)
    assert main(["inpaint", str(trainer.run_dir), "--mask", "nope", "--out", str(out)]) == 2
    assert "unknown mask 'nope'" in capsys.readouterr().err
    # a folder of images and a PNG mask (white = missing): the left 2 columns of 8
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    hole = np.zeros((8, 8), dtype=np.uint8)
    hole[:, :2] = 255
    Image.fromarray(hole).save(tmp_path / "hole.png")
    assert main(["inpaint", str(trainer.run_dir), "--images", str(folder), "--mask", str(tmp_path / "hole.png"),
                 "--samples", "1", "--no-baselines", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 3 and summary["missing_fraction"] == 0.25 and set(summary["scores"]) == {"ebm"}


@pytest.mark.slow
def test_inpainting_suite_writes_its_table(tmp_path, capsys):
    from benchmarks.run import main

    out = tmp_path / "bench"
    assert main(["inpainting", "--only", "centre,centre+cvae", "--budget", "2", "--out", str(out), "--no-progress",
                 "--set", "data.image_size=8", "--set", "n_test=12", "--set", "samples=1", "--set", "nf=8",
                 "--set", "steps=3", "--set", "vae.nf=4"]) == 0
    table = json.loads((out / "tables" / "inpainting.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["ebm", "mean fill", "nearest-neighbour fill", "cooperative ebm",
                                                    "cvae proposal"]
    assert all(0 < r["PSNR"] < 100 and -1 <= r["SSIM"] <= 1 for r in table["rows"])
    assert (out / "tables" / "inpainting.csv").is_file() and (out / "samples" / "centre+cvae.png").is_file()
    md = (out / "tables.md").read_text()
    assert "| centre (25% missing) | ebm |" in md and "| centre (25% missing) | cooperative ebm |" in md
    assert main(["inpainting", "--only", "nope", "--out", str(out)]) == 2


def test_inpaint_preset_is_valid_and_conditional():
    from ebmkit.cli import preset_names, resolve_config_path
    from ebmkit.config import load_config

    assert "digits-inpaint-cpu" in preset_names()
    cfg = load_config(resolve_config_path("digits-inpaint-cpu"))
    assert (cfg.energy.name, cfg.initializer.name, cfg.sampler.name) == ("conditional-convnet", "masked", "clamped")


@pytest.mark.slow
def test_inpainting_suite_paired_cells(tmp_path, capsys):
    """The facades-style cells (plain and cooperative) on tiny generated pairs."""
    from benchmarks.run import main

    _paired_folders(tmp_path / "pairs", n_train=16, n_test=4)
    out = tmp_path / "bench"
    assert main(["inpainting", "--only", "paired,paired+cvae", "--budget", "2", "--out", str(out), "--no-progress",
                 "--set", f"paired_root={tmp_path / 'pairs'}", "--set", "paired.image_size=8", "--set", "samples=1",
                 "--set", "nf=8", "--set", "steps=3", "--set", "vae.nf=4", "--set", "batch_size=8"]) == 0
    rows = json.loads((out / "tables" / "inpainting.json").read_text())["rows"]
    assert [(r["task"], r["method"]) for r in rows] == [("paired", m) for m in
                                                        ("ebm", "mean fill", "nearest-neighbour fill", "cooperative ebm",
                                                         "cvae proposal")]
    assert all(0 < r["PSNR"] < 100 for r in rows) and (out / "samples" / "paired+cvae.png").is_file()
