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
import math
import os

import torch
from torch import nn

from . import gpu_defaults

log = logging.getLogger("ebmkit")


# Forward FLOPs per batch of the energy from which a second thread paid on the
# 2-core machine of docs/performance.md ("Threads"): below it, a chain's ops
# are too small to split and the threads' hand-offs (and, on a shared machine,
# their waits for a core) cost more than they save.  Measured with
# `python -m benchmarks.threads`.
PARALLEL_FLOPS = 8e9


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def forward_flops(energy: nn.Module, shape: tuple[int, ...], batch: int) -> int:
    """FLOPs of one forward pass of ``energy`` over a batch (torch's own
    flop counter; a few ms for the nets here).  0 when it cannot be counted."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        param = next(energy.parameters(), None)
        x = torch.zeros(1, *shape, device=param.device if param is not None else "cpu")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            energy(x)
        return int(counter.get_total_flops()) * batch
    except Exception:  # an energy the counter cannot trace: decide on the machine alone
        return 0


def choose_threads(flops_per_batch: int, *, cores: int | None = None, load: float | None = None) -> int:
    """The thread count for ``threads = "auto"``: one thread per started
    ``PARALLEL_FLOPS`` of work in a batch's forward pass (at least one), no
    more than the cores, and no more than the cores the rest of the machine
    leaves free (1-minute load average): oversubscribed threads wait for each
    other at every op."""
    cores = cores or usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    by_work = max(1, math.ceil(flops_per_batch / PARALLEL_FLOPS))
    free = max(1, int(round(cores - load)))
    return max(1, min(by_work, cores, free))


def apply_threads(threads: int | str | None, *, energy: nn.Module | None = None, shape: tuple[int, ...] | None = None,
                  batch: int = 1, device: torch.device | str = "cpu") -> int:
    """Set torch's CPU thread count and return it.

    An int is used as given; None leaves torch's default (one per core);
    ``"auto"`` asks :func:`choose_threads` for CPU runs, unless the user
    already chose through ``OMP_NUM_THREADS`` (then that stands).  GPU runs
    keep torch's default: the CPU only feeds the device there."""
    if threads == "auto":
        if os.environ.get("OMP_NUM_THREADS") or torch.device(device).type != "cpu" or energy is None or shape is None:
            return torch.get_num_threads()
        threads = choose_threads(forward_flops(energy, tuple(shape), batch))
        log.debug("performance.threads = auto: %d thread(s)", threads)
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


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
