"""Hook specifications: one hook per kind of component.

Each hook returns a mapping ``name -> component class``.  A component class
subclasses one of the interfaces in :mod:`ebmkit.interfaces` and declares its
parameters in ``Params``.  Mark implementations with ``ebmkit.hookimpl`` and
publish the module under the entry-point group ``ebmkit``.

The hooks are made from the table of kinds (:data:`ebmkit.interfaces.KINDS`)::

    ebmkit_energies()      -> {name: Energy subclass}
    ebmkit_initializers()  -> {name: InitialDistribution subclass}
    ebmkit_samplers()      -> {name: Sampler subclass}
    ebmkit_objectives()    -> {name: Objective subclass}
    ebmkit_datasets()      -> {name: DataSource subclass}
    ebmkit_masks()         -> {name: MaskGenerator subclass}
"""

from __future__ import annotations

import pluggy

from .interfaces import KINDS

PROJECT = "ebmkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


def _spec(hook: str, doc: str):
    def spec() -> dict[str, type]:
        """"""

    spec.__name__ = spec.__qualname__ = hook
    spec.__doc__ = doc
    return hookspec(spec)


for _kind in KINDS:
    globals()[_kind.hook] = _spec(_kind.hook, _kind.doc)
del _kind
