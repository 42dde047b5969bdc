"""Reconstruction by the short-run EBM, for Table 2.

The EBM reconstructs x by minimising ||x - M_theta(z)||^2 over the chain
start z, differentiating through all K steps of the noise-free chain (paper
section 5.3).  That belongs to ebmkit's generator (``ebmkit.generator``,
issue 3): when it is installed this module calls
``ShortRunGenerator.reconstruct``.

ADAPTER (until ebmkit.generator lands on main): otherwise
:func:`_fallback_reconstruct` does the same thing with the parts that exist
-- the sampler's ``run(..., keep_graph=True, noise=zeros)`` and Adam on z --
and the table notes which path was used.  Delete the fallback once the
generator is on main.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ebmkit.sampling import frozen


def generator_available() -> bool:
    try:
        from ebmkit.generator import ShortRunGenerator  # noqa: F401
    except ImportError:
        return False
    return True


def reconstruction_path() -> str:
    return "ebmkit.generator.ShortRunGenerator.reconstruct" if generator_available() else "benchmarks.reconstruction fallback (adapter)"


def ebm_reconstruct(energy: nn.Module, sampler: Any, initializer: Any, shape: tuple[int, ...], x: Tensor, *,
                    iterations: int = 200, lr: float = 0.05, seed: int = 0) -> Tensor:
    """M_theta(z*) with z* = argmin_z ||x - M_theta(z)||^2 (Adam, ``iterations`` steps)."""
    if generator_available():
        from ebmkit.generator import ShortRunGenerator

        gen = ShortRunGenerator(energy, sampler, initializer, shape)
        try:
            return gen.reconstruct(x, iterations=iterations, lr=lr, optimizer="adam", seed=seed).x.to(x.device)
        finally:
            energy.train()
    return _fallback_reconstruct(energy, sampler, initializer, x, iterations=iterations, lr=lr, seed=seed)


def _fallback_reconstruct(energy: nn.Module, sampler: Any, initializer: Any, x: Tensor, *, iterations: int, lr: float,
                          seed: int) -> Tensor:
    """ADAPTER: see the module docstring."""
    k = sampler.steps
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        z = initializer.sample(x.shape[0], data=x if getattr(initializer, "needs_data", False) else None)
    z = z.detach().clone().requires_grad_(True)
    zeros = torch.zeros(k, *x.shape, device=x.device)  # the noise-free chain: x_K is a function of z
    opt = torch.optim.Adam([z], lr=lr)
    with frozen(energy):
        for _ in range(iterations):
            x_hat = sampler.run(energy, z, noise=zeros, keep_graph=True).x
            loss = (x_hat - x).pow(2).flatten(1).sum(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return sampler.run(energy, z.detach(), noise=zeros).x.detach()
