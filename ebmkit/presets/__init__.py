"""The shipped experiment configs (``ebmkit presets``), found by name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def resolve_config_path(name: str) -> Path:
    """A path to a config file, or the name of a shipped preset."""
    path = Path(name)
    if path.exists() or path.suffix:
        return path
    if name in preset_names():
        return Path(str(resources.files(__name__) / f"{name}.toml"))
    from ..errors import ConfigError, suggest

    raise ConfigError(f"no config file '{name}' and no preset of that name{suggest(name, preset_names())}; "
                      f"presets: {', '.join(preset_names())}")
