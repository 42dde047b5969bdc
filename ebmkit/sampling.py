"""Helpers for writing samplers: frozen weights, input gradients, the chain's
memory format, seeded draws, and the Langevin update rule with its two forms
(coupled epsilon or decoupled step and noise)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .performance import wants_channels_last


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on every parameter for the duration.

    While a chain runs only gradients with respect to x are needed; frozen
    parameters keep autograd from building (and keeping) the weight-gradient
    half of the graph.  The previous flags are restored afterwards, even on
    error.
    """
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def input_gradient(energy: nn.Module, like: Tensor, *, fast: bool = True) -> Callable[[Tensor], Tensor]:
    """A function ``g(x) = grad_x sum_i U(x_i)`` that keeps no graph.

    Valid while the energy's weights stay as they are (one chain: call it
    again for the next).  With ``fast`` the energy's own
    :meth:`~ebmkit.interfaces.Energy.input_grad_fn` is used when it offers
    one for tensors like ``like`` (device, dtype, memory format); otherwise,
    and with ``fast=False``, plain autograd with respect to x only.
    """
    offer = getattr(energy, "input_grad_fn", None)
    if fast and callable(offer):
        fn = offer(like)
        if fn is not None:
            return fn

    def autograd_gradient(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(energy(x).sum(), x)
        return g

    return autograd_gradient


def chain_memory_format(x: Tensor, channels_last: bool | None, energy: nn.Module | None = None) -> torch.memory_format:
    """The memory format an image chain runs in: channels_last when asked,
    or (``None``, auto) for 4-D chains on CPU against an energy that says it
    takes channels_last input (``Energy.channels_last_ok``), where it
    measured faster for the ConvNet energies (docs/performance.md).  The
    same rule as the energy's weights (:func:`ebmkit.performance.wants_channels_last`)."""
    wanted = wants_channels_last(channels_last, tuple(x.shape[1:]), x.device, energy)
    return torch.channels_last if wanted else torch.contiguous_format


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from torch's RNG under ``seed`` without disturbing the caller's
    stream (a forked RNG, the CUDA one too on a GPU); ``None``: no seeding."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def langevin_coefficients(epsilon: float | None = None, step_size: float | None = None, noise: float | None = None, *,
                          default_epsilon: float | None = None, default_step: float = 1.0,
                          default_noise: float = 0.01) -> tuple[float, float]:
    """(step, noise sd) of the Langevin update.  Coupled (textbook) form:
    ``epsilon`` gives step = epsilon^2 / 2 and noise = epsilon.  Decoupled
    form (the short-run paper): ``step_size`` and ``noise`` as given, a missing
    one from ``default_step`` / ``default_noise``.  With nothing given,
    ``default_epsilon`` (when set) picks the coupled form."""
    if epsilon is None and step_size is None and noise is None:
        epsilon = default_epsilon
    if epsilon is not None:
        return epsilon**2 / 2.0, epsilon
    return (default_step if step_size is None else step_size), (default_noise if noise is None else noise)


def langevin_step(x: Tensor, grad: Tensor, step: float, noise_sd: float, xi: Tensor | None = None, *,
                  inplace: bool = False) -> Tensor:
    """x - step * grad + noise_sd * xi: one Langevin move (``xi`` ~ N(0, I);
    no noise term when ``noise_sd`` is 0 or ``xi`` is None).  ``inplace``
    updates x itself (a chain that keeps no graph); otherwise a new tensor,
    differentiable in x, grad and xi."""
    if inplace:
        x.sub_(grad, alpha=step)
        if noise_sd > 0 and xi is not None:
            x.add_(xi, alpha=noise_sd)
        return x
    x = x - step * grad
    if noise_sd > 0 and xi is not None:
        x = x + noise_sd * xi
    return x
