"""Helpers for writing samplers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


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
