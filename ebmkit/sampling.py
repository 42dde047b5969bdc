"""Helpers for writing samplers."""

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
