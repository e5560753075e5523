"""Pure history arithmetic: replay order, folding, and which events a clock covers.

Nothing here does I/O, so every rule about order and coverage is testable in isolation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from sourcery._core.clock import VectorClock
from sourcery._core.records import EventRecord

__all__ = ["advance", "fold", "replay_order"]

S = TypeVar("S")
E = TypeVar("E")


def replay_order(record: EventRecord) -> tuple[int, bytes]:
    """Events are always applied in ``(timestamp, id)`` order."""
    return (record.timestamp, record.id)


def fold(evolve: Callable[[S, E], S], state: S, payloads: Iterable[E]) -> S:
    for payload in payloads:
        state = evolve(state, payload)
    return state


def advance(
    clock: VectorClock, events: Sequence[EventRecord]
) -> tuple[VectorClock, list[EventRecord]]:
    """Extend ``clock`` by the events that continue each writer's run without a gap.

    Counters are gap-free per writer, so an event after a gap means its predecessor has not
    arrived yet (replication in flight); it stays out until the gap is filled. Returns the
    new clock and the events it newly covers, in replay order.
    """
    by_writer: dict[str, list[EventRecord]] = {}
    for e in events:
        by_writer.setdefault(e.writer, []).append(e)
    entries = dict(clock.items())
    taken: list[EventRecord] = []
    for writer, mine in by_writer.items():
        seen = entries.get(writer, 0)
        for e in sorted(mine, key=lambda r: r.n):
            if e.n <= seen:
                continue
            if e.n != seen + 1:
                break
            seen = e.n
            taken.append(e)
        if seen:
            entries[writer] = seen
    taken.sort(key=replay_order)
    return VectorClock(entries), taken
