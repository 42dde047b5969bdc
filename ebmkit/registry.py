"""The component registry, on pluggy.

Plug-ins are modules whose functions are marked with ``ebmkit.hookimpl`` (see
:mod:`ebmkit.hookspecs`).  They are found through the entry-point group
``ebmkit`` -- ebmkit's own built-ins included, which are published under that
group by the ``shortrun-ebm`` distribution exactly as a third party would.
Code can also register a module or object directly with
:meth:`Registry.register`.

One factory, :meth:`Registry.build`, builds any component from its kind, its
name and a dict of parameters validated by the component's pydantic model.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pluggy
from pydantic import BaseModel

from . import hookspecs
from .errors import ConfigError, PluginError, suggest, validated
from .interfaces import KIND, KINDS, BuildContext, DataSource, Energy, InitialDistribution, MaskGenerator, Objective, Sampler

ENTRY_POINT_GROUP = "ebmkit"
DISTRIBUTION = "shortrun-ebm"

HOOKS = {k.name: k.hook for k in KINDS}
"""Kind -> hook name (from :data:`ebmkit.interfaces.KINDS`)."""
BASES = {k.name: k.base for k in KINDS}
"""Kind -> the interface its classes subclass (from :data:`ebmkit.interfaces.KINDS`)."""


@dataclass(frozen=True)
class Registered:
    """One registered component and where it came from."""

    kind: str
    name: str
    cls: type
    plugin: str
    source: str

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


@dataclass(frozen=True)
class LoadFailure:
    """An entry point that could not be imported, or whose hook raised when
    called; the others still work."""

    distribution: str
    entry_point: str
    value: str
    error: str
    stage: str = "failed to load"  # or "failed in ebmkit_energies()" for a hook that raised

    def __str__(self) -> str:
        return (
            f"plug-in entry point '{self.entry_point} = {self.value}' of distribution "
            f"'{self.distribution}' {self.stage}: {self.error}"
        )


class Registry:
    """Knows every component and builds them by name."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[str, str] = {}
        self._found: dict[str, dict[str, Registered]] = {}  # the hooks' answers per kind, until the next register
        self._entry_points: dict[str, tuple[str, str, str]] = {}  # plug-in name -> (distribution, entry point, value)
        self.failures: list[LoadFailure] = []
        if load_entry_points:
            self._load_entry_points()

    # -- discovery -----------------------------------------------------------
    def _load_entry_points(self) -> None:
        seen: set[str] = set()
        for dist in md.distributions():
            dname = dist.metadata["Name"] or "?"
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP:
                    continue
                key = f"{dname}:{ep.name}"
                if key in seen:  # the same distribution visible twice on sys.path
                    continue
                seen.add(key)
                try:
                    plugin = ep.load()
                except Exception as exc:  # a broken plug-in must not take the others down
                    failure = LoadFailure(dname, ep.name, ep.value, f"{type(exc).__name__}: {exc}")
                    self.failures.append(failure)
                    warnings.warn(str(failure), RuntimeWarning, stacklevel=2)
                    continue
                source = "built-in" if dname == DISTRIBUTION else f"{dname} {dist.version}"
                self._entry_points[self.register(plugin, name=key, source=source)] = (dname, ep.name, ep.value)

    def register(self, plugin: Any, *, name: str | None = None, source: str = "registered in code") -> str:
        """Register a plug-in module or object (its ``ebmkit.hookimpl`` functions)."""
        try:
            pname = self.pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(f"could not register plug-in {name or plugin!r}: {exc}") from exc
        if pname is None:
            raise PluginError(f"plug-in {name or plugin!r} is blocked")
        self._sources[pname] = source
        self._found.clear()
        return pname

    # -- lookup --------------------------------------------------------------
    def components(self, kind: str) -> dict[str, Registered]:
        """Every component of ``kind``, by name.  Two plug-ins claiming one
        name is an error that names both.  The hooks run once per kind and
        registry; :meth:`register` forgets their answers."""
        if kind not in self._found:
            self._found[kind] = self._collect(kind)
        return dict(self._found[kind])

    def _collect(self, kind: str) -> dict[str, Registered]:
        hook = getattr(self.pm.hook, self._hook(kind))
        found: dict[str, Registered] = {}
        for impl in hook.get_hookimpls():  # registration order
            try:
                mapping = impl.function() or {}
                if not isinstance(mapping, dict):
                    raise PluginError(f"it must return a dict name -> class, not {type(mapping).__name__}")
            except Exception as exc:  # a broken plug-in must not take the others down (as at import)
                self._hook_failed(impl.plugin_name, self._hook(kind), exc)
                continue
            for cname, cls in mapping.items():
                reg = Registered(kind, cname, cls, impl.plugin_name, self._sources.get(impl.plugin_name, "?"))
                base = KIND[kind].base
                if not (isinstance(cls, type) and issubclass(cls, base)):
                    raise PluginError(
                        f"{kind} '{cname}' from plug-in '{impl.plugin_name}' is not a subclass of ebmkit.{base.__name__}"
                    )
                if cname in found and found[cname].cls is not cls:
                    raise PluginError(
                        f"{kind} name '{cname}' is registered twice: by '{found[cname].plugin}' "
                        f"({found[cname].source}) and by '{impl.plugin_name}' ({reg.source})"
                    )
                found[cname] = reg
        return found

    def _hook_failed(self, plugin: str, hook: str, exc: Exception) -> None:
        """Record (and warn once about) a hook that raised: its components are left out."""
        dist, ep, value = self._entry_points.get(plugin, (self._sources.get(plugin, "?"), plugin, plugin))
        failure = LoadFailure(dist, ep, value, f"{type(exc).__name__}: {exc}", stage=f"failed in {hook}()")
        if failure not in self.failures:
            self.failures.append(failure)
            warnings.warn(f"{failure}; its components are left out", RuntimeWarning, stacklevel=3)

    def get(self, kind: str, name: str, *, where: str = "") -> Registered:
        """The registered component; an unknown name lists the known ones
        (``where``: the config field that named it, put first in the error)."""
        known = self.components(kind)
        if name not in known:
            listing = ", ".join(sorted(known)) or "(none)"
            # The component may live in a plug-in that failed to import: say so.
            failed = "".join(f"\nnote: {failure}" for failure in self.failures)
            at = f"{where}: " if where and where != kind else ""
            raise ConfigError(f"{at}unknown {kind} '{name}'{suggest(name, known)}; known {kind} names: {listing}{failed}")
        return known[name]

    def validate(self, kind: str, name: str, params: dict[str, Any] | None = None, *, where: str = "") -> BaseModel:
        """Validate ``params`` against the component's ``Params`` model."""
        reg = self.get(kind, name, where=where)
        return validated(reg.cls.Params, dict(params or {}), heading=f"bad parameters for {kind} '{name}'",
                         prefix=where or kind)

    def build(
        self,
        kind: str,
        name: str,
        params: dict[str, Any] | BaseModel | None = None,
        context: BuildContext | None = None,
        *,
        where: str = "",
    ) -> Any:
        """Build one component.  ``params`` may be a dict (validated here) or
        an already validated ``Params`` instance.  The context carries this
        registry, so a component that builds another (a wrapped sampler, a
        mask generator) builds it here too (:meth:`BuildContext.build`)."""
        reg = self.get(kind, name, where=where)
        if not isinstance(params, BaseModel):
            params = self.validate(kind, name, params, where=where)
        context = context or BuildContext()
        if context.registry is None:
            context = dataclasses.replace(context, registry=self)
        try:
            obj = reg.cls.from_params(params, context)
        except (ValueError, TypeError) as exc:  # the component rejected its inputs
            raise ConfigError(f"{where or kind} '{name}': {exc}") from exc
        # Remember how it was built, so checkpoints can rebuild it.
        try:
            obj.ebmkit_spec = {"name": name, **params.model_dump(mode="json")}
        except AttributeError:  # pragma: no cover - objects with __slots__
            pass
        return obj

    @staticmethod
    def _hook(kind: str) -> str:
        if kind not in KIND:
            raise ConfigError(f"unknown component kind '{kind}'; kinds: {', '.join(KIND)}")
        return KIND[kind].hook


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry, with every installed plug-in loaded."""
    return Registry()


def create(kind: str, name: str, /, context: BuildContext | None = None, **params: Any) -> Any:
    """Build a component from the default registry, timm style.

    >>> energy = create("energy", "convnet", context=BuildContext(shape=(1, 32, 32)), nf=32)
    """
    return default_registry().build(kind, name, params, context)


def create_energy(name: str, /, shape: tuple[int, ...], **params: Any) -> Energy:
    return create("energy", name, BuildContext(shape=tuple(shape)), **params)


def create_sampler(name: str, /, **params: Any) -> Sampler:
    return create("sampler", name, **params)


def create_initializer(name: str, /, shape: tuple[int, ...], dataset: Any = None, **params: Any) -> InitialDistribution:
    return create("initializer", name, BuildContext(shape=tuple(shape), dataset=dataset), **params)


def create_objective(name: str, /, **params: Any) -> Objective:
    return create("objective", name, **params)


def create_dataset(name: str, /, **params: Any) -> DataSource:
    return create("dataset", name, **params)


def create_mask(name: str, /, **params: Any) -> MaskGenerator:
    return create("mask", name, **params)
