"""The VAE and DCGAN baselines of the benchmark harness."""

import pytest
import torch

from benchmarks.baselines import DCGAN, VAE
from benchmarks.baselines.dcgan import LatentPosterior
from benchmarks.baselines.nets import DownNet, UpNet


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_networks_fit_the_image_size(size):
    up, down = UpNet(4, 3, size, 4), DownNet(3, size, 4)
    x = up(torch.randn(2, 4))
    assert x.shape == (2, 3, size, size) and x.abs().max() <= 1
    assert down(x).shape[-2:] == (4, 4)


def test_non_power_of_two_size_is_refused():
    with pytest.raises(ValueError, match="power-of-two"):
        VAE((1, 12, 12))


def test_vae_learns_to_reconstruct():
    from ebmkit import create_dataset

    data = create_dataset("digits", image_size=8).load("train").data[:256]
    vae = VAE((1, 8, 8), nz=8, nf=8, recon_sd=0.2, lr=3e-3)
    before = (vae.reconstruct(data) - data).pow(2).mean().item()
    for i in range(30):
        logs = vae.train_step(data[(i * 32) % 256 :][:32])
    after = (vae.reconstruct(data) - data).pow(2).mean().item()
    assert set(logs) == {"loss", "recon", "kl"}
    assert after < 0.7 * before
    assert vae.sample(5).shape == (5, 1, 8, 8)


def test_latent_posterior_is_the_energy_by_hand():
    g = UpNet(3, 1, 8, 4).eval()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    z = torch.randn(2, 3)
    u = LatentPosterior(g, x, sd=0.5)(z)
    by_hand = (x - g(z)).pow(2).flatten(1).sum(1) / (2 * 0.25) + 0.5 * z.pow(2).sum(1)
    assert torch.allclose(u, by_hand)


def test_dcgan_langevin_inference_recovers_generated_images():
    gan = DCGAN((1, 8, 8), nz=4, nf=8, infer_steps=150, infer_epsilon=0.05, infer_sd=0.1)
    for m in gan.generator.modules():  # weights large enough that G(z) varies visibly with z
        if isinstance(m, torch.nn.ConvTranspose2d):
            torch.nn.init.normal_(m.weight, 0.0, 0.3)
    gan.generator.eval()
    with torch.no_grad():
        x = gan.generator(torch.randn(16, 4))  # images the generator can make exactly
        prior_guess = gan.generator(torch.randn(16, 4))
    rec = gan.reconstruct(x)
    assert (rec - x).pow(2).mean() < 0.25 * (prior_guess - x).pow(2).mean()
    logs = gan.train_step(torch.rand(8, 1, 8, 8) * 2 - 1)
    assert set(logs) == {"loss_d", "loss_g"} and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
