"""Which device a command may use, checked before anything runs on it."""

from __future__ import annotations

from .errors import ConfigError


def check_device(name: str, *, what: str = "") -> "torch.device":  # noqa: F821
    """``torch.device(name)`` after checking that such a device exists here:
    a malformed name, CUDA on a machine without a visible GPU, or a GPU index
    past the last one is a :class:`~ebmkit.errors.ConfigError` (naming the
    option or field ``what`` when given)."""
    import torch

    at = f"{what} = {name!r}" if what else repr(name)

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{at} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{at} is not available: no CUDA GPU is visible on this machine "
                              "(torch.cuda.is_available() is False); use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{at} is not available: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{at} is not available: MPS is not available on this machine; use cpu")
    elif device.type != "cpu":
        raise ConfigError(f"{at}: ebmkit runs on cpu, cuda or mps devices")
    return device
