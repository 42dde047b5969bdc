import pytest
import torch

from ebmkit.checkpoint import find_checkpoint, list_checkpoints, open_checkpoint, save_checkpoint
from ebmkit.errors import CheckpointError


def _save(d, it, value=1.0, **kw):
    return save_checkpoint(d, it, modules={"energy": {"w": torch.full((3,), value)}},
                           objects={"optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, **kw)


def test_round_trip_and_keep(tmp_path):
    for it in range(1, 5):
        _save(tmp_path, it, float(it), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter-00000003", "iter-00000004"]
    ck = find_checkpoint(tmp_path)
    assert ck.iteration == 4 and torch.equal(ck.tensors("energy")["w"], torch.full((3,), 4.0))
    assert ck.object("optimizer")["param_groups"][0]["lr"] == 0.1
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folders left


def test_corrupt_newest_falls_back_with_a_message(tmp_path):
    _save(tmp_path, 1, 1.0)
    p2 = _save(tmp_path, 2, 2.0)
    data = (p2 / "energy.safetensors").read_bytes()
    (p2 / "energy.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        open_checkpoint(p2)
    with pytest.warns(RuntimeWarning, match="iter-00000002 is corrupt.*falling back"):
        ck = find_checkpoint(tmp_path)
    assert ck.iteration == 1


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(5)
    p = _save(tmp_path, 1)
    a = torch.rand(3)
    torch.manual_seed(99)
    open_checkpoint(p).restore_rng()
    assert torch.equal(torch.rand(3), a)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        find_checkpoint(tmp_path / "nothing")
