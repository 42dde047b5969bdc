"""Reconstruction by the short-run EBM, for Table 2.

The EBM reconstructs x by minimising ||x - M_theta(z)||^2 over the chain
start z, differentiating through all K steps of the noise-free chain (paper
section 5.3): :meth:`ebmkit.generation.generator.ShortRunGenerator.reconstruct`, the
same code as ``ebmkit reconstruct``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ebmkit.generation.generator import ShortRunGenerator


def reconstruction_path() -> str:
    """Which code reconstructed (named in Table 2)."""
    return "ebmkit.generation.generator.ShortRunGenerator.reconstruct"


def ebm_reconstruct(energy: nn.Module, sampler: Any, initializer: Any, shape: tuple[int, ...], x: Tensor, *,
                    iterations: int = 200, lr: float = 0.05, seed: int = 0, **params: Any) -> Tensor:
    """M_theta(z*) with z* = argmin_z ||x - M_theta(z)||^2 (Adam, ``iterations`` steps).

    Extra keyword arguments go to ``ShortRunGenerator.reconstruct`` (e.g.
    ``checkpoint_every``, ``infer_noise``).  The energy is returned to train
    mode afterwards: the harness keeps training it.
    """
    was_training = energy.training
    gen = ShortRunGenerator(energy, sampler, initializer, shape)
    try:
        return gen.reconstruct(x, iterations=iterations, lr=lr, optimizer="adam", seed=seed, **params).x.to(x.device)
    finally:
        energy.train(was_training)
