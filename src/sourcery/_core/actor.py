"""Defining an actor type: its state, its commands, its events and two pure functions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from sourcery._core.errors import ConfigurationError
from sourcery._core.records import ActorRef, check_text

__all__ = ["ActorType", "Branch", "Event", "Outcome", "Upcaster"]

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the fields of one schema version of an event into those of the next."""


class Event(msgspec.Struct, Generic[E], frozen=True):
    """A decoded event: the envelope of DESIGN.md around a user payload."""

    id: int
    actor: ActorRef
    timestamp: int
    initiated_by: str
    writer: str
    n: int
    type: str
    version: int
    payload: E

    @property
    def dot(self) -> tuple[str, int]:
        return (self.writer, self.n)


class Outcome(msgspec.Struct, Generic[S, E], frozen=True):
    """What ``send`` returns once the events are durable."""

    actor: ActorRef[S, Any, E]
    events: tuple[Event[E], ...]
    state: S
    duplicate: bool = False
    """True when the message id had been processed before and nothing was written."""


@dataclass(frozen=True, slots=True)
class Branch(Generic[S, E]):
    """One head being merged, as a merge hook sees it: its state and the events it adds
    since the common ancestor."""

    state: S
    events: tuple[Event[E], ...]


def _type_name(cls: type) -> str:
    return cls.__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorType(Generic[S, C, E]):
    """An actor type. Instances are immutable; call one with an id to name an actor.

    ``decide(state, command)`` returns the events a command causes or raises a
    :class:`~sourcery.Rejected`; ``evolve(state, event)`` returns the next state and must be
    pure. Events are stored under their class name; adding an upcaster for a name bumps
    that event's schema version by one, and older stored versions are passed through the
    upcasters in order before decoding.
    """

    name: str
    initial: S
    decide: Callable[[S, C], Sequence[E]]
    evolve: Callable[[S, E], S]
    commands: Sequence[type[Any]]
    """The command classes; ``C`` is inferred from ``decide`` (a list of classes would
    join to their common base and make a precise ``decide`` look wrong)."""
    events: Sequence[type[Any]]
    """The event classes, stored under their class names; ``E`` comes from ``evolve``."""
    state_type: type[S] | None = None
    snapshot_every: int = 100
    upcasters: Mapping[str, Sequence[Upcaster]] = field(default_factory=dict)
    on_merge: Callable[[S, Sequence[Branch[S, E]]], Sequence[E]] | None = None

    def __post_init__(self) -> None:
        check_text(self.name, "actor type name")
        if "/" in self.name:
            raise ConfigurationError(f"actor type name must not contain '/': {self.name!r}")
        if not isinstance(self.snapshot_every, int) or self.snapshot_every < 1:
            raise ConfigurationError(
                f"snapshot_every must be a positive int, got {self.snapshot_every!r}"
            )
        if not self.events:
            raise ConfigurationError(f"actor type {self.name!r} declares no event types")
        if not self.commands:
            raise ConfigurationError(f"actor type {self.name!r} declares no command types")
        names = [_type_name(cls) for cls in self.events]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"actor type {self.name!r} has two events with one name")
        unknown = set(self.upcasters) - set(names)
        if unknown:
            raise ConfigurationError(f"upcasters for undeclared events: {sorted(unknown)}")

    def __call__(self, actor_id: str) -> ActorRef[S, C, E]:
        """The ref of actor ``actor_id`` of this type, typed with this type's parameters."""
        return ActorRef(self.name, actor_id)

    def event_name(self, cls: type) -> str:
        return _type_name(cls)

    def event_version(self, name: str) -> int:
        return len(self.upcasters.get(name, ())) + 1
