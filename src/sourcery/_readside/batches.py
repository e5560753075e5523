"""One page of the feed applied to a projection's database, with its position.

The transaction first moves the position from where the runner read it (refused if it
moved: :class:`Moved`), then runs the event handlers in store order, then the state
handlers of the actors the page touched. A handler that raises rolls everything back and
is reported with the index of its event (:class:`Failed`), so that the runner can commit
the events before it and retry that one alone (for a queued write, ``tx.add``, the event
is found by halving the page). A lost connection is not a handler's
failure: :class:`~sourcery.StoreUnavailable` passes through.
"""

from __future__ import annotations

from typing import Any

from sourcery._core.errors import StoreUnavailable
from sourcery._core.records import ActorRef, Cursor, EventRecord
from sourcery._readside import tracking
from sourcery._readside.projection import Projection
from sourcery._readside.states import resolved_state
from sourcery._readside.target import ProjectionTransaction, Target
from sourcery._stores import Store

__all__ = ["Failed", "Moved", "Page", "apply", "follow_snapshots"]

Page = list[tuple[Cursor, EventRecord]]


class Failed(Exception):
    """A handler (or decoding, or resolving) failed at ``page[index]``."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


class Moved(Exception):
    """The position was no longer where the runner read it (another runner, a skip)."""


async def _states(projection: Projection, store: Store, page: Page) -> dict[ActorRef, Any]:
    """The resolved state of each actor in ``page`` with a state handler, in the order of
    each actor's last event; read before the transaction, so it holds no lock meanwhile."""
    touched: dict[ActorRef, int] = {}
    for i, (_, record) in enumerate(page):
        if record.actor_type in projection.state_handlers:
            touched.pop(record.actor, None)
            touched[record.actor] = i
    return await _resolve(projection, store, touched)


async def _resolve(
    projection: Projection, store: Store, touched: dict[ActorRef, int]
) -> dict[ActorRef, Any]:
    found: dict[ActorRef, Any] = {}
    for actor, i in touched.items():
        try:
            found[actor] = (i, await resolved_state(store, projection.codecs[actor.type], actor))
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise Failed(i, exc) from exc
    return found


async def apply(
    projection: Projection, store: Store, target: Target, old: Cursor, page: Page
) -> None:
    """Apply ``page`` and move the position from ``old`` to its end, in one transaction."""
    states = await _states(projection, store, page)
    async with target.transaction() as tx:
        if not await tracking.advance(tx, projection.name, old, page[-1][0], len(page)):
            raise Moved
        for i, (_, record) in enumerate(page):
            handlers = projection.event_handlers.get((record.actor_type, record.type))
            if not handlers:
                continue
            try:
                event = projection.codecs[record.actor_type].decode_event(record)
                for handler in handlers:
                    await handler(event, tx)
            except StoreUnavailable:
                raise
            except Exception as exc:
                raise Failed(i, exc) from exc
        await _handle_states(projection, states, tx)
        try:
            await tx.flush()
        except StoreUnavailable:
            raise
        except Exception as exc:
            # A queued write failed, its event unknown: the runner commits the first half
            # on its own and tries again, so halving finds the event.
            raise Failed(len(page) // 2, exc) from exc


async def _handle_states(
    projection: Projection, states: dict[ActorRef, Any], tx: ProjectionTransaction
) -> None:
    for actor, (i, state) in states.items():
        try:
            for state_handler in projection.state_handlers[actor.type]:
                await state_handler(actor, state, tx)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise Failed(i, exc) from exc


async def follow_snapshots(
    projection: Projection,
    store: Store,
    target: Target,
    position: Cursor,
    cursors: str,
    limit: int,
) -> str | None:
    """Update the states of the actors whose snapshots arrived since ``cursors``.

    A snapshot copied from another replica after its events changes an actor's heads, and
    so (for an ``evolve`` whose order matters) its resolved state, with no new event to
    say so; a state projection follows the snapshots too. Returns the new cursors, or None
    if there was nothing new. Raises :class:`Failed` (index 0) if a state handler fails.
    """
    snapshots, messages = tracking.snapshot_cursors(cursors)
    chunk = await store.read_since(position, snapshots, limit, messages)
    new = tracking.snapshot_text(chunk.snapshots_to, chunk.messages_to)
    if new == cursors:
        return None
    touched = {s.actor: 0 for s, _ in chunk.snapshots if s.actor.type in projection.state_handlers}
    states = await _resolve(projection, store, touched)
    async with target.transaction() as tx:
        if not await tracking.follow(tx, projection.name, cursors, new):
            raise Moved
        await _handle_states(projection, states, tx)
    return new
