"""Nothing read from a checkpoint, a config or a data file runs code."""

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch

from ebmkit.checkpoint import find_checkpoint, open_checkpoint
from ebmkit.cli import main
from ebmkit.config import load_config
from ebmkit.errors import CheckpointError, ConfigError, DataError


class Payload:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _trained_run(tiny, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny(training={"iterations": 2, "checkpoint_every": 2})))
    assert main(["train", str(cfg)]) == 0
    return cfg, find_checkpoint(tmp_path / "run")


def _plant(ckpt, name, data: bytes):
    """Replace a checkpoint file *and* its checksum, as an attacker would."""
    (ckpt.path / name).write_bytes(data)
    state = json.loads((ckpt.path / "state.json").read_text())
    state["files"][name] = hashlib.sha256(data).hexdigest()
    (ckpt.path / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_a_malicious_pickle_as_optimizer_state_is_refused(tiny, tmp_path, capsys, form):
    cfg, ckpt = _trained_run(tiny, tmp_path)
    marker = tmp_path / "pwned"
    evil = {"state": {0: Payload(marker)}, "param_groups": []}
    if form == "torch.save":
        path = tmp_path / "evil.pt"
        torch.save(evil, path)
        data = path.read_bytes()
    else:
        data = pickle.dumps(evil)
    _plant(ckpt, "optimizer.pt", data)
    capsys.readouterr()

    assert main(["train", str(cfg), "--resume", "--iterations", "4"]) == 2
    err = capsys.readouterr().err
    assert f"error: refused to load {ckpt.path / 'optimizer.pt'}: it is not a plain state file" in err
    assert "rejected it:" in err and "weights_only=False" not in err  # no advice to switch the safety off
    if form == "torch.save":
        assert "GLOBAL posix.system" in err or "GLOBAL os.system" in err
    assert not marker.exists()  # the payload never ran


def test_a_checkpoint_cannot_point_outside_its_folder(tiny, tmp_path):
    _, ckpt = _trained_run(tiny, tmp_path)
    state = json.loads((ckpt.path / "state.json").read_text())
    state["files"]["../../escape.safetensors"] = "0" * 64
    (ckpt.path / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="file names must not contain folders"):
        open_checkpoint(ckpt.path)


def test_garbage_weights_with_a_forged_checksum_are_a_clear_error(tiny, tmp_path):
    _, ckpt = _trained_run(tiny, tmp_path)
    _plant(ckpt, "energy.safetensors", b"\xff" * 64)
    with pytest.raises(CheckpointError, match="energy.safetensors is not a readable safetensors file"):
        open_checkpoint(ckpt.path).tensors("energy")


def test_a_yaml_config_cannot_construct_python_objects(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'training: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cfg)
    assert not marker.exists()


def test_an_array_file_holding_pickled_objects_is_refused(tmp_path):
    from ebmkit_plugins.array_file import ArrayFile

    marker = tmp_path / "pwned"
    path = tmp_path / "data.npy"
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read .*data.npy: Object arrays cannot be loaded when allow_pickle=False"):
        ArrayFile(path).load()
    assert not marker.exists()
