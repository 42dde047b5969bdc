"""Speed settings for a run: the ``[performance]`` section.

What is measured and what each setting buys is in docs/performance.md.  The
sampler's own fast path (frozen weights, input-only gradients, in-place
updates, an energy's written-out input gradient, channels_last chains) is
switched by the sampler's ``fast`` and ``channels_last`` parameters; this
module holds what belongs to the run as a whole.  Mixed precision is
``training.mixed_precision`` (accelerate's autocast and loss scaling).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from . import gpu_defaults

log = logging.getLogger("ebmkit")


def apply_threads(threads: int | None) -> None:
    """torch's CPU thread count (None: leave torch's default, one per core)."""
    if threads:
        torch.set_num_threads(threads)


def apply_cudnn_benchmark(setting: bool | None, device: torch.device) -> None:
    """cuDNN's autotuner for the convolutions of a CUDA run (None: as
    :mod:`ebmkit.gpu_defaults` says; left alone when that is off)."""
    if device.type == "cuda" and (setting is not None or gpu_defaults.CUDNN_BENCHMARK):
        torch.backends.cudnn.benchmark = gpu_defaults.CUDNN_BENCHMARK if setting is None else setting


def wants_channels_last(setting: bool | None, shape: tuple[int, ...], device: torch.device, energy: nn.Module | None = None) -> bool:
    """channels_last for the energy's weights: as set, or (None, auto) for
    image data (C, H, W) on CPU with an energy that says it takes that
    format (``Energy.channels_last_ok``), where it measured faster; on CUDA
    when :mod:`ebmkit.gpu_defaults` says so."""
    if len(shape) != 3:
        return False
    if setting is None:
        measured = device.type == "cpu" or (device.type == "cuda" and gpu_defaults.CHANNELS_LAST)  # GPU: as measured
        return measured and bool(getattr(energy, "channels_last_ok", False))
    return setting


def prepare_energy(energy: nn.Module, *, channels_last: bool, compile: bool) -> nn.Module:
    """The energy as the trainer should hold it: weights channels_last when
    asked (values unchanged), and torch.compile'd when asked."""
    if channels_last:
        energy = energy.to(memory_format=torch.channels_last)
    if compile:
        energy = torch.compile(energy)
    return energy
