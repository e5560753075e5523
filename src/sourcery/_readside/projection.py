"""What a projection is: a name, the actor types it reads, and its handlers.

Event handlers get each stored event of their types once, in store order (both branches of
a divergence and a merge's compensations included). State handlers get an actor's resolved
state (what ``Runtime.state`` returns) each time events of the actor arrive. Both get the
transaction that will commit the projection's position with their writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sourcery._core.actor import ActorType, Event
from sourcery._core.codec import Codec
from sourcery._core.errors import ConfigurationError
from sourcery._core.records import ActorRef, EventRecord, check_text
from sourcery._readside.target import ProjectionTransaction

__all__ = ["EventHandler", "Projection", "SetupHandler", "StateHandler"]

S = TypeVar("S")
E = TypeVar("E")

EventHandler = Callable[[Event[E], ProjectionTransaction], Awaitable[None]]
StateHandler = Callable[[ActorRef[S, Any, Any], S, ProjectionTransaction], Awaitable[None]]
SetupHandler = Callable[[ProjectionTransaction], Awaitable[None]]


class Projection:
    """A read model: ``Projection("balances", [accounts])``, then its handlers::

        @balances.setup
        async def tables(tx): await tx.execute("CREATE TABLE IF NOT EXISTS …")

        @balances.on(Deposited)
        async def deposited(event, tx): await tx.execute("UPDATE … ?", (…,))

        @balances.on_state(accounts)
        async def account(actor, state, tx): await tx.execute("INSERT … ON CONFLICT …")

    Setup handlers run in one transaction each time the projection starts, so they must
    be idempotent (``CREATE TABLE IF NOT EXISTS``).
    """

    def __init__(self, name: str, types: Iterable[ActorType[Any, Any, Any]]) -> None:
        self.name = check_text(name, "projection name")
        self.types: dict[str, ActorType[Any, Any, Any]] = {}
        for kind in types:
            if kind.name in self.types:
                raise ConfigurationError(f"actor type {kind.name!r} given twice")
            self.types[kind.name] = kind
        if not self.types:
            raise ConfigurationError(f"projection {name!r} reads no actor type")
        self.codecs: dict[str, Codec[Any, Any, Any]] = {
            n: Codec(kind) for n, kind in self.types.items()
        }
        self.event_handlers: dict[tuple[str, str], list[EventHandler[Any]]] = {}
        self.state_handlers: dict[str, list[StateHandler[Any]]] = {}
        self.setups: list[SetupHandler] = []

    def on(self, *events: type[E]) -> Callable[[EventHandler[E]], EventHandler[E]]:
        """Register a handler for these event classes (of every type given that has them)."""
        keys: list[tuple[str, str]] = []
        for cls in events:
            found = [(n, k.event_name(cls)) for n, k in self.types.items() if cls in k.events]
            if not found:
                raise ConfigurationError(
                    f"{cls.__name__} is not an event of {sorted(self.types)} in {self.name!r}"
                )
            keys.extend(found)
        if not keys:
            raise ConfigurationError("on() needs at least one event class")

        def register(handler: EventHandler[E]) -> EventHandler[E]:
            for key in keys:
                self.event_handlers.setdefault(key, []).append(handler)
            return handler

        return register

    def on_state(
        self, kind: ActorType[S, Any, Any]
    ) -> Callable[[StateHandler[S]], StateHandler[S]]:
        """Register a handler of the resolved state of every actor of ``kind``."""
        if self.types.get(kind.name) is not kind:
            raise ConfigurationError(f"actor type {kind.name!r} is not read by {self.name!r}")

        def register(handler: StateHandler[S]) -> StateHandler[S]:
            self.state_handlers.setdefault(kind.name, []).append(handler)
            return handler

        return register

    def setup(self, handler: SetupHandler) -> SetupHandler:
        """Register a handler that creates the projection's tables (idempotently)."""
        self.setups.append(handler)
        return handler

    def handles(self, record: EventRecord) -> bool:
        """Whether any handler wants this stored event."""
        return (record.actor_type, record.type) in self.event_handlers or (
            record.actor_type in self.state_handlers
        )

    def __repr__(self) -> str:
        return f"Projection({self.name!r})"
