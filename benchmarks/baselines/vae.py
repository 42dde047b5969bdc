"""A convolutional VAE (Kingma & Welling 2014) with DCGAN-style encoder and decoder.

Gaussian decoder with a fixed standard deviation ``recon_sd`` (on the [-1, 1]
scale), standard-normal prior, loss = mean over the batch of
sum ||x - x_hat||^2 / (2 recon_sd^2) + KL(q(z|x) || N(0, I)).
Reconstruction: encoder mean -> decoder.  Samples: z ~ N(0, I) -> decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .nets import DownNet, UpNet, dcgan_init


class VAE(nn.Module):
    def __init__(self, shape: tuple[int, int, int], nz: int = 64, nf: int = 32, recon_sd: float = 0.2,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__()
        c, h, w = shape
        if h != w:
            raise ValueError(f"the VAE baseline needs square images, got {h}x{w}")
        self.shape, self.nz, self.recon_sd = tuple(shape), nz, recon_sd
        self.encoder = DownNet(c, h, nf)
        self.to_latent = nn.Linear(self.encoder.out_channels * 16, 2 * nz)
        self.decoder = UpNet(nz, c, h, nf)
        dcgan_init(self)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr, betas=betas)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.to_latent(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_hat = self.decoder(z)
        recon = (x - x_hat).pow(2).flatten(1).sum(1) / (2 * self.recon_sd**2)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        loss = (recon + kl).mean()
        return loss, {"loss": loss.item(), "recon": recon.mean().item(), "kl": kl.mean().item()}

    def train_step(self, x: Tensor) -> dict[str, float]:
        self.train()
        loss, logs = self.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logs

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        self.eval()
        return self.decoder(torch.randn(n, self.nz, device=self.device))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Encoder mean -> decoder."""
        self.eval()
        return self.decoder(self.encode(x)[0])
