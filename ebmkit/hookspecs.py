"""Hook specifications: one hook per kind of component.

Each hook returns a mapping ``name -> component class``.  A component class
subclasses one of the interfaces in :mod:`ebmkit.interfaces` and declares its
parameters in ``Params``.  Mark implementations with ``ebmkit.hookimpl`` and
publish the module under the entry-point group ``ebmkit``.
"""

from __future__ import annotations

import pluggy

PROJECT = "ebmkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def ebmkit_energies() -> dict[str, type]:
    """Energy classes, U(x): (B, *shape) -> (B,)."""


@hookspec
def ebmkit_initializers() -> dict[str, type]:
    """Initial-distribution classes (p0 of the chains)."""


@hookspec
def ebmkit_samplers() -> dict[str, type]:
    """Sampler classes (the K-step chains)."""


@hookspec
def ebmkit_objectives() -> dict[str, type]:
    """Objective classes (losses for the energy)."""


@hookspec
def ebmkit_datasets() -> dict[str, type]:
    """Data-source classes (named datasets scaled to [-1, 1])."""


@hookspec
def ebmkit_masks() -> dict[str, type]:
    """Mask-generator classes (which pixels an inpainting task hides)."""
