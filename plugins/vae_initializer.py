"""A VAE as the chain's initial distribution: the amortised sampler of
cooperative EBM + VAE learning (Xie, Zheng, Li, AAAI 2021, "Learning
Energy-Based Model with Variational Auto-Encoder as Amortized Sampler").

Per training iteration the trainer already does the paper's steps in order::

    x0   = initializer.sample(B)           # proposal g_alpha(z), z ~ N(0, I)
    x~   = sampler.run(energy, x0).x       # K Langevin steps revise it
    ...                                    # EBM update: data vs x~
    initializer.update(x~)                 # VAE update on x~ (this module)

The VAE update -- "variational MCMC teaching" -- minimises on the revised
samples x~, with the encoder's reparameterised latent z = mu + s * eps,

    loss = mean_batch [ ||x~ - g(z)||^2 / (2 sd^2) + D/2 log(2 pi sd^2)
                        + gamma * KL(N(mu, s^2) || N(0, I)) ]

which is the negative ELBO of a Gaussian decoder with fixed ``decoder_sd``
when ``kl_weight`` (gamma) is 1.  The VAE has its own optimiser; its state is
saved in the trainer's checkpoint (:meth:`optimizer_state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

import ebmkit
from ebmkit import BuildContext, InitialDistribution
from ebmkit.distributed import average_buffers, average_gradients


class VAELearningParams(ebmkit.Params):
    """How a VAE proposal learns from the revised samples (shared by ``vae`` and ``conditional-vae``)."""

    kl_weight: float = Field(1.0, ge=0.0, description="gamma, the weight of the KL term (1: the exact negative ELBO)")
    kl_warmup: NonNegativeInt = Field(0, description="iterations over which gamma rises linearly from 0 to kl_weight "
                                                     "(KL annealing, against a decoder that ignores z; 0: no warm-up)")
    decoder_sd: PositiveFloat = Field(0.1, description="sd of the Gaussian decoder p(x|z); smaller weighs reconstruction more")
    lr: PositiveFloat = Field(2e-4, description="Adam learning rate of the VAE")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of the VAE")
    updates: PositiveInt = Field(1, description="VAE steps on each batch of revised samples")


class VAEParams(VAELearningParams):
    latent_dim: PositiveInt = Field(64, description="size of z ~ N(0, I)")
    nf: PositiveInt = Field(32, description="base width of the conv encoder / decoder")
    hidden: PositiveInt = Field(256, description="width of the MLP encoder / decoder (vector data)")
    arch: Literal["auto", "conv", "mlp"] = Field("auto", description="auto: conv for images (C, H, W), mlp for vectors")
    batch_norm: bool = Field(True, description="batch norm in the conv decoder (DCGAN-style; keeps proposals diverse)")


class KLWarmup:
    """gamma = kl_weight * min(1, (iteration + 1) / kl_warmup), set by the
    trainer before each iteration (so a resumed run continues the ramp)."""

    kl_target: float
    kl_warmup: int
    kl_weight: float

    def set_progress(self, iteration: int, total: int) -> dict[str, float]:
        if not self.kl_warmup:
            return {}
        self.kl_weight = self.kl_target * min(1.0, (iteration + 1) / self.kl_warmup)
        return {"vae_kl_weight": self.kl_weight}


def elbo_terms(x: Tensor, x_hat: Tensor, mu: Tensor, logvar: Tensor, decoder_sd: float, kl_weight: float) -> dict[str, Tensor]:
    """Per-sample Gaussian reconstruction NLL ``recon`` (decoder sd ``decoder_sd``)
    and ``kl`` = KL(N(mu, e^logvar) || N(0, I)), the per-pixel ``mse``, and the
    batch ``loss`` = mean(recon + kl_weight * kl)."""
    d = x[0].numel()
    sq = (x - x_hat).pow(2).flatten(1).sum(1)
    recon = sq / (2 * decoder_sd**2) + 0.5 * d * math.log(2 * math.pi * decoder_sd**2)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return {"loss": (recon + kl_weight * kl).mean(), "recon": recon, "kl": kl, "mse": sq / d}


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, loss_terms: Callable[[], dict[str, Tensor]],
        updates: int) -> dict[str, float]:
    """``updates`` optimiser steps on ``loss_terms()["loss"]``; the last step's
    numbers for the log.  In a data-parallel run the gradients, and afterwards
    the batch-norm statistics, are averaged over processes, so every process
    keeps the same model."""
    with torch.enable_grad():
        for _ in range(updates):
            terms = loss_terms()
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            average_gradients(model)
            optimizer.step()
    average_buffers(model)
    return {"vae_loss": terms["loss"].item(), "vae_kl": terms["kl"].mean().item(), "vae_mse": terms["mse"].mean().item()}


def halvings(h: int, w: int) -> int:
    """How many stride-2 stages take (h, w) down to a base of at most 7 pixels
    (16 -> 4, 28 -> 7, 32 -> 4, 64 -> 4)."""
    n = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) > 7:
        h, w, n = h // 2, w // 2, n + 1
    return n


class ConvVAE(nn.Module):
    """DCGAN-shaped encoder and decoder: 3x3 conv (nf), then stride-2 stages
    doubling the width up to 8*nf down to a 4..7-pixel base; the decoder
    mirrors it and ends in tanh (data live in [-1, 1]).

    With ``batch_norm`` the decoder normalises its feature maps over the
    batch (as DCGAN's generator does).  Without it the cooperative loop
    tends to collapse: a fresh decoder maps every z to nearly the same image,
    the revised samples are then nearly equal, and the VAE learns to ignore z.
    During training proposals use batch statistics; a trained VAE loaded
    for generation (``load_trained``) is in eval mode and uses the running
    statistics, so each proposal depends on its own z only."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, nf: int, batch_norm: bool = True):
        super().__init__()
        c, h, w = shape
        n = halvings(h, w)
        self.base = (h >> n, w >> n)
        widths = [min(nf * 2**i, 8 * nf) for i in range(n + 1)]  # widths[i]: channels at resolution / 2^i
        enc: list[nn.Module] = [nn.Conv2d(c, nf, 3, 1, 1), nn.LeakyReLU(0.2)]
        for i in range(n):
            enc += [nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1), nn.LeakyReLU(0.2)]
        flat = widths[-1] * self.base[0] * self.base[1]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, 2 * latent_dim))
        norm = (lambda ch: nn.BatchNorm2d(ch)) if batch_norm else (lambda ch: nn.Identity())  # noqa: E731
        self.project = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = [norm(widths[-1]), nn.ReLU()]
        for i in reversed(range(n)):
            dec += [nn.ConvTranspose2d(widths[i + 1], widths[i], 4, 2, 1), norm(widths[i]), nn.ReLU()]
        self.decoder = nn.Sequential(*dec, nn.Conv2d(nf, c, 3, 1, 1), nn.Tanh())
        self.top = widths[-1]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.project(z).view(z.shape[0], self.top, *self.base))


class MLPVAE(nn.Module):
    """Two hidden layers each way, for vector data (2-D toys); linear output."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, hidden: int):
        super().__init__()
        d = math.prod(shape)
        self.shape = tuple(shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, d))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).view(z.shape[0], *self.shape)


class VAEInitializer(KLWarmup, InitialDistribution):
    """VAE proposal g_alpha(z), z ~ N(0, I), learnt from the revised samples."""

    Params = VAEParams

    def __init__(self, shape: tuple[int, ...], latent_dim: int = 64, nf: int = 32, hidden: int = 256,
                 arch: str = "auto", batch_norm: bool = True, kl_weight: float = 1.0, decoder_sd: float = 0.1, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), updates: int = 1, kl_warmup: int = 0):
        super().__init__()
        self.shape, self.latent_dim = tuple(shape), latent_dim
        self.kl_weight, self.decoder_sd, self.updates = kl_weight, decoder_sd, updates
        self.kl_target, self.kl_warmup = kl_weight, kl_warmup
        if arch == "auto":
            arch = "conv" if len(self.shape) == 3 else "mlp"
        if arch == "conv" and len(self.shape) != 3:
            raise ValueError(f"vae arch 'conv' needs image data (C, H, W), got shape {self.shape}; use arch = 'mlp'")
        self.vae = ConvVAE(self.shape, latent_dim, nf, batch_norm) if arch == "conv" else MLPVAE(self.shape, latent_dim, hidden)
        # Its own optimiser: the VAE learns in update(), apart from the energy's; as self.optimizer
        # it is saved in checkpoints (InitialDistribution.optimizer_state_dict).
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr, betas=tuple(betas))

    @classmethod
    def from_params(cls, params: VAEParams, context: BuildContext) -> "VAEInitializer":
        return cls(context.require_shape("vae"), **params.model_dump())

    # -- the latent-variable interface (ebmkit.generation.cooperative uses these) --------------------
    def sample_latent(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of pi_beta(z | x)."""
        return self.vae.encode(x)

    @torch.no_grad()
    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        return self.decode(self.sample_latent(n))

    # -- learning -----------------------------------------------------------------------------
    def loss_terms(self, x: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
        """Per-sample reconstruction NLL and KL, and the batch loss
        mean(recon + gamma * KL).  ``eps`` fixes the reparameterisation noise."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if eps is None else eps
        x_hat = self.decode(mu + (0.5 * logvar).exp() * eps)
        return elbo_terms(x, x_hat, mu, logvar, self.decoder_sd, self.kl_weight)

    def negative_elbo(self, x: Tensor, eps: Tensor | None = None) -> Tensor:
        """Per-sample -ELBO (KL weight 1), a single-sample estimate."""
        t = self.loss_terms(x, eps)
        return t["recon"] + t["kl"]

    def update(self, samples: Tensor) -> dict[str, float]:
        """Variational MCMC teaching: fit the VAE to the revised samples."""
        x = samples.detach()
        return fit(self.vae, self.optimizer, lambda: self.loss_terms(x), self.updates)


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"vae": VAEInitializer}
