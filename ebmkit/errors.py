"""Errors ebmkit raises on purpose.  Each says what is wrong and where.

The CLI prints ``EbmkitError`` messages without a traceback and exits with a
non-zero code; anything else is a bug in ebmkit or a plug-in.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ValidationError


class EbmkitError(Exception):
    """Base class: an error with a message meant for the user."""


class ConfigError(EbmkitError, ValueError):
    """A configuration value, field or component name is wrong."""


class PluginError(EbmkitError):
    """A plug-in failed to load or returned something unusable."""


class DataError(EbmkitError, ValueError):
    """A dataset is missing or has the wrong shape, channels or range."""


class CheckpointError(EbmkitError):
    """A checkpoint is missing, corrupt, or from another architecture."""


class DivergenceError(EbmkitError):
    """Training produced non-finite or exploding values.

    ``iteration`` (counted from 1) is the iteration at which it was detected,
    ``reason`` a short label of what went wrong (e.g. ``"non-finite samples"``).
    """

    def __init__(self, message: str, *, iteration: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.iteration, self.reason = iteration, reason


class OutputError(EbmkitError):
    """The run folder (metrics, samples, config copy) cannot be written."""


def suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the (nested) model that owns ``loc[:-1]``, for suggestions."""
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return list(model.model_fields) if model is not None else []


def validated(model: type[BaseModel], values: Any, *, heading: str, prefix: str = "", separator: str = ":\n") -> Any:
    """``values`` validated by ``model`` -- strictly, see :func:`strict_validate` --
    or a :class:`ConfigError` that reads ``heading``, ``separator`` and then one
    line per problem, each naming its field (under ``prefix``, e.g.
    ``sampler.steps``).  The one place a pydantic error becomes a user's error."""
    try:
        return strict_validate(model, values)
    except ValidationError as exc:
        raise ConfigError(heading + separator + format_validation_error(exc, prefix, model)) from None


def _json_value(obj: Any) -> Any:
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} has no JSON form")


def strict_validate(model: type[BaseModel], values: Any) -> Any:
    """Validate ``values`` as the JSON types they are, strictly -- as a config
    file's values are: ``true`` is not an integer and ``"5"`` is not a number
    (pydantic's lax mode would read them as 1 and 5); an integer is accepted
    for a float, a list for a tuple, a string for a path, and nothing else is
    converted.  Values that only Python code can pass (objects with no JSON
    form) are validated in pydantic's usual mode."""
    try:
        text = json.dumps(values, default=_json_value)
    except (TypeError, ValueError):
        return model.model_validate(values)
    return model.model_validate_json(text, strict=True)


def format_validation_error(err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per problem, each naming the dotted field path."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            hint = suggest(str(loc[-1]), _fields_at(model, loc)) if model is not None else ""
            lines.append(f"{path}: unknown field{hint}")
            continue
        msg = e["msg"]
        if e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        lines.append(f"{path}: {msg}")
    return "\n".join(lines)
