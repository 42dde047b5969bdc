"""The cooperative form of conditional learning: a conditional VAE proposes
the chain starts of a conditional EBM (plugins/conditional_vae.py)."""

import json
import math

import pytest
import torch

from ebmkit import create, create_initializer
from ebmkit.config import parse_config
from ebmkit.errors import ConfigError
from ebmkit.experiment import build_experiment, load_dataset, load_trained
from ebmkit.generation.inpainting import ebm_fill, mean_fill, missing_psnr
from ebmkit.training.loop import Trainer
from ebmkit_plugins.conditional_vae import ConditionalVAEInit

CENTRE = {"name": "masked", "mask": {"name": "centre", "fraction": 0.5}, "fill": "zeros"}
CVAE = {"name": "conditional-vae", "condition": CENTRE, "latent_dim": 4, "nf": 4, "lr": 1e-3}


def _cvae(shape=(1, 8, 8), **kw):
    return create_initializer("conditional-vae", shape, **{**{k: v for k, v in CVAE.items() if k != "name"}, **kw})


def _config(tiny, initializer=CVAE, **sections):
    cfg = tiny(energy={"name": "conditional-convnet", "nf": 8}, initializer=initializer, **sections)
    cfg["sampler"] = {"name": "clamped", "inner": {"name": "langevin", "steps": 3, "step_size": 1.0, "noise": 0.01}}
    return parse_config(cfg)


def _flat(module):
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def _digits(n=16, size=8):
    from ebmkit import create_dataset

    ds = create_dataset("digits", image_size=size).load("train")
    return torch.stack([ds[i] for i in range(n)])


# -- the model ---------------------------------------------------------------------------------


def test_conditional_elbo_matches_torch_distributions():
    init = _cvae(decoder_sd=0.2)
    x = _digits(5)
    init.sample(5, data=x)
    y = init.condition.tensor
    assert y.shape == (5, 2, 8, 8)  # the masked image and the observed mask
    eps = torch.randn(5, 4)
    with torch.no_grad():
        mu, logvar = init.vae.encode(x, y)
        std = (0.5 * logvar).exp()
        x_hat = init.vae.decode(mu + std * eps, y)
        nll = -torch.distributions.Normal(x_hat, 0.2).log_prob(x).flatten(1).sum(1)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, std), torch.distributions.Normal(0.0, 1.0)).sum(1)
        assert torch.allclose(init.negative_elbo(x, y, eps), nll + kl, rtol=1e-5, atol=1e-3)
        terms = init.loss_terms(x, y, eps)
    assert terms["loss"].item() == pytest.approx((nll + kl).mean().item(), rel=1e-5)  # gamma = 1: the exact -ELBO
    assert torch.allclose(terms["mse"], (x - x_hat).pow(2).flatten(1).mean(1), atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 32, 32)])
def test_proposals_keep_the_observed_pixels_and_depend_on_z(shape):
    init = _cvae(shape).eval()
    x = torch.rand(4, *shape) * 2 - 1
    z = init.start(x)
    cond = init.condition
    assert z.shape == x.shape and z.abs().max() <= 1.0
    assert torch.equal(z[cond.observed], x[cond.observed])
    missing = ~cond.observed
    a, b = init.propose(cond, torch.zeros(4, 4)), init.propose(cond, torch.ones(4, 4))
    assert torch.equal(a[~missing], b[~missing]) and not torch.allclose(a[missing], b[missing])
    assert torch.equal(init.propose(cond, torch.zeros(4, 4)), a)  # eval mode: a proposal is a function of (z, y)


def test_the_cvae_learns_from_the_revised_samples():
    """update() fits g(., y) to the samples it is given for the batch's condition."""
    init = _cvae(lr=1e-2, betas=(0.9, 0.999))
    x = _digits(8)
    init.sample(8, data=x)
    y = init.condition.tensor
    eps = torch.zeros(8, 4)
    before = init.loss_terms(x, y, eps)["mse"].mean().item()
    for _ in range(15):
        logs = init.update(x)
    assert set(logs) == {"vae_loss", "vae_kl", "vae_mse"}
    assert init.loss_terms(x, y, eps)["mse"].mean().item() < 0.5 * before


def test_update_needs_the_batch_it_proposed_for():
    init = _cvae()
    with pytest.raises(ConfigError, match="call sample"):
        init.update(torch.zeros(4, 1, 8, 8))
    init.sample(4, data=_digits(4))
    with pytest.raises(ConfigError, match="got 3 revised samples but holds a condition for 4 rows"):
        init.update(torch.zeros(3, 1, 8, 8))


def test_bad_conditions_are_named(tiny):
    with pytest.raises(ConfigError, match="conditional initializer"):
        _cvae(condition={"name": "uniform"})
    with pytest.raises(ConfigError, match="initializer.condition"):
        build_experiment(parse_config(tiny(initializer={"name": "conditional-vae", "condition": {"name": "nope"}})))
    with pytest.raises(ConfigError, match="initializer.condition"):
        parse_config(tiny(initializer={"name": "conditional-vae", "condition": {"mask": "centre"}}))
    with pytest.raises(ConfigError, match="needs images"):
        ConditionalVAEInit((2,), create_initializer("masked", (1, 8, 8)))


# -- training, checkpoints, inpainting ----------------------------------------------------------------


def test_one_cooperative_iteration_changes_both_models_and_teaches_clamped_samples(tiny):
    trainer = Trainer(build_experiment(_config(tiny)))
    init = trainer.initializer
    seen = {}
    update = init.update
    init.update = lambda neg: (seen.setdefault("revised", neg.clone()), update(neg))[1]
    energy0, vae0 = _flat(trainer.energy), _flat(init)
    x = _digits(16)
    logs = trainer.step(x)
    assert not torch.equal(energy0, _flat(trainer.energy)) and not torch.equal(vae0, _flat(init))
    assert {"vae_loss", "vae_kl", "vae_mse", "gap"} <= set(logs)
    observed = init.condition.observed
    assert torch.equal(seen["revised"][observed], x[observed])  # the cVAE learns from clamped chains


def test_checkpoint_resume_and_inpaint_with_the_cooperative_model(tiny, tmp_path, capsys):
    from ebmkit.cli import main

    trainer = Trainer(build_experiment(_config(tiny, training={"iterations": 2})))
    trainer.fit()
    fresh = Trainer(build_experiment(_config(tiny, training={"iterations": 2})))
    fresh.resume()
    assert torch.equal(_flat(fresh.initializer), _flat(trainer.initializer))
    mine = [t for s in fresh.initializer.optimizer.state_dict()["state"].values() for t in s.values()]
    theirs = [t for s in trainer.initializer.optimizer.state_dict()["state"].values() for t in s.values()]
    assert mine and all(torch.equal(a, b) for a, b in zip(mine, theirs))

    exp = load_trained(trainer.run_dir)
    x = _digits(5)
    missing = create("mask", "half").sample(5, 8, 8)
    filled = ebm_fill(exp.energy, exp.sampler, exp.initializer, x, missing, samples=2)
    assert filled.shape == (2, 5, 1, 8, 8)
    assert torch.equal(filled[:, ~missing.expand_as(x)], x[~missing.expand_as(x)].expand(2, -1))

    assert main(["inpaint", str(trainer.run_dir), "--n", "6", "--samples", "1", "--out", str(tmp_path / "inp")]) == 0
    scores = json.loads(capsys.readouterr().out)["scores"]
    assert set(scores) == {"ebm", "proposal", "mean_fill", "nearest_fill"}
    assert scores["proposal"] != scores["ebm"]  # K = 0 vs the revised chains


def test_generator_inpaints_reproducibly_per_seed(tiny):
    from ebmkit.generation.generator import ShortRunGenerator

    trainer = Trainer(build_experiment(_config(tiny, training={"iterations": 2})))
    trainer.fit()
    gen = ShortRunGenerator.from_checkpoint(trainer.run_dir)
    x = _digits(6)
    missing = create("mask", "centre", fraction=0.5).sample(1, 8, 8)
    a = gen.inpaint(x, missing, seeds=[0, 1])
    assert a.shape == (2, 6, 1, 8, 8)
    assert torch.equal(a, gen.inpaint(x, missing, seeds=[0, 1]))  # a seed fixes z and the chain noise
    assert not torch.equal(a[0], a[1])
    observed = ~missing.expand_as(x)
    assert torch.equal(a[:, observed], x[observed].expand(2, -1))
    with pytest.raises(ConfigError, match="does not fit"):
        gen.inpaint(x, torch.zeros(6, 1, 4, 4, dtype=torch.bool))


def test_paired_condition(tmp_path, tiny):
    from test_conditional import _paired_folders

    _paired_folders(tmp_path / "pairs")
    cfg = tiny(data={"name": "paired-folders", "root": str(tmp_path / "pairs"), "image_size": 8},
               energy={"name": "conditional-convnet", "nf": 8, "target_channels": 3},
               initializer={"name": "conditional-vae", "condition": {"name": "paired", "target_channels": 3},
                            "latent_dim": 4, "nf": 4},
               training={"iterations": 2})
    trainer = Trainer(build_experiment(parse_config(cfg)))
    assert trainer.initializer.target_shape == (3, 8, 8)
    last = trainer.fit()
    assert math.isfinite(last["gap"]) and math.isfinite(last["vae_loss"])
    assert trainer.sample(4).shape == (4, 3, 8, 8)


def test_cooperative_inpaint_preset_is_valid():
    from ebmkit.cli import resolve_config_path
    from ebmkit.config import load_config

    cfg = load_config(resolve_config_path("cooperative-inpaint-digits-cpu"))
    assert (cfg.energy.name, cfg.initializer.name, cfg.sampler.name) == ("conditional-convnet", "conditional-vae", "clamped")
    exp = build_experiment(cfg)
    assert exp.initializer.target_shape == (1, 16, 16) and exp.initializer.masks is not None


@pytest.mark.slow
def test_short_cooperative_run_beats_mean_fill(tiny):
    """digits 8x8, centre holes, 200 iterations; the revised completions and the
    cVAE's proposals alone both beat mean fill over the missing pixels."""
    cfg = tiny(energy={"name": "conditional-convnet", "nf": 16},
               initializer={**CVAE, "nf": 16, "latent_dim": 8},
               optimizer={"name": "adam", "lr": 3e-3, "betas": [0.5, 0.999]},
               training={"iterations": 200, "batch_size": 16})
    cfg["sampler"] = {"name": "clamped", "inner": {"name": "langevin", "steps": 10, "step_size": 2.0, "noise": 0.01}}
    cfg = parse_config(cfg)
    exp = build_experiment(cfg)
    Trainer(exp).fit()
    test, _ = load_dataset(cfg, "test")
    x = test.data[:128]
    missing = exp.initializer.masks.sample(len(x), 8, 8)
    energy, init = exp.energy.eval(), exp.initializer.eval()
    revised = missing_psnr(x, ebm_fill(energy, exp.sampler, init, x, missing, samples=1)[0], missing)
    proposal = missing_psnr(x, ebm_fill(energy, exp.sampler, init, x, missing, samples=1, steps=0)[0], missing)
    mean = missing_psnr(x, mean_fill(exp.dataset.data, x, missing), missing)
    result = json.dumps({"revised": revised, "proposal": proposal, "mean": mean})
    assert revised > mean + 0.3 and proposal > mean + 0.3, result


def test_kl_warmup_ramps_gamma_and_the_loss_uses_it(tiny):
    init = _cvae(kl_weight=0.5, kl_warmup=4)
    assert [init.set_progress(i, 100)["vae_kl_weight"] for i in (0, 1, 3, 10)] == [0.125, 0.25, 0.5, 0.5]
    x = _digits(4)
    init.sample(4, data=x)
    y, eps = init.condition.tensor, torch.randn(4, 4)
    init.set_progress(0, 100)
    with torch.no_grad():
        t = init.loss_terms(x, y, eps)
    assert t["loss"].item() == pytest.approx((t["recon"] + 0.125 * t["kl"]).mean().item(), rel=1e-6)
    assert _cvae().set_progress(0, 100) == {}  # no warm-up: nothing changes, nothing logged
    # through the trainer: the weight is logged per iteration, and a resumed run continues the ramp
    warm = {**CVAE, "kl_weight": 1.0, "kl_warmup": 8}
    trainer = Trainer(build_experiment(_config(tiny, initializer=warm, training={"iterations": 3})))
    trainer.fit()
    Trainer(build_experiment(_config(tiny, initializer=warm, training={"iterations": 5}))).fit(resume=True)
    rows = (trainer.run_dir / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("vae_kl_weight")
    assert [float(r.split(",")[column]) for r in rows[1:]] == [0.125, 0.25, 0.375, 0.5, 0.625]
