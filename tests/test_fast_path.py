"""The fast sampling path (issue 7): same chains as the plain path, no weight
gradients, flags restored; and the speed benchmark's quick mode."""

import pytest
import torch
from torch import nn

import ebmkit
from ebmkit.sampling import chain_memory_format, input_gradient


def _autograd_grad(energy, x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(x).sum(), x)
    return g


@pytest.mark.parametrize("shape,nf", [((1, 8, 8), 4), ((3, 16, 16), 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_convnet_written_out_gradient_matches_autograd(shape, nf, channels_last):
    energy = ebmkit.create_energy("convnet", shape, nf=nf)
    x = torch.rand(5, *shape) * 2 - 1
    like = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    fn = energy.input_grad_fn(like)
    assert fn is not None
    torch.testing.assert_close(fn(like), _autograd_grad(energy, x), rtol=1e-4, atol=1e-6)


def test_last_layer_gradient_is_its_weight():
    """A net whose hidden part is the identity on positives: U = <w, LeakyReLU(conv1(x))> + b.
    With conv1 = identity (positive input), dU/dx is the last conv's weight, for every sample."""
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=1)
    conv1, conv2, last = [m for m in energy.net if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        conv1.weight.zero_(); conv1.weight[0, 0, 1, 1] = 1.0; conv1.bias.zero_()
        # conv2 (4x4 stride 2, pad 1): one tap, so the 8x8 map lands on a 4x4 map by subsampling
        conv2.weight.zero_(); conv2.weight[0, 0, 1, 1] = 1.0; conv2.bias.zero_()
    x = torch.rand(3, 1, 8, 8) + 0.1  # positive: every LeakyReLU passes its input
    g = energy.input_grad_fn(x)(x)
    expected = torch.zeros(3, 1, 8, 8)
    expected[:, :, 0::2, 0::2] = last.weight[0, 0]  # output (i, j) reads input (2i, 2j)
    torch.testing.assert_close(g, expected)


def test_no_written_out_gradient_where_autograd_is_needed():
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=4)
    assert energy.input_grad_fn(torch.rand(2, 1, 8, 8).double()) is None  # other dtypes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert energy.input_grad_fn(torch.rand(2, 1, 8, 8)) is None
    sn = ebmkit.create_energy("convnet", (1, 8, 8), nf=4, spectral_norm=True)
    assert sn.input_grad_fn(torch.rand(2, 1, 8, 8)) is None
    # and input_gradient falls back to autograd there
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(input_gradient(sn.eval(), x)(x), _autograd_grad(sn.eval(), x))


def test_chain_memory_format_auto_is_channels_last_for_cpu_images_of_willing_energies_only():
    conv = ebmkit.create_energy("convnet", (3, 8, 8), nf=4)
    assert chain_memory_format(torch.zeros(2, 3, 4, 4), None, conv) == torch.channels_last
    assert chain_memory_format(torch.zeros(2, 3, 4, 4), None, nn.Identity()) == torch.contiguous_format  # may .view its input
    assert chain_memory_format(torch.zeros(2, 3, 4, 4), False, conv) == torch.contiguous_format
    assert chain_memory_format(torch.zeros(2, 3, 4, 4), True) == torch.channels_last
    assert chain_memory_format(torch.zeros(2, 5), True, conv) == torch.contiguous_format


def test_an_energy_that_views_its_input_still_works_by_default():
    class Viewing(ebmkit.Energy):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3 * 4 * 4))

        def forward(self, x):
            return (x.view(x.shape[0], -1) ** 2 * self.w).sum(1)  # fails on a channels_last tensor

    z = torch.rand(2, 3, 4, 4)
    x = ebmkit.create_sampler("gradient-descent", steps=1, step_size=0.25).run(Viewing(), z).x
    torch.testing.assert_close(x, z * 0.5)  # grad = 2 z


@pytest.mark.parametrize("name", ["langevin", "gradient-descent"])
def test_fast_path_gives_the_plain_paths_samples(name):
    energy = ebmkit.create_energy("convnet", (3, 16, 16), nf=8)
    z = torch.rand(6, 3, 16, 16) * 2 - 1
    noise = torch.randn(5, 6, 3, 16, 16)
    fast = ebmkit.create_sampler(name, steps=5, step_size=1.0)
    plain = ebmkit.create_sampler(name, steps=5, step_size=1.0, fast=False)
    a, b = fast.run(energy, z, noise=noise, record=(2,)), plain.run(energy, z, noise=noise, record=(2,))
    torch.testing.assert_close(a.x, b.x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.trajectory[2], b.trajectory[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.grad_norm, b.grad_norm, rtol=1e-4, atol=1e-6)
    assert a.x.is_contiguous()


def test_same_seed_same_chain_on_either_path():
    """The noise is drawn in the standard layout, so channels_last chains see the same draws."""
    energy = ebmkit.create_energy("convnet", (1, 8, 8), nf=4)
    z = torch.rand(4, 1, 8, 8)
    out = []
    for fast in (True, False):
        torch.manual_seed(3)
        out.append(ebmkit.create_sampler("langevin", steps=4, noise=0.05, fast=fast).run(energy, z).x)
    torch.testing.assert_close(out[0], out[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_no_weight_grads_and_requires_grad_restored(fast):
    energy = ebmkit.create_energy("convnet", (3, 8, 8), nf=4)
    params = list(energy.parameters())
    params[1].requires_grad_(False)  # a user-frozen parameter stays frozen
    flags = [p.requires_grad for p in params]
    before = [p.detach().clone() for p in params]
    ebmkit.create_sampler("langevin", steps=3, fast=fast).run(energy, torch.rand(2, 3, 8, 8))
    assert all(p.grad is None for p in params)
    assert [p.requires_grad for p in params] == flags
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert all(p.is_contiguous() for p in params)  # the energy's own weights are left in their format


def test_requires_grad_restored_after_an_error():
    class Broken(ebmkit.Energy):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            raise RuntimeError("boom")

    e = Broken()
    with pytest.raises(RuntimeError, match="boom"):
        ebmkit.create_sampler("langevin", steps=2).run(e, torch.rand(2, 3))
    assert e.w.requires_grad


def test_training_uses_the_fast_path_and_learns_the_same(tiny, monkeypatch):
    """Two iterations with fast=true and fast=false: the same losses (float tolerance),
    and the fast run really went through the written-out gradient."""
    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer
    from ebmkit_plugins.convnet import ConvNetEnergy

    calls = []
    original = ConvNetEnergy.input_grad_fn
    monkeypatch.setattr(ConvNetEnergy, "input_grad_fn", lambda self, like: calls.append(1) or original(self, like))
    logs = {}
    for fast in (True, False):
        cfg = parse_config(tiny(sampler={"fast": fast}, training={"iterations": 2}))
        trainer = Trainer(build_experiment(cfg))
        x = torch.stack([trainer.experiment.dataset[i] for i in range(16)])
        torch.manual_seed(1)
        logs[fast] = [trainer.step(x), trainer.step(x)]
    assert calls  # the trainer's chains took the fast path
    for a, b in zip(logs[True], logs[False]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-5)


def test_speed_benchmark_quick_mode_writes_its_tables(tmp_path):
    from benchmarks.speed import SpeedSettings, run_speed

    s = SpeedSettings.quick()
    s.rounds, s.peers = 1, True
    result = run_speed(s, tmp_path, log=lambda msg: None)
    md = result["markdown"]
    assert "(a) paper appendix loop" in md and "ebmkit langevin" in md and "torchebm" in md
    assert "Trainer.step" in md
    for name in ("speed.md", "speed.csv", "speed.json", "speed_train.csv", "meta.json"):
        assert (tmp_path / name).is_file()
    rows = {r["key"]: r for r in result["tables"][0].rows}
    assert rows["paper"]["ratio_to_a"] == pytest.approx(1.0)
    assert rows["toolkit"]["image_steps_per_s"] > 0
    assert result["meta"]["matmul_peak"]["gflops"] > 0


@pytest.mark.parametrize("setting,expected", [(None, True), (False, False), (True, True)])
def test_performance_section_sets_channels_last_weights(tiny, setting, expected):
    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    cfg = parse_config(tiny(performance={"channels_last": setting}))
    trainer = Trainer(build_experiment(cfg))
    w = list(trainer.energy.parameters())[2]  # the second conv's weight (the first has one input channel)
    assert w.is_contiguous(memory_format=torch.channels_last) == expected
    assert w.is_contiguous() == (not expected)


def test_performance_threads_and_bad_values(tiny):
    from ebmkit.config import parse_config
    from ebmkit.errors import ConfigError
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    before = torch.get_num_threads()
    try:
        Trainer(build_experiment(parse_config(tiny(performance={"threads": 1}))))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="performance.threads"):
        parse_config(tiny(performance={"threads": 0}))
    with pytest.raises(ConfigError, match="sampler"):
        parse_config(tiny(sampler={"fast": "sometimes"}))


def test_performance_compile_flag_compiles_the_energy(tiny, monkeypatch):
    """The flag reaches torch.compile (replaced here: compiling takes minutes on this CPU)."""
    from ebmkit.config import parse_config
    from ebmkit.experiment import build_experiment
    from ebmkit.training.loop import Trainer

    seen = []
    monkeypatch.setattr(torch, "compile", lambda module: seen.append(module) or module)
    exp = build_experiment(parse_config(tiny(performance={"compile": True})))
    Trainer(exp)
    assert seen == [exp.energy]
