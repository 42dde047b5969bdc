"""Bad input through the command line: one clear message, exit status 2,
no traceback.  Each case names what is wrong (the field, the shape, the
plug-in, both architectures)."""

import json

import numpy as np
import pytest

from ebmkit.cli import main
from ebmkit.data import check_declared_shape
from ebmkit.errors import DataError
from ebmkit.registry import default_registry

from conftest import write_distribution


def _train(cfg: dict, tmp_path, capsys, *extra):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    capsys.readouterr()
    rc = main(["train", str(path), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


CONFIG_CASES = {
    "typo in a field": ({"training": {"iteratons": 3}}, "training.iteratons: unknown field (did you mean 'iterations'?)"),
    "typo in a section": ({"trainig": {}}, "trainig: unknown field (did you mean 'training'?)"),
    "typo in a component parameter": ({"energy": {"name": "convnet", "nff": 8}}, "energy.nff: unknown field (did you mean 'nf'?)"),
    "typo three levels down": ({"training": {"divergence": {"acton": "stop"}}},
                               "training.divergence.acton: unknown field (did you mean 'action'?)"),
    "negative K": ({"sampler": {"name": "langevin", "steps": -5}},
                   "sampler.steps: Input should be greater than or equal to 0 (got -5)"),
    "zero batch": ({"training": {"batch_size": 0}}, "training.batch_size: Input should be greater than 0 (got 0)"),
    "wrong type": ({"optimizer": {"lr": "fast"}}, "optimizer.lr: Input should be a valid number"),
    "out-of-range divergence option": ({"training": {"divergence": {"lr_factor": 2}}},
                                       "training.divergence.lr_factor: Input should be less than 1 (got 2)"),
    "unknown plug-in": ({"energy": {"name": "convnett"}},
                        "energy.name: unknown energy 'convnett' (did you mean 'convnet'?); known energy names:"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_values(tiny, tmp_path, capsys, case):
    override, expected = CONFIG_CASES[case]
    cfg = tiny()
    for section, value in override.items():
        cfg[section] = {**cfg.get(section, {}), **value} if section in cfg and "name" not in value else value
    rc, err = _train(cfg, tmp_path, capsys)
    assert rc == 2 and expected in err, err


def test_malformed_files_and_overrides(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[training\niterations = 3\n")
    assert main(["train", str(tmp_path / "bad.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["train", "digits-cpu", "--set", "training.iterations"]) == 2
    assert "override 'training.iterations' must look like section.key=value" in capsys.readouterr().err


def test_batch_larger_than_the_dataset(tiny, tmp_path, capsys):
    rc, err = _train(tiny(data={"name": "digits", "image_size": 8, "limit": 10}), tmp_path, capsys)
    assert rc == 2 and "batch size 16 x 1 process(es) is larger than the dataset (9 items)" in err


# -- data ------------------------------------------------------------------------------


def _array_cfg(tiny, path, **data):
    return tiny(data={"name": "array-file", "path": str(path), **data})


def test_images_outside_the_unit_range_say_how_to_fix_it(tiny, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8)).astype(np.uint8))
    rc, err = _train(_array_cfg(tiny, tmp_path / "x.npy"), tmp_path, capsys)
    assert rc == 2 and "images must lie in [-1, 1]" in err and "set data.value_range" in err
    rc, err = _train(_array_cfg(tiny, tmp_path / "x.npy", value_range=[0, 255]), tmp_path, capsys)
    assert rc == 0, err  # with the range declared it trains


def test_channels_last_images_read_as_channels_first(tiny, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((40, 8, 8, 3), np.float32))
    rc, err = _train(_array_cfg(tiny, tmp_path / "x.npy"), tmp_path, capsys)
    assert rc == 2 and "holds images of shape (8, 8, 3), which look channels-last; set data.layout = \"NHWC\"" in err
    rc, err = _train(_array_cfg(tiny, tmp_path / "x.npy", layout="NHWC", channels=1), tmp_path, capsys)
    assert rc == 0, err


def test_wrong_channel_count(tiny, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((40, 2, 8, 8), np.float32))
    rc, err = _train(_array_cfg(tiny, tmp_path / "x.npy", channels=3), tmp_path, capsys)
    assert rc == 2 and "cannot convert 2-channel images to 3 channels" in err


def test_non_finite_data(tiny, tmp_path, capsys):
    x = np.zeros((40, 1, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    rc, err = _train(_array_cfg(tiny, tmp_path / "x.npy"), tmp_path, capsys)
    assert rc == 2 and "has non-finite values" in err


def test_a_dataset_that_ignores_its_declared_size_is_caught():
    check_declared_shape((1, 8, 8), {"image_size": 8, "channels": 1}, name="ok")
    with pytest.raises(DataError, match=r"dataset 'lazy' yields 8x8 images \(shape \(1, 8, 8\)\), but data.image_size = 16"):
        check_declared_shape((1, 8, 8), {"image_size": 16}, name="lazy")
    with pytest.raises(DataError, match=r"yields 1-channel images .* but data.channels = 3"):
        check_declared_shape((1, 8, 8), {"channels": 3}, name="lazy")


# -- checkpoints from another run ---------------------------------------------------


def _train_then_resume_with(tiny, tmp_path, capsys, **changes):
    rc, err = _train(tiny(training={"iterations": 2}), tmp_path, capsys)
    assert rc == 0, err
    cfg = tiny(training={"iterations": 4})
    cfg.update(changes)
    return _train(cfg, tmp_path, capsys, "--resume")


def test_resuming_into_another_architecture_names_both(tiny, tmp_path, capsys):
    rc, err = _train_then_resume_with(tiny, tmp_path, capsys, energy={"name": "convnet", "nf": 16})
    assert rc == 2
    assert "holds energy weights of 'convnet' (nf=8, negative_slope=0.2, spectral_norm=False) for data of shape (1, 8, 8)" in err
    assert "which do not fit this run's energy 'convnet' (nf=16, negative_slope=0.2, spectral_norm=False) (ConvNetEnergy)" in err
    assert "size mismatch" in err


def test_resuming_into_another_energy_names_both(tiny, tmp_path, capsys):
    rc, err = _train_then_resume_with(tiny, tmp_path, capsys, energy={"name": "mlp", "hidden": 8})
    assert rc == 2 and "holds energy 'convnet' (nf=8" in err and "but this run builds energy 'mlp' (hidden=8)" in err


def test_resuming_on_data_of_another_shape(tiny, tmp_path, capsys):
    rc, err = _train_then_resume_with(tiny, tmp_path, capsys, data={"name": "digits", "image_size": 16})
    assert rc == 2 and "was trained on data of shape (1, 8, 8), but this run's data 'digits' yields (1, 16, 16)" in err


# -- plug-ins ---------------------------------------------------------------------------


def test_a_plugin_that_fails_to_import_is_named_and_the_rest_keep_working(tiny, tmp_path, capsys, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "broken-ebm", "broken_ebm_plugin", """
        import not_a_module_anywhere
    """, entry="shapes")
    monkeypatch.syspath_prepend(str(site))
    default_registry.cache_clear()
    try:
        failure = ("plug-in entry point 'shapes = broken_ebm_plugin' of distribution 'broken-ebm' failed to load: "
                   "ModuleNotFoundError: No module named 'not_a_module_anywhere'")
        rc, err = _train(tiny(), tmp_path, capsys)
        assert rc == 0 and f"ebmkit: warning: {failure}" in err  # reported, and the built-ins still train

        default_registry.cache_clear()
        rc, err = _train(tiny(energy={"name": "shifted"}), tmp_path, capsys)
        assert rc == 2 and "unknown energy 'shifted'" in err and f"note: {failure}" in err

        default_registry.cache_clear()
        assert main(["plugins"]) == 0
        out = capsys.readouterr()
        assert "convnet" in out.out and f"FAILED: {failure}" in out.err
    finally:
        default_registry.cache_clear()


def test_a_plugin_hook_that_raises_when_called_is_isolated_like_an_import_failure(tiny, tmp_path, capsys, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "raising-ebm", "raising_ebm_plugin", """
        import ebmkit

        @ebmkit.hookimpl
        def ebmkit_energies():
            raise RuntimeError("licence server unreachable")
    """, entry="shapes", version="0.2")
    monkeypatch.syspath_prepend(str(site))
    default_registry.cache_clear()
    try:
        failure = ("plug-in entry point 'shapes = raising_ebm_plugin' of distribution 'raising-ebm' failed in "
                   "ebmkit_energies(): RuntimeError: licence server unreachable")
        rc, err = _train(tiny(), tmp_path, capsys)
        assert rc == 0 and f"ebmkit: warning: {failure}; its components are left out" in err  # the built-ins train
        assert err.count("licence server unreachable") == 1  # warned once, not per lookup

        default_registry.cache_clear()
        assert main(["plugins"]) == 0
        out = capsys.readouterr()
        assert "convnet" in out.out and f"FAILED: {failure}" in out.err and "Traceback" not in out.err
    finally:
        default_registry.cache_clear()


def test_a_bad_item_of_a_streamed_dataset_is_named_with_its_file_and_iteration(tiny, tmp_path):
    """A dataset read item by item is probed at the start and checked batch by batch:
    a NaN in an item the probe skipped stops the run as bad data, not as a divergence."""
    import torch
    from torch.utils.data import Dataset

    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    class Files(Dataset):
        def __len__(self):
            return 200

        def __getitem__(self, i):
            x = torch.zeros(1, 8, 8)
            return x * float("nan") if i == 199 else x

        def item_name(self, i):
            return f"photos/{i:03d}.png"

    cfg = parse_config(tiny(training={"iterations": 100}))
    trainer = Trainer(build_experiment(cfg, dataset=Files()))  # the probe (every 3rd item) passes
    with pytest.raises(DataError, match=r"dataset 'digits': item 199 \(photos/199.png\) has non-finite values \(NaN or "
                                        r"infinity\) \(found in the batch of iteration \d+\); fix or remove it"):
        trainer.fit()
    assert trainer.iteration < 100
