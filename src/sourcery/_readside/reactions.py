"""Process managers: events in, commands out, each command applied once.

A handler maps an event to commands for other actors. Each command's message id is made
from the manager's name, the handler's name, the event's id and the command's place in
the handler's answer, so a replay after a crash sends the same ids and the store's
de-duplication by message id applies each command once. A page's commands are sent (and
durable: ``Runtime.send`` returns after the commit) before its position moves.

Handlers must be deterministic and must not rename: a renamed handler makes new ids.
A business refusal is best an event (``DebitRefused``) rather than a raised rejection:
stored, it is what a replay finds again; a raised one parks the manager like any failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sourcery._core.actor import ActorType, Event
from sourcery._core.codec import Codec
from sourcery._core.errors import ConfigurationError, StoreUnavailable
from sourcery._core.records import ActorRef, Cursor, check_text
from sourcery._engine.runtime import Runtime
from sourcery._readside import tracking
from sourcery._readside.batches import Failed, Moved, Page
from sourcery._readside.target import Target

__all__ = ["ProcessManager", "Reaction", "apply", "message_id"]

E = TypeVar("E")

Reaction = Callable[[Event[E]], Iterable[tuple[ActorRef[Any, Any, Any], object]]]
"""A handler: the commands an event causes, as ``(actor, command)`` pairs, in order."""


def message_id(manager: str, handler: str, event_id: int, index: int) -> str:
    """The message id of the ``index``-th command ``handler`` gave for an event."""
    return f"pm:{manager}:{handler}:{event_id:032x}:{index}"


class ProcessManager:
    """Reacts to events with commands: ``ProcessManager("transfers", [wallets, ...])``::

        @manager.on(Debited)
        def credit(event):
            return [(wallets(event.payload.to), Credit(...))]

    Run it beside a runtime with ``react(runtime, manager, target=URL)``; its position
    is kept in the ``target`` database.
    """

    def __init__(self, name: str, types: Iterable[ActorType[Any, Any, Any]]) -> None:
        self.name = check_text(name, "process manager name")
        self.codecs: dict[str, Codec[Any, Any, Any]] = {k.name: Codec(k) for k in types}
        if not self.codecs:
            raise ConfigurationError(f"process manager {name!r} reads no actor type")
        self.handlers: dict[tuple[str, str], list[tuple[str, Reaction[Any]]]] = {}
        self.setups: list[Any] = []

    def on(self, *events: type[E]) -> Callable[[Reaction[E]], Reaction[E]]:
        """Register a handler (named by its qualified name) for these event classes."""
        keys = [
            (n, c.kind.event_name(cls))
            for cls in events
            for n, c in self.codecs.items()
            if cls in c.kind.events
        ]
        if not keys or len({cls for cls in events}) != len(events):
            raise ConfigurationError(f"on() needs event classes of {sorted(self.codecs)}")

        def register(handler: Reaction[E]) -> Reaction[E]:
            name = handler.__qualname__
            for key in keys:
                if any(n == name for n, _ in self.handlers.get(key, [])):
                    raise ConfigurationError(f"two handlers named {name!r} for {key}")
                self.handlers.setdefault(key, []).append((name, handler))
            return handler

        return register

    def __repr__(self) -> str:
        return f"ProcessManager({self.name!r})"


async def apply(
    manager: ProcessManager, runtime: Runtime, target: Target, old: Cursor, page: Page
) -> None:
    """Send (durably) the commands of ``page``'s events, then move the position."""
    for i, (_, record) in enumerate(page):
        handlers = manager.handlers.get((record.actor_type, record.type))
        if not handlers:
            continue
        try:
            event = manager.codecs[record.actor_type].decode_event(record)
            for name, handler in handlers:
                for k, (actor, command) in enumerate(handler(event)):
                    ident = message_id(manager.name, name, event.id, k)
                    await runtime.send(actor, command, message_id=ident)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise Failed(i, exc) from exc
    async with target.transaction() as tx:
        if not await tracking.advance(tx, manager.name, old, page[-1][0], len(page)):
            raise Moved
