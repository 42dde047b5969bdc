import os

import pytest
import torch

# One thread: CI machines are small and shared; tiny nets gain nothing from more.
torch.set_num_threads(int(os.environ.get("EBMKIT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def tiny_config(tmp_path, **sections):
    """A minimal experiment dict on shipped data that trains in seconds."""
    cfg = {
        "data": {"name": "digits", "image_size": 8},
        "energy": {"name": "convnet", "nf": 8},
        "initializer": {"name": "uniform"},
        "sampler": {"name": "langevin", "steps": 5, "step_size": 1.0, "noise": 0.01},
        "objective": {"name": "maximum-likelihood", "data_noise": 0.03},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"iterations": 4, "batch_size": 16, "sample_every": 0, "checkpoint_every": 0, "progress": False},
        "output": {"dir": str(tmp_path / "run"), "grid_size": 4},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


@pytest.fixture
def tiny(tmp_path):
    return lambda **kw: tiny_config(tmp_path, **kw)


@pytest.fixture
def stateful_plugin(tmp_path, monkeypatch):
    """Install tests/stateful_plugin.py as a third-party distribution (a
    .dist-info on sys.path) for this process; returns the sys.path entries a
    subprocess needs (PYTHONPATH)."""
    from pathlib import Path

    from ebmkit.registry import default_registry

    root = tmp_path / "site"
    info = root / "ebmkit_test_stateful-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ebmkit-test-stateful\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ebmkit]\nstateful = stateful_plugin\n")
    paths = [str(root), str(Path(__file__).parent)]
    for p in paths:
        monkeypatch.syspath_prepend(p)
    default_registry.cache_clear()
    yield paths
    default_registry.cache_clear()
