"""DCGAN (Radford et al. 2016): non-saturating GAN loss, Adam(2e-4, 0.5, 0.999).

Reconstruction follows section 5.3 of the short-run paper: the generator has
no encoder, so z is inferred by Langevin dynamics on its posterior,

    U(z | x) = ||x - G(z)||^2 / (2 s^2) + ||z||^2 / 2,

run by ebmkit's own ``langevin`` sampler (coupled form, step eps^2/2, noise
eps) from z ~ N(0, I); the reconstruction is G(z) at the last step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nets import DownNet, UpNet, dcgan_init


class LatentPosterior(nn.Module):
    """U(z | x) as an ebmkit-style energy of z: (B, nz) -> (B,)."""

    def __init__(self, generator: nn.Module, x: Tensor, sd: float) -> None:
        super().__init__()
        self.generator, self.sd = generator, sd
        self.register_buffer("x", x)

    def forward(self, z: Tensor) -> Tensor:
        err = (self.x - self.generator(z)).pow(2).flatten(1).sum(1)
        return err / (2 * self.sd**2) + 0.5 * z.pow(2).sum(1)


class DCGAN(nn.Module):
    def __init__(self, shape: tuple[int, int, int], nz: int = 64, nf: int = 32, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), infer_steps: int = 200, infer_epsilon: float = 0.05,
                 infer_sd: float = 0.3) -> None:
        super().__init__()
        c, h, w = shape
        if h != w:
            raise ValueError(f"the DCGAN baseline needs square images, got {h}x{w}")
        self.shape, self.nz = tuple(shape), nz
        self.generator = UpNet(nz, c, h, nf)
        trunk = DownNet(c, h, nf)
        self.discriminator = nn.Sequential(trunk, nn.Conv2d(trunk.out_channels, 1, 4, 1, 0))
        dcgan_init(self)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        self.infer_steps, self.infer_epsilon, self.infer_sd = infer_steps, infer_epsilon, infer_sd

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train_step(self, x: Tensor) -> dict[str, float]:
        self.train()
        b = x.shape[0]
        fake = self.generator(torch.randn(b, self.nz, device=x.device))
        d_real = self.discriminator(x).flatten()
        d_fake = self.discriminator(fake.detach()).flatten()
        loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
            F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        d_gen = self.discriminator(fake).flatten()
        loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))  # non-saturating
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        self.eval()
        return self.generator(torch.randn(n, self.nz, device=self.device))

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(z) with z inferred by ``infer_steps`` Langevin steps on U(z | x)."""
        from ebmkit import create_sampler

        self.eval()
        sampler = create_sampler("langevin", steps=self.infer_steps, epsilon=self.infer_epsilon)
        posterior = LatentPosterior(self.generator, x.detach(), self.infer_sd)
        z0 = torch.randn(x.shape[0], self.nz, device=x.device)
        z = sampler.run(posterior, z0).x
        with torch.no_grad():
            return self.generator(z)
