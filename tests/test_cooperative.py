"""Cooperative EBM + VAE learning: the VAE initializer, its training step,
checkpoints and generation (plugins/vae_initializer.py, ebmkit/generation/cooperative.py)."""

import json
import math

import pytest
import torch

from ebmkit import cooperative
from ebmkit.config import parse_config
from ebmkit.errors import ConfigError
from ebmkit.experiment import build_experiment
from ebmkit.training.loop import Trainer
from ebmkit_plugins.langevin import LangevinSampler
from ebmkit_plugins.vae_initializer import VAEInitializer

VAE = {"name": "vae", "latent_dim": 4, "nf": 4, "lr": 1e-3}


def _trainer(tiny, **sections):
    cfg = tiny(initializer=VAE, **sections)
    return Trainer(build_experiment(parse_config(cfg)))


def _batch(trainer, n=16):
    ds = trainer.experiment.dataset
    return torch.stack([ds[i] for i in range(n)])


def _flat(module):
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


# -- the ELBO ------------------------------------------------------------------------------


def test_elbo_matches_a_hand_computation():
    """Zeroed output weights make mu, logvar and g(z) known constants:
    -ELBO = ||x - b||^2 / (2 s^2) + D/2 log(2 pi s^2) + 1/2 sum(mu^2 + e^lv - 1 - lv)."""
    vae = VAEInitializer((2,), latent_dim=2, hidden=8, decoder_sd=0.5, kl_weight=0.5)
    enc_out, dec_out = vae.vae.encoder[-1], vae.vae.decoder[-1]
    with torch.no_grad():
        enc_out.weight.zero_()
        enc_out.bias.copy_(torch.tensor([1.0, 0.0, 0.0, math.log(4.0)]))  # mu = (1, 0), logvar = (0, log 4)
        dec_out.weight.zero_()
        dec_out.bias.copy_(torch.tensor([0.5, 0.0]))  # g(z) = (0.5, 0) whatever z is
    x = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    recon = 1.25 / (2 * 0.25) + 1.0 * math.log(2 * math.pi * 0.25)  # 2.951583
    kl = 0.5 * ((1 + 1 - 1 - 0) + (0 + 4 - 1 - math.log(4.0)))  # 1.306853
    t = vae.loss_terms(x)
    assert torch.allclose(t["recon"], torch.full((2,), recon)) and torch.allclose(t["kl"], torch.full((2,), kl))
    assert t["loss"].item() == pytest.approx(recon + 0.5 * kl, rel=1e-6)  # gamma = 0.5
    assert torch.allclose(vae.negative_elbo(x), torch.full((2,), recon + kl))
    assert recon + kl == pytest.approx(4.258436, abs=1e-6)


def test_elbo_of_the_conv_vae_matches_torch_distributions():
    vae = VAEInitializer((1, 8, 8), latent_dim=3, nf=4, decoder_sd=0.2)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    eps = torch.randn(5, 3)
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        std = (0.5 * logvar).exp()
        x_hat = vae.decode(mu + std * eps)
        nll = -torch.distributions.Normal(x_hat, 0.2).log_prob(x).flatten(1).sum(1)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, std), torch.distributions.Normal(0.0, 1.0)).sum(1)
        assert torch.allclose(vae.negative_elbo(x, eps), nll + kl, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_architectures_for_the_usual_sizes(shape):
    vae = VAEInitializer(shape, latent_dim=4, nf=2)
    x = vae.sample(3)
    assert x.shape == (3, *shape) and x.abs().max() <= 1.0  # tanh output, data scale
    assert vae.encode(x)[0].shape == (3, 4)
    vae.eval()  # running statistics: each proposal depends on its own z only
    z = vae.sample_latent(3)
    with torch.no_grad():
        assert torch.allclose(vae.decode(z)[:1], vae.decode(z[:1]), atol=1e-6)


def test_bad_parameters_name_the_field(tiny):
    with pytest.raises(ConfigError, match="initializer.kl_weight"):
        parse_config(tiny(initializer={"name": "vae", "kl_weight": -1.0}))
    with pytest.raises(ValueError, match="needs image data"):
        VAEInitializer((2,), arch="conv")


# -- one cooperative iteration ------------------------------------------------------------------


def test_one_cooperative_iteration_changes_both_models(tiny):
    trainer = _trainer(tiny)
    energy0, vae0 = _flat(trainer.energy), _flat(trainer.initializer)
    logs = trainer.step(_batch(trainer))
    assert not torch.equal(energy0, _flat(trainer.energy))
    assert not torch.equal(vae0, _flat(trainer.initializer))
    assert {"vae_loss", "vae_kl", "vae_mse", "gap"} <= set(logs)
    assert all(s["step"] == 1 for s in trainer.initializer.optimizer.state_dict()["state"].values())


def test_the_vae_learns_from_the_revised_samples(tiny):
    """update() fits the VAE to exactly the samples it is given: the loss on
    a fixed set falls over a few updates."""
    vae = VAEInitializer((1, 8, 8), latent_dim=4, nf=4, lr=1e-2, betas=(0.9, 0.999))
    target = (torch.rand(1, 1, 8, 8) * 2 - 1).expand(8, 1, 8, 8)  # one image, revised eight times
    eps = torch.zeros(8, 4)
    before = vae.loss_terms(target, eps)["mse"].mean().item()
    for _ in range(10):
        vae.update(target)
    assert vae.loss_terms(target, eps)["mse"].mean().item() < 0.5 * before


def test_with_k_zero_the_revised_samples_are_the_proposals(tiny):
    trainer = _trainer(tiny, sampler={"steps": 0})
    seen = {}
    init = trainer.initializer
    sample, update = init.sample, init.update
    init.sample = lambda n, **kw: seen.setdefault("proposal", sample(n, **kw))
    init.update = lambda neg: (seen.setdefault("revised", neg.clone()), update(neg))[1]
    trainer.step(_batch(trainer))
    assert torch.equal(seen["proposal"], seen["revised"])
    rev = cooperative.propose_and_revise(trainer.energy, init, trainer.sampler, 4, steps=0)
    assert torch.equal(rev.proposal, rev.revised) and sorted(rev.trajectory) == [0]


# -- checkpoints ----------------------------------------------------------------------------------


def _optimizer_tensors(opt):
    return [t for s in opt.state_dict()["state"].values() for t in s.values()]


def test_checkpoint_round_trip_restores_both_models_and_both_optimisers(tiny):
    trainer = _trainer(tiny, training={"iterations": 2})
    trainer.fit()
    ckpt = next((trainer.run_dir / "checkpoints").iterdir())
    assert (ckpt / "initializer_optimizer.pt").is_file() and (ckpt / "optimizer.pt").is_file()
    fresh = _trainer(tiny, training={"iterations": 2})
    assert not torch.equal(_flat(fresh.initializer), _flat(trainer.initializer))
    fresh.resume()
    assert fresh.iteration == 2
    assert torch.equal(_flat(fresh.energy), _flat(trainer.energy))
    assert torch.equal(_flat(fresh.initializer), _flat(trainer.initializer))
    for mine, theirs in ((fresh.optimizer, trainer.optimizer), (fresh.initializer.optimizer, trainer.initializer.optimizer)):
        a, b = _optimizer_tensors(mine), _optimizer_tensors(theirs)
        assert a and len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_resume_continues_the_same_run(tiny):
    straight = _trainer(tiny, training={"iterations": 4})
    straight.fit()
    first = _trainer(tiny, training={"iterations": 2}, output={"dir": str(straight.run_dir) + "-resumed"})
    first.fit()
    second = _trainer(tiny, training={"iterations": 4}, output={"dir": str(first.run_dir)})
    second.fit(resume=True)
    assert second.iteration == 4
    assert torch.allclose(_flat(second.energy), _flat(straight.energy), atol=1e-6)
    assert torch.allclose(_flat(second.initializer), _flat(straight.initializer), atol=1e-6)


# -- generation -------------------------------------------------------------------------------------


def test_interpolation_ends_at_the_two_latents():
    torch.manual_seed(1)
    vae = VAEInitializer((1, 8, 8), latent_dim=4, nf=4).eval()  # as load_trained hands it out: per-sample decoding
    energy = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1), torch.nn.Flatten(0))
    torch.manual_seed(2)
    z1, z2 = vae.sample_latent(2), vae.sample_latent(2)
    torch.manual_seed(2)
    rho, x0, xk = cooperative.interpolate(energy, vae, LangevinSampler(steps=3, noise=0.1), pairs=2, points=5)
    assert torch.allclose(rho, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    with torch.no_grad():
        assert torch.allclose(x0[:, 0], vae.decode(z2), atol=1e-6) and torch.allclose(x0[:, -1], vae.decode(z1), atol=1e-6)
    # a linear energy has a constant gradient, so with one noise draw per row
    # every point of a row moves by the same amount
    moved = xk - x0
    assert torch.allclose(moved, moved[:, :1].expand_as(moved), atol=1e-5)


def test_cooperative_sample_cli(tiny, tmp_path, capsys):
    from ebmkit.cli import main

    trainer = _trainer(tiny, training={"iterations": 2})
    trainer.fit()
    out = tmp_path / "gen"
    assert main(["cooperative-sample", str(trainer.run_dir), "--out", str(out), "--n", "4", "--record", "0,2,5",
                 "--strip", "3", "--pairs", "2", "--points", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strip_steps"] == [0, 2, 5] and summary["steps"] == 5
    assert {p.name for p in out.iterdir()} == {"proposal.png", "revised.png", "revision-strip.png", "interpolation.png",
                                               "summary.json"}
    assert main(["cooperative-sample", str(trainer.run_dir), "--out", str(out), "--steps", "0", "--n", "4"]) == 0
    assert json.loads((out / "summary.json").read_text())["mean_abs_revision"] == 0.0


def test_cooperative_sample_needs_a_latent_initializer(tiny, capsys):
    from ebmkit.cli import main

    trainer = Trainer(build_experiment(parse_config(tiny(training={"iterations": 1}))))
    trainer.fit()
    assert main(["cooperative-sample", str(trainer.run_dir), "--out", str(trainer.run_dir / "gen")]) == 2
    assert "no latent space" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["cooperative-digits-cpu", "cooperative-mnist", "cooperative-fashion-mnist",
                                    "cooperative-cifar10"])
def test_cooperative_presets_are_valid(preset):
    from ebmkit.cli import resolve_config_path
    from ebmkit.config import load_config

    cfg = load_config(resolve_config_path(preset))
    assert cfg.initializer.name == "vae" and cfg.sampler.params["steps"] > 0


def test_benchmark_table_finds_the_k_each_model_needs():
    from benchmarks.cooperative import CooperativeSettings, build_tables

    s = CooperativeSettings(noise_steps=20)
    trained = {"noise": {"k_train": 20, "iterations": 10, "cpu_seconds": 1.0},
               "cooperative": {"k_train": 10, "iterations": 12, "cpu_seconds": 1.0}}
    ev = lambda m, k, fid: {"method": m, "k": k, "fid": fid, "kid": 0.1, "floor_fid": 5.0, "floor_kid": 0.0,  # noqa: E731
                            "sample_cpu_ms_per_image": 1.0}
    evals = [ev("noise", 10, 90.0), ev("noise", 20, 60.0), ev("noise", 40, 55.0),
             ev("cooperative", 0, 80.0), ev("cooperative", 2, 58.0), ev("cooperative", 5, 50.0)]
    fid_vs_k, need = build_tables(s, trained, evals)
    assert len(fid_vs_k.rows) == 6
    key = "smallest K with FID <= 60.00"
    assert [(r["at K"], r["best FID"], r[key]) for r in need.rows] == [(40, 55.0, 20), (5, 50.0, 2)]


@pytest.mark.slow
def test_the_digits_preset_trains_and_samples_end_to_end(tmp_path, capsys):
    from ebmkit.cli import main

    run = tmp_path / "coop"
    assert main(["train", "cooperative-digits-cpu", "--out", str(run), "--iterations", "2", "--set", "training.batch_size=16",
                 "--set", "training.progress=false", "--set", "output.grid_size=4"]) == 0
    assert (run / "checkpoints" / "iter-00000002" / "initializer_optimizer.pt").is_file()
    assert main(["cooperative-sample", str(run), "--out", str(tmp_path / "gen"), "--n", "4", "--pairs", "1",
                 "--points", "3", "--strip", "2"]) == 0
    assert (tmp_path / "gen" / "revision-strip.png").is_file()


def test_an_initializer_keeping_an_optimizer_has_its_state_saved_by_default():
    from torch import nn

    from ebmkit import InitialDistribution, create_initializer

    class Learner(InitialDistribution):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))
            self.optimizer = torch.optim.Adam([self.w], lr=0.1)

    a = Learner()
    a.w.grad = torch.tensor([1.0, -2.0, 3.0])
    a.optimizer.step()
    state = a.optimizer_state_dict()
    b = Learner()
    b.load_optimizer_state_dict(state)
    assert torch.allclose(b.optimizer.state_dict()["state"][0]["exp_avg"], torch.tensor([0.1, -0.2, 0.3]))  # (1 - beta1) g
    assert create_initializer("uniform", (2,)).optimizer_state_dict() is None


def test_writing_a_grid_leaves_the_vae_untouched(tiny):
    """A grid is an observation: drawing it must not move the proposal's batch-norm statistics."""
    trainer = _trainer(tiny)
    trainer.step(_batch(trainer))
    before = {k: v.clone() for k, v in trainer.initializer.state_dict().items()}
    assert trainer.write_samples("grid.png").is_file()
    after = trainer.initializer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and trainer.initializer.training
