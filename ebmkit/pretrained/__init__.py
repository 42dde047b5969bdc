"""Models that ship inside the package: ``ebmkit generate digits`` with no training run first.

Each is a folder ``ebmkit/pretrained/<name>/`` written by ``ebmkit export``
(weights in safetensors, the config, a model card README.md with how it was
trained), installed as package data.  Anywhere a run or checkpoint folder is
accepted -- every CLI verb, :func:`ebmkit.load` -- a name from :func:`names`
that is not also a path on disk means the shipped model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def root() -> Path:
    return Path(str(resources.files(__name__)))


def names() -> list[str]:
    """The shipped models, by name."""
    return sorted(p.name for p in root().iterdir() if p.is_dir() and (p / "state.json").is_file())


def resolve(path_or_name: str | Path) -> Path:
    """A path as given when it exists (or looks like a path), else the shipped model of that name, else the path as given."""
    path = Path(path_or_name)
    if path.exists() or len(path.parts) != 1:
        return path
    if str(path_or_name) in names():
        return root() / str(path_or_name)
    return path


def shipped_name(path: str | Path) -> str | None:
    """The name when ``path`` is a shipped model's folder (read-only inside the install), else None."""
    try:
        p = Path(path).resolve()
        return p.name if p.parent == root().resolve() and p.name in names() else None
    except OSError:
        return None
