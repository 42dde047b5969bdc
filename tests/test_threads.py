"""performance.threads = "auto": the thread count from the workload and the machine."""

import pytest
import torch

import ebmkit
from ebmkit import performance
from ebmkit.performance import PARALLEL_FLOPS, choose_threads, forward_flops


def test_forward_flops_counts_the_convnet_by_hand():
    # convnet on 1x8x8, nf=4: conv3x3 1->4 on 8x8, conv4x4 s2 4->8 to 4x4, conv4x4 8->1 to 1x1 (2 FLOPs per MAC)
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=4)
    macs = 8 * 8 * 4 * 1 * 9 + 4 * 4 * 8 * 4 * 16 + 1 * 1 * 8 * 16
    assert forward_flops(energy, (1, 8, 8), batch=3) == 3 * 2 * macs


@pytest.mark.parametrize("flops, cores, load, want", [
    (35e6, 2, 0.0, 1),                    # digits-cpu (the README's main job): one thread
    (3.3e9, 2, 0.0, 1),                   # 32 px, nf 32: a second thread lost here (docs/performance.md)
    (13.1e9, 2, 0.0, 2),                  # 32 px, nf 64: a second thread paid
    (PARALLEL_FLOPS * 2, 2, 0.0, 2),      # big enough for two, machine free
    (PARALLEL_FLOPS * 2, 2, 1.6, 1),      # ... but another job holds a core
    (PARALLEL_FLOPS * 100, 8, 0.0, 8),    # never more than the cores
    (PARALLEL_FLOPS * 100, 8, 30.0, 1),   # at least one
])
def test_choose_threads(flops, cores, load, want):
    assert choose_threads(int(flops), cores=cores, load=load) == want


def test_auto_sets_one_thread_for_a_tiny_net_and_respects_omp_num_threads(monkeypatch):
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=8)
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert performance.apply_threads("auto", energy=energy, shape=(1, 8, 8), batch=32) == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice stands
        assert performance.apply_threads("auto", energy=energy, shape=(1, 8, 8), batch=32) == 2
        assert performance.apply_threads(3) == 3
    finally:
        torch.set_num_threads(before)


def test_auto_is_the_default_and_bad_values_name_the_field(tiny):
    from ebmkit.config import parse_config
    from ebmkit.errors import ConfigError

    assert parse_config(tiny()).performance.threads == "auto"
    with pytest.raises(ConfigError, match="performance.threads"):
        parse_config(tiny(performance={"threads": "many"}))


def test_the_threads_benchmark_runs(tmp_path):
    from benchmarks import threads

    assert threads.main(["--quick", "--out", str(tmp_path / "t.json")]) == 0
    import json

    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert rows[0]["forward_flops_per_batch"] > 0 and rows[0]["ratio_to_1_thread"]
