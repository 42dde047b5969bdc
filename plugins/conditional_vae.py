"""A conditional VAE as the chain's initial distribution: the cooperative
form of conditional learning (image recovery with an EBM and a VAE as its
amortised sampler, Xie, Zheng, Li, AAAI 2021, section on image recovery).

Another conditional initializer (``condition``: ``masked`` for inpainting,
``paired`` for paired images) draws the batch's condition y; this one then
proposes the chain start from a conditional generator instead of noise::

    y      = condition drawn for the batch          # masked image + mask, or the paired image
    x0     = clamp(g(z, y)), z ~ N(0, I)            # observed pixels kept exactly
    x~     = sampler.run(energy bound to y, x0).x   # K Langevin steps revise the proposal
    ...                                             # EBM update: U(data | y) vs U(x~ | y)
    update(x~)                                      # cVAE update on (x~, y), this module

The update minimises the conditional negative ELBO on the revised samples,
with the encoder's reparameterised z ~ q(z | x~, y),

    loss = mean_batch [ ||x~ - g(z, y)||^2 / (2 sd^2) + D/2 log(2 pi sd^2)
                        + gamma * KL(q(z | x~, y) || N(0, I)) ]

The generator g is a small U-Net on y with z entering at the bottleneck, so
that its output lines up with the observed pixels it has to continue.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn

import ebmkit
from ebmkit import BuildContext
from ebmkit.conditional import Condition, ConditionalInitializer
from ebmkit.errors import ConfigError
from ebmkit.interfaces import component_spec
from ebmkit_plugins.vae_initializer import KLWarmup, VAELearningParams, elbo_terms, fit, halvings


class ConditionalVAEParams(VAELearningParams):
    condition: dict[str, Any] = Field(
        default_factory=lambda: {"name": "masked"},
        description="the conditional initializer that draws y: {name = 'masked', mask = {name = 'centre'}} "
                    "or {name = 'paired', target_channels = 3}")
    latent_dim: PositiveInt = Field(16, description="size of z ~ N(0, I)")
    nf: PositiveInt = Field(32, description="base width of the encoder and the U-Net generator")
    batch_norm: bool = Field(True, description="batch norm in the generator's up path")

    @field_validator("condition", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        return component_spec(v, "give the conditional initializer's name, e.g. condition = {name = 'masked'}")


def _block(cin: int, cout: int, norm: bool) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout) if norm else nn.Identity(), nn.ReLU()]


class ConditionalConvVAE(nn.Module):
    """Encoder q(z | x, y): stride-2 convs on [x, y] to mu, log-variance.
    Generator g(z, y): a U-Net on y -- its down path keeps a feature map per
    resolution, z is projected to the bottleneck map, and the up path joins
    each resolution's features back before the tanh output (data in [-1, 1])."""

    def __init__(self, target: tuple[int, int, int], condition_channels: int, latent_dim: int, nf: int,
                 batch_norm: bool = True):
        super().__init__()
        c, h, w = target
        n = halvings(h, w)
        self.base = (h >> n, w >> n)
        widths = [min(nf * 2**i, 8 * nf) for i in range(n + 1)]
        flat = widths[-1] * self.base[0] * self.base[1]

        def down(cin: int) -> nn.ModuleList:
            stages = [nn.Sequential(nn.Conv2d(cin, nf, 3, 1, 1), nn.LeakyReLU(0.2))]
            stages += [nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1), nn.LeakyReLU(0.2)) for i in range(n)]
            return nn.ModuleList(stages)

        self.encoder = down(c + condition_channels)
        self.posterior = nn.Linear(flat, 2 * latent_dim)
        self.condition_path = down(condition_channels)
        self.project = nn.Linear(latent_dim, flat)
        self.bottleneck = nn.Sequential(*_block(2 * widths[-1], widths[-1], batch_norm))
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[i + 1], widths[i], 4, 2, 1),
                          nn.BatchNorm2d(widths[i]) if batch_norm else nn.Identity(), nn.ReLU())
            for i in reversed(range(n)))
        self.merge = nn.ModuleList(nn.Sequential(*_block(2 * widths[i], widths[i], batch_norm)) for i in reversed(range(n)))
        self.out = nn.Sequential(nn.Conv2d(nf, c, 3, 1, 1), nn.Tanh())
        self.top = widths[-1]

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.cat([x, y], 1)
        for stage in self.encoder:
            h = stage(h)
        mu, logvar = self.posterior(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        skips, h = [], y
        for stage in self.condition_path:
            h = stage(h)
            skips.append(h)
        h = self.bottleneck(torch.cat([skips.pop(), self.project(z).view(z.shape[0], self.top, *self.base)], 1))
        for up, merge in zip(self.up, self.merge):
            h = merge(torch.cat([up(h), skips.pop()], 1))
        return self.out(h)


class ConditionalVAEInit(KLWarmup, ConditionalInitializer):
    """Conditional VAE proposal g(z, y) (inpainting, paired data), learnt from the revised samples."""

    Params = ConditionalVAEParams

    def __init__(self, shape: tuple[int, ...], source: ConditionalInitializer, latent_dim: int = 16, nf: int = 32,
                 batch_norm: bool = True, kl_weight: float = 1.0, decoder_sd: float = 0.1, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), updates: int = 1, kl_warmup: int = 0):
        super().__init__()
        if not isinstance(source, ConditionalInitializer):
            raise ConfigError(f"initializer 'conditional-vae': condition must be a conditional initializer such as "
                              f"'masked' or 'paired', got {type(source).__name__}")
        if len(shape) != 3:
            raise ConfigError(f"initializer 'conditional-vae' needs images (C, H, W), got data shape {tuple(shape)}")
        self.shape, self.source, self.latent_dim = tuple(shape), source, latent_dim
        self.kl_weight, self.decoder_sd, self.updates = kl_weight, decoder_sd, updates
        self.kl_target, self.kl_warmup = kl_weight, kl_warmup
        target, condition_channels = self._probe(source, self.shape)
        self.target_shape = target
        self.vae = ConditionalConvVAE(target, condition_channels, latent_dim, nf, batch_norm)
        # Its own optimiser: the cVAE learns in update(), apart from the energy's; as self.optimizer
        # it is saved in checkpoints (InitialDistribution.optimizer_state_dict).
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr, betas=tuple(betas))

    @staticmethod
    def _probe(source: ConditionalInitializer, shape: tuple[int, ...]) -> tuple[tuple[int, int, int], int]:
        """The target's shape and y's channel count, read off one start drawn
        by the source (under a forked RNG, so building changes no random stream)."""
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            x0 = source.start(torch.zeros(1, *shape))
        cond = source.condition
        if cond is None or cond.tensor.dim() != 4:
            raise ConfigError(f"initializer 'conditional-vae': {type(source).__name__} drew no image condition (B, Cy, H, W)")
        source.condition = None
        return tuple(x0.shape[1:]), int(cond.tensor.shape[1])

    @classmethod
    def from_params(cls, params: ConditionalVAEParams, context: BuildContext) -> "ConditionalVAEInit":
        if params.condition["name"] == "conditional-vae":
            raise ConfigError("initializer.condition: 'conditional-vae' cannot draw its own condition; use 'masked' or 'paired'")
        source = context.build("initializer", params.condition, where="initializer.condition")
        return cls(context.require_shape("conditional-vae"), source, **params.model_dump(exclude={"condition"}))

    # -- proposals ---------------------------------------------------------------------------------
    @property
    def masks(self) -> Any:
        """The source's mask generator (inpainting), for evaluation code that draws masks like training."""
        return getattr(self.source, "masks", None)

    def sample_latent(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    @torch.no_grad()
    def propose(self, condition: Condition, z: Tensor | None = None) -> Tensor:
        """clamp(g(z, y)): the generator's proposal with the observed pixels put back."""
        y = condition.tensor
        z = self.sample_latent(y.shape[0]) if z is None else z
        return condition.clamp(self.vae.decode(z, y))

    def sample(self, n: int, *, data: Tensor | None = None) -> Tensor:
        self.source.sample(n, data=data)
        self.condition = self.source.condition
        return self.propose(self.condition)

    def start(self, target: Tensor, missing: Tensor | None = None) -> Tensor:
        self.source.start(target, missing)
        self.condition = self.source.condition
        return self.propose(self.condition)

    # -- learning ----------------------------------------------------------------------------------
    def loss_terms(self, x: Tensor, y: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
        """Per-sample reconstruction NLL and KL of (x, y), and the batch loss
        mean(recon + gamma * KL).  ``eps`` fixes the reparameterisation noise."""
        mu, logvar = self.vae.encode(x, y)
        eps = torch.randn_like(mu) if eps is None else eps
        x_hat = self.vae.decode(mu + (0.5 * logvar).exp() * eps, y)
        return elbo_terms(x, x_hat, mu, logvar, self.decoder_sd, self.kl_weight)

    def negative_elbo(self, x: Tensor, y: Tensor, eps: Tensor | None = None) -> Tensor:
        """Per-sample -log p(x | y) bound (KL weight 1), a single-sample estimate."""
        t = self.loss_terms(x, y, eps)
        return t["recon"] + t["kl"]

    def update(self, samples: Tensor) -> dict[str, float]:
        """Conditional variational MCMC teaching: fit g(., y) to the revised samples of the last batch."""
        cond = self.condition
        if cond is None or cond.tensor.shape[0] != samples.shape[0]:
            got = "no condition" if cond is None else f"a condition for {cond.tensor.shape[0]} rows"
            raise ConfigError(f"initializer 'conditional-vae': update() got {samples.shape[0]} revised samples but holds "
                              f"{got}; call sample() (or start()) for the same batch first")
        x, y = samples.detach(), cond.tensor.detach()
        return fit(self.vae, self.optimizer, lambda: self.loss_terms(x, y), self.updates)


@ebmkit.hookimpl
def ebmkit_initializers():
    return {"conditional-vae": ConditionalVAEInit}
