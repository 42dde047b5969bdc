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


def write_distribution(root, dist_name: str, module: str, body: str | None = None, *, entry: str = "main",
                       version: str = "0.3", entry_value: str | None = None) -> None:
    """A real (if minimal) installed distribution under ``root``: a .dist-info
    folder with METADATA and an ``[ebmkit]`` entry point ``entry = module``,
    plus the module's source when ``body`` is given (dedented).  Put ``root``
    on sys.path (and clear the registry's cache) to install it."""
    import textwrap

    info = root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ebmkit]\n{entry} = {entry_value or module}\n")
    if body is not None:
        (root / f"{module}.py").write_text(textwrap.dedent(body))


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
    write_distribution(root, "ebmkit-test-stateful", "stateful_plugin", entry="stateful", version="0.1")
    paths = [str(root), str(Path(__file__).parent)]
    for p in paths:
        monkeypatch.syspath_prepend(p)
    default_registry.cache_clear()
    yield paths
    default_registry.cache_clear()
