"""Finding the actor types a worker runs from a ``module:attribute`` name, as the CLI takes it."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from sourcery._core.actor import ActorType
from sourcery._core.errors import ConfigurationError

__all__ = ["load_app", "load_object"]


def load_app(spec: str) -> list[ActorType[Any, Any, Any]]:
    """The actor types ``module:attr`` names.

    ``attr`` (dots allowed) may be an :class:`ActorType`, a sequence of them, or a
    zero-argument callable returning either.
    """
    return actor_types(load_object(spec), spec)


def load_object(spec: str) -> Any:
    """The object ``module:attr`` names (``attr`` may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTRIBUTE, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    return target


def actor_types(value: object, where: str = "the app") -> list[ActorType[Any, Any, Any]]:
    """``value`` as a list of actor types: one, a sequence, or a callable returning either."""
    if callable(value) and not isinstance(value, ActorType) and not isinstance(value, type):
        value = value()
    if isinstance(value, ActorType):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = list(value)
        if items and all(isinstance(item, ActorType) for item in items):
            return items
    raise ConfigurationError(
        f"{where} must be an ActorType, a sequence of them, or a callable returning either; "
        f"got {type(value).__name__}"
    )
