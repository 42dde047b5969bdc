"""Old module paths that still import: ``ebmkit.trainer`` is ``ebmkit.training.loop``.

Modules moved into ``ebmkit.training``, ``ebmkit.generation`` and
``ebmkit.cli``; code written against the flat layout (``from ebmkit.trainer
import Trainer``, ``import ebmkit.generator``) keeps working.  An old name is
not a copy or a re-export shim but the *same module object* under a second
name, so a monkeypatch through either name reaches the code that runs, and
no file stands at the old path (git then follows each file to its new place).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "ebmkit.trainer": "ebmkit.training.loop",
    "ebmkit.divergence": "ebmkit.training.divergence",
    "ebmkit.diagnostics": "ebmkit.training.diagnostics",
    "ebmkit.landscape": "ebmkit.training.landscape",
    "ebmkit.schedule": "ebmkit.training.schedule",
    "ebmkit.generator": "ebmkit.generation.generator",
    "ebmkit.cooperative": "ebmkit.generation.cooperative",
    "ebmkit.inpainting": "ebmkit.generation.inpainting",
    "ebmkit.generator_cli": "ebmkit.cli.generate",
}
"""Old module name -> where it lives now."""


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old name with the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])  # already initialised; nothing left to execute

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
