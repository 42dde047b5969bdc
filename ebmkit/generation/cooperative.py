"""Generation with a latent-variable initial distribution (a VAE proposal),
both ways: the proposal alone, and the proposal revised by Langevin.

Any initializer with ``sample_latent(n) -> z`` and ``decode(z) -> x`` works
(the built-in ``vae`` initializer has both); nothing here imports a plug-in.

* :func:`propose_and_revise`: x0 = g(z), z ~ N(0, I), then K steps against U;
  returns both and the chain at chosen steps (the revision strip).
* :func:`interpolate`: z_rho = rho * z1 + sqrt(1 - rho^2) * z2 (rho from 0
  to 1) through the decoder, then Langevin with one noise draw per row, so
  that a row changes only because z does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..interfaces import InitialDistribution, SampleResult, Sampler
from .generator import ShortRunGenerator


def is_latent(initializer: InitialDistribution) -> bool:
    return callable(getattr(initializer, "sample_latent", None)) and callable(getattr(initializer, "decode", None))


def require_latent(initializer: InitialDistribution, name: str = "") -> None:
    if not is_latent(initializer):
        what = f"'{name}' ({type(initializer).__name__})" if name else type(initializer).__name__
        raise ConfigError(f"the initializer {what} has no latent space (sample_latent / decode): cooperative "
                          "generation needs a VAE proposal, e.g. [initializer] name = \"vae\"")


@dataclass
class Revision:
    """Proposals x0 = g(z), revised samples x_K, and the chain at the recorded steps."""

    z: Tensor
    proposal: Tensor
    revised: Tensor
    trajectory: dict[int, Tensor] = field(default_factory=dict)
    energy_proposal: Tensor | None = None
    energy_revised: Tensor | None = None


def propose_and_revise(energy: nn.Module, initializer: InitialDistribution, sampler: Sampler, n: int, *,
                       steps: int | None = None, record: tuple[int, ...] = (), z: Tensor | None = None) -> Revision:
    """Draw ``n`` VAE proposals and revise them with ``steps`` (default: the sampler's K) Langevin steps."""
    require_latent(initializer)
    z = initializer.sample_latent(n) if z is None else z
    with torch.no_grad():
        x0 = initializer.decode(z)
    k = sampler.steps if steps is None else steps
    record = tuple(sorted({0, k, *[s for s in record if 0 <= s <= k]}))
    chain = _revise(energy, initializer, sampler, x0, steps=k, record=record)
    with torch.no_grad():
        e0, ek = energy(x0), energy(chain.x)
    return Revision(z, x0, chain.x.detach(), chain.trajectory, e0, ek)


def strip_rows(rev: Revision, rows: int) -> list[Tensor]:
    """The revision strip: one row per sample, its proposal then each recorded step."""
    steps = sorted(rev.trajectory)
    return [torch.stack([rev.trajectory[s][i] for s in steps]) for i in range(min(rows, rev.proposal.shape[0]))]


def interpolate(energy: nn.Module, initializer: InitialDistribution, sampler: Sampler, *, pairs: int, points: int,
                steps: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Latent interpolation through the VAE, then Langevin.

    Returns ``(rho, proposals, revised)``: ``rho`` of shape ``(points,)`` and
    images of shape ``(pairs, points, *shape)``.
    """
    require_latent(initializer)
    if pairs < 1 or points < 2:
        raise ConfigError(f"interpolation needs at least 1 pair and 2 points, got {pairs} and {points}")
    z1, z2 = initializer.sample_latent(pairs), initializer.sample_latent(pairs)
    rho = torch.linspace(0.0, 1.0, points, device=z1.device)
    z = rho.view(1, -1, 1) * z1[:, None] + (1 - rho.view(1, -1, 1) ** 2).sqrt() * z2[:, None]  # (pairs, points, d)
    with torch.no_grad():
        x0 = initializer.decode(z.flatten(0, 1))
    k = sampler.steps if steps is None else steps
    shape = x0.shape[1:]
    noise = torch.randn(k, pairs, 1, *shape, device=x0.device).expand(k, pairs, points, *shape).reshape(k, pairs * points, *shape)
    xk = _revise(energy, initializer, sampler, x0, steps=k, noise=noise).x.detach()
    return rho, x0.view(pairs, points, *shape), xk.view(pairs, points, *shape)


def _revise(energy: nn.Module, initializer: InitialDistribution, sampler: Sampler, x0: Tensor, **run) -> SampleResult:
    """Langevin from the proposals x0: the generator's chain (the one inference path), started at x0."""
    return ShortRunGenerator(energy, sampler, initializer, tuple(x0.shape[1:]), eval_mode=False).chain(x0, **run)


def default_record(k: int, count: int = 6) -> tuple[int, ...]:
    """About ``count`` steps from 0 to K, evenly spread (always 0 and K)."""
    if k <= 0:
        return (0,)
    return tuple(sorted({round(i * k / (count - 1)) for i in range(count)}))
