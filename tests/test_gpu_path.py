"""The GPU chain (ebmkit.chain_acceleration), checked on a CPU: autocast, loss
scaling, compile, and the CUDA-graph bookkeeping through a stand-in capture;
benchmarks.gpu_check end to end at a toy size."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ebmkit
from ebmkit import chain_acceleration as accel
from ebmkit import gpu_defaults
from ebmkit.chain_acceleration import ChainSettings, chain_settings, plan_chain
from ebmkit.config import parse_config
from ebmkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts with no captured graphs, counters at zero, warnings not yet given."""
    accel.release_graphs()
    accel._WARNED.clear()
    accel.STATS.update(captures=0, replays=0, fallbacks={}, fp16_retries=0, fp16_fp32_chains=0)
    accel._SCALES.clear()
    yield
    accel.release_graphs()
    accel.set_compile_options()


class StandInCapture:
    """Capture without a GPU: 'replay' runs the captured function again on the
    same static buffers (what a CUDA graph does, minus the speed)."""

    name = "stand-in"

    def __init__(self, fail: Exception | None = None):
        self.fail, self.captures, self.replays, self.warmups = fail, 0, 0, 0

    def supports(self, device):
        return True

    def capture(self, body, warmup):
        warmup()
        self.warmups += 1
        if self.fail is not None:
            raise self.fail
        self.captures += 1

        def replay():
            self.replays += 1
            body()

        return replay


@pytest.fixture
def stand_in(monkeypatch):
    backend = StandInCapture()
    monkeypatch.setattr(accel, "capture_backend", backend)
    return backend


def convnet(size=8, nf=8, channels=1, sharpen=1.0, seed=0):
    torch.manual_seed(seed)
    e = ebmkit.create_energy("convnet", (channels, size, size), nf=nf)
    with torch.no_grad():  # a steeper energy, so that the chain moves far enough to compare
        e.net[-1].weight.mul_(sharpen)
    return e


def langevin(steps=6, **kw):
    return ebmkit.create_sampler("langevin", steps=steps, step_size=1.0, noise=0.01, **kw)


def run(sampler, energy, z, seed=1, **kw):
    torch.manual_seed(seed)
    return sampler.run(energy, z, **kw)


# -- settings ----------------------------------------------------------------------------------------


def test_auto_is_off_on_cpu_and_takes_the_gpu_defaults_on_cuda(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not plan_chain(ChainSettings(), cpu).active  # the CPU chain is the one from before
    monkeypatch.setattr(gpu_defaults, "CHAIN_PRECISION", "fp32")
    monkeypatch.setattr(gpu_defaults, "CHAIN_CUDA_GRAPH", False)
    monkeypatch.setattr(gpu_defaults, "CHAIN_COMPILE", False)
    assert not plan_chain(ChainSettings(), cuda).active  # defaults all off: the chain from before
    monkeypatch.setattr(gpu_defaults, "CHAIN_PRECISION", "bf16")
    monkeypatch.setattr(gpu_defaults, "CHAIN_CUDA_GRAPH", True)
    plan = plan_chain(ChainSettings(), cuda)
    assert plan.active and plan.dtype == torch.bfloat16 and plan.cuda_graph and not plan.compile
    assert not plan_chain(ChainSettings(), cpu).active  # still off on the CPU
    explicit = plan_chain(ChainSettings("fp16", compile=True, cuda_graph=False), cpu)
    assert explicit.dtype == torch.float16 and explicit.compile and not explicit.cuda_graph
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 asked for inside an outer autocast: the path must take over
        assert plan_chain(ChainSettings("fp32"), cpu).active
        assert not plan_chain(ChainSettings(), cpu).active


def test_config_keys_and_bad_values():
    cfg = parse_config({"performance": {"chain_precision": "bf16", "chain_cuda_graph": True, "chain_compile": False,
                                        "cudnn_benchmark": True}}, check=False)
    assert ChainSettings.from_config(cfg.performance) == ChainSettings("bf16", False, True)
    with pytest.raises(ConfigError, match="chain_precision"):
        parse_config({"performance": {"chain_precision": "fp8"}}, check=False)
    with pytest.raises(ConfigError, match="fp8"):
        ChainSettings("fp8")


def test_default_settings_leave_the_samplers_own_loop(monkeypatch):
    calls = []
    monkeypatch.setattr(accel, "_eager_chain", lambda *a, **k: calls.append(1))
    e, z = convnet(), torch.rand(4, 1, 8, 8) * 2 - 1
    with chain_settings():
        run(langevin(), e, z)
    assert calls == []


# -- autocast -----------------------------------------------------------------------------------------


def _energy_error(energy, x, x_ref, z):
    with torch.no_grad():
        u, u_ref, u0 = energy(x), energy(x_ref), energy(z)
    descent = (u_ref - u0).abs().mean()
    return float((u - u_ref).abs().max() / descent), float(descent)


def test_bf16_autocast_on_cpu_gives_energies_within_tolerance_of_fp32():
    e = convnet(size=16, nf=8, sharpen=20.0)
    z = torch.rand(8, 1, 16, 16) * 2 - 1
    noise = torch.randn(20, *z.shape)
    s = langevin(steps=20)
    ref = s.run(e, z, noise=noise)
    with chain_settings(precision="bf16"):
        low = s.run(e, z, noise=noise)
    assert low.x.dtype == torch.float32 and low.grad_norm.dtype == torch.float32  # x and its update stay fp32
    assert not torch.equal(low.x, ref.x)  # it did run in bf16
    err, descent = _energy_error(e, low.x, ref.x, z)
    assert descent > 0.05  # the chain moved: the comparison means something
    assert err <= 0.05, (err, descent)  # the tolerance gpu_check states
    assert torch.allclose(low.grad_norm, ref.grad_norm, rtol=0.05)


def test_bf16_autocast_wraps_only_the_energy():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 1)

        def forward(self, x):
            seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
            return self.lin(x).squeeze(-1)

    z = torch.rand(4, 6)
    with chain_settings(precision="bf16"):
        out = langevin(steps=2).run(Spy(), z)
    assert seen == [(torch.float32, True)] * 2  # the energy sees fp32 x under autocast
    assert out.x.dtype == torch.float32


class Linear(nn.Module):
    """U(x) = w . x: grad_x U = w everywhere, so fp16 overflow is set by |w|."""

    def __init__(self, w: float, dim: int = 4):
        super().__init__()
        self.lin = nn.Linear(dim, 1, bias=False)
        nn.init.constant_(self.lin.weight, w)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


def test_fp16_loss_scaling_backs_off_after_an_overflow_and_reruns_the_same_chain():
    e, z = Linear(1000.0), torch.zeros(3, 4)  # w * 256 overflows fp16 (65504); w * 16 does not
    s = langevin(steps=3)
    ref = run(s, e, z)
    with chain_settings(precision="fp16"):
        out = run(s, e, z)
    scale = accel._SCALES[e]
    assert accel.STATS["fp16_retries"] == 1 and scale.value == 16.0
    assert torch.allclose(out.x, ref.x, rtol=1e-3)  # the rerun drew the same noise
    with chain_settings(precision="fp16"):
        again = run(s, e, z)
    assert accel.STATS["fp16_retries"] == 1 and torch.allclose(again.x, ref.x, rtol=1e-3)  # the new scale holds


def test_fp16_overflow_at_every_scale_runs_the_chain_in_fp32(caplog):
    e, z = Linear(1e5), torch.zeros(3, 4)  # the weight itself overflows fp16
    s = langevin(steps=3)
    ref = run(s, e, z)
    with caplog.at_level(logging.WARNING, logger="ebmkit"), chain_settings(precision="fp16"):
        out = run(s, e, z)
    assert accel.STATS["fp16_fp32_chains"] == 1
    assert torch.allclose(out.x, ref.x) and torch.isfinite(out.x).all()
    assert "run in fp32" in caplog.text


def test_loss_scale_grows_after_clean_chains():
    scale = accel.LossScale(torch.device("cpu"), init=4.0, growth_interval=2)
    scale.succeeded()
    assert scale.value == 4.0
    scale.succeeded()
    assert scale.value == 8.0 and float(scale.tensor) == 8.0 and float(scale.inverse) == 1 / 8
    assert scale.overflowed() and scale.value == 1.0  # 8 / 16, floored at 1
    assert not scale.overflowed()


# -- compile ---------------------------------------------------------------------------------------------


def test_compile_gives_the_same_samples_aot_eager():
    """torch.compile through AOTAutograd (forward and backward graphs traced), no code generation."""
    accel.set_compile_options(backend="aot_eager")
    torch._dynamo.reset()
    e, z = convnet(), torch.rand(4, 1, 8, 8) * 2 - 1
    ref = run(langevin(), e, z)
    with chain_settings(compile=True):
        out = run(langevin(), e, z)
        again = run(langevin(), e, z)  # the compiled function is reused
    assert torch.allclose(out.x, ref.x, atol=1e-6) and torch.allclose(again.x, ref.x, atol=1e-6)
    assert torch.allclose(out.grad_norm, ref.grad_norm, rtol=1e-5)


@pytest.mark.slow
def test_compile_with_inductor_gives_the_same_samples():
    """The real thing (Inductor's generated code); about a minute on a small CPU."""
    torch._dynamo.reset()
    e, z = convnet(nf=4), torch.rand(4, 1, 8, 8) * 2 - 1
    ref = run(langevin(steps=3), e, z)
    with chain_settings(compile=True):
        out = run(langevin(steps=3), e, z)
    assert torch.allclose(out.x, ref.x, atol=1e-5)


# -- CUDA-graph bookkeeping through a stand-in capture ---------------------------------------------------


def test_captured_chain_matches_the_eager_chain_and_is_replayed(stand_in):
    e, z = convnet(), torch.rand(4, 1, 8, 8) * 2 - 1
    s = langevin(steps=6)
    ref = run(s, e, z)
    noise = torch.randn(6, *z.shape)
    ref_noise = s.run(e, z, noise=noise)
    with chain_settings(cuda_graph=True):
        first = run(s, e, z)
        second = run(s, e, z)
        given = s.run(e, z, noise=noise)
    assert stand_in.captures == 1 and stand_in.replays == 3  # captured once, replayed per chain
    for out in (first, second):  # the noise is drawn outside the graph exactly as the eager chain draws it
        assert torch.equal(out.x, ref.x) and torch.equal(out.grad_norm, ref.grad_norm)
    assert torch.equal(given.x, ref_noise.x)
    entry = next(iter(accel._GRAPHS.values()))
    assert entry.x.data_ptr() != first.x.data_ptr()  # the result is a copy, not the static buffer
    assert entry.noise.shape == (6, *z.shape) and entry.grad_norm.shape == (6,)
    x_before = first.x.clone()
    run(s, e, z * 0.5)
    assert torch.equal(first.x, x_before)  # a later replay does not touch an earlier result


def test_long_chains_replay_a_captured_block(stand_in):
    e, z = convnet(), torch.rand(2, 1, 8, 8) * 2 - 1
    s = langevin(steps=250)
    ref = run(s, e, z)
    with chain_settings(cuda_graph=True):
        out = run(s, e, z)
    assert accel.graph_block(250) == 50 and accel.graph_block(100) == 100 and accel.graph_block(101) == 1
    assert stand_in.captures == 1 and stand_in.replays == 5
    assert torch.equal(out.x, ref.x) and torch.equal(out.grad_norm, ref.grad_norm)


def test_graph_cache_keys_on_shape_and_weights(stand_in, monkeypatch):
    monkeypatch.setattr(accel, "MAX_CACHED_GRAPHS", 2)
    e = convnet()
    s = langevin(steps=3)
    with chain_settings(cuda_graph=True):
        for b in (2, 3, 2):
            run(s, e, torch.rand(b, 1, 8, 8))
        assert stand_in.captures == 2  # batch 2 came back from the cache
        run(s, e, torch.rand(5, 1, 8, 8))
        assert stand_in.captures == 3 and len(accel._GRAPHS) == 2  # the oldest was dropped
        # the weights change in place (an optimiser step): the same graph sees the new values
        z = torch.rand(5, 1, 8, 8)
        with torch.no_grad():
            for p in e.parameters():
                p.mul_(1.5)
        out = run(s, e, z)
        assert stand_in.captures == 3
    assert torch.equal(out.x, run(s, e, z).x)
    e.net[0].weight = nn.Parameter(e.net[0].weight.detach().clone())  # new storage: a new capture
    with chain_settings(cuda_graph=True):
        run(s, e, z)
    assert stand_in.captures == 4


def test_failed_capture_falls_back_with_one_logged_reason(monkeypatch, caplog):
    backend = StandInCapture(fail=RuntimeError("operation not permitted when stream is capturing"))
    monkeypatch.setattr(accel, "capture_backend", backend)
    e, z = convnet(), torch.rand(4, 1, 8, 8) * 2 - 1
    s = langevin()
    ref = run(s, e, z)
    with caplog.at_level(logging.WARNING, logger="ebmkit"), chain_settings(cuda_graph=True):
        outs = [run(s, e, z) for _ in range(3)]
    assert all(torch.equal(o.x, ref.x) for o in outs)  # the eager chain, same samples
    assert backend.warmups == 1  # a failed capture is not retried for the same chain
    assert caplog.text.count("capture of ConvNetEnergy's chain failed") == 1
    assert "operation not permitted" in caplog.text
    assert sum(accel.STATS["fallbacks"].values()) == 3


def test_chains_that_cannot_be_captured_say_why(stand_in, caplog):
    from ebmkit.conditional import ConditionalEnergy

    z = torch.rand(2, 1, 8, 8)
    with caplog.at_level(logging.WARNING, logger="ebmkit"), chain_settings(cuda_graph=True):
        out = run(langevin(steps=4), convnet(), z, record=(0, 2, 4))
        assert set(out.trajectory) == {0, 2, 4}
        drop = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 1), nn.Flatten(0))
        run(langevin(steps=2), drop, z)

        class Cond(ConditionalEnergy):
            target_channels, condition_channels = 1, 1

            def energy(self, x, y):
                return (x * y).flatten(1).sum(1)

        cond = Cond()
        with cond.bound(torch.ones(2, 1, 8, 8)):
            out = run(langevin(steps=2), cond, z)
        assert torch.isfinite(out.x).all()
    assert stand_in.captures == 0
    for reason in ("recorded trajectory", "Dropout in training mode", "conditional energy's condition changes"):
        assert reason in caplog.text
    drop.eval()  # dropout off: nothing stops the capture
    with chain_settings(cuda_graph=True):
        run(langevin(steps=2), drop, z)
    assert stand_in.captures == 1


def test_real_capture_on_a_cpu_falls_back(caplog):
    e, z = convnet(), torch.rand(2, 1, 8, 8)
    ref = run(langevin(steps=3), e, z)
    with caplog.at_level(logging.WARNING, logger="ebmkit"), chain_settings(cuda_graph=True):
        out = run(langevin(steps=3), e, z)
    assert torch.equal(out.x, ref.x)
    assert "needs a CUDA device" in caplog.text


def test_fp16_overflow_inside_a_captured_chain_reruns_it(stand_in):
    e, z = Linear(1000.0), torch.zeros(3, 4)
    s = langevin(steps=3)
    ref = run(s, e, z)
    with chain_settings(precision="fp16", cuda_graph=True):
        out = run(s, e, z)
    assert stand_in.captures == 1 and stand_in.replays == 2 and accel.STATS["fp16_retries"] == 1
    assert torch.allclose(out.x, ref.x, rtol=1e-3)
    e2 = Linear(1e5)
    with chain_settings(precision="fp16", cuda_graph=True):
        out2 = run(s, e2, z)
    assert accel.STATS["fp16_fp32_chains"] == 1 and torch.allclose(out2.x, run(s, e2, z).x)


# -- the trainer uses the same path -------------------------------------------------------------------------


def test_training_step_uses_the_accelerated_chain(tiny, stand_in):
    from ebmkit.experiment import build_experiment
    from ebmkit.trainer import Trainer

    cfg = parse_config(tiny(performance={"chain_precision": "bf16", "chain_cuda_graph": True},
                            training={"iterations": 12}, optimizer={"lr": 1e-3}))
    trainer = Trainer(build_experiment(cfg))
    last = trainer.fit()
    assert stand_in.captures == 2  # the training chain and the sample grid (batch 16 and 4)
    assert stand_in.replays >= 12
    assert torch.isfinite(torch.tensor(last["gap"]))
    assert accel.current_settings() == ChainSettings()  # the trainer's settings do not leak out


# -- gpu_check and the setup script ---------------------------------------------------------------------------


def test_gpu_check_runs_end_to_end_at_toy_size(tmp_path):
    from benchmarks import gpu_check

    out = tmp_path / "gpu"
    code = gpu_check.main(["--toy", "--out", str(out), "--settings", "toy8", "--row-seconds", "0.02",
                           "--smoke-seconds", "20", "--budget", "120"])
    assert code == 0
    result = json.loads((out / "gpu_check.json").read_text())
    rows = {r["key"]: r for r in result["sampler_rows"]}
    for key in ("fp32_graph", "bf16_graph", "fp16_graph", "bf16_graph_bench", "bf16_compile_graph"):
        assert rows[key]["status"] == "skipped" and rows[key]["note"] == "GPU only"
    for key in ("paper", "fp32", "fp32_cl", "bf16", "fp16", "bf16_compile"):
        assert rows[key]["status"] == "ok", rows[key]
        assert rows[key]["img_steps_per_s"] > 0 and "energy_error" in rows[key]
    assert rows["fp32"]["energy_error"] == 0.0 and rows["paper"]["energy_error"] < 1e-4  # same start, same noise
    assert {r["key"] for r in result["training_rows"]} == {"paper", "fp32", "accelerated"}
    assert all(r["status"] == "ok" for r in result["training_rows"])
    assert result["smoke"]["status"] == "passed", result["smoke"]
    assert result["recommended_defaults"]["ebmkit/gpu_defaults.py"]["CHAIN_CUDA_GRAPH"] is False
    md = (out / "gpu_check.md").read_text()
    assert "Toy run" in md and "GPU only" in md and "Training smoke" in md


def test_gpu_check_refuses_paper_size_without_a_gpu(capsys):
    from benchmarks import gpu_check

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main(["--out", "/tmp/unused"]) == 2
    assert "--toy" in capsys.readouterr().err


def test_gpu_setup_publishes_the_entry_points(tmp_path):
    site = tmp_path / "site"
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    env = {"SITE": str(site), "WHEELS": str(empty), "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_setup.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "convnet" in done.stdout
    assert (site / "ebmkit_plugins").resolve() == (ROOT / "plugins").resolve()
    info = next(site.glob("shortrun_ebm-*.dist-info"))
    text = (info / "entry_points.txt").read_text()
    assert "[ebmkit]" in text and "convnet = ebmkit_plugins.convnet" in text
    assert "ebmkit = ebmkit.cli:main" in text
