"""How one actor's records, message records and inspection answers are read: once, for
every SQL dialect (plans: see ``dialect``)."""

from __future__ import annotations

from collections.abc import Sequence

from sourcery._core.clock import VectorClock
from sourcery._core.errors import StoreError
from sourcery._core.records import (
    ActorRef,
    Checkpoint,
    Cursor,
    EventRecord,
    PackRecord,
    SnapshotRecord,
    decode_events,
)
from sourcery._stores.sql.dialect import Dialect, Mode, Plan, Query
from sourcery._stores.sql.rows import EVENT_COLUMNS, MessageKey, event_from_row, snapshot_from_row

__all__ = [
    "actors",
    "checkpoint",
    "events",
    "find_messages",
    "frontier",
    "heads",
    "identity",
    "loose_events",
    "pack",
    "schema_version",
    "snapshot",
    "snapshots",
]

_SNAPSHOT = "SELECT clock, parents, state, timestamp FROM snapshots"


def heads(actor: ActorRef) -> Plan[list[SnapshotRecord]]:
    rows = yield Query(
        "SELECT s.clock, s.parents, s.state, s.timestamp FROM heads h JOIN snapshots s"
        " ON s.actor_id = h.actor_id AND s.actor_type = h.actor_type AND s.clock = h.clock"
        " WHERE h.actor_id = ? AND h.actor_type = ?",
        (actor.id, actor.type),
    )
    return [snapshot_from_row(actor, *row) for row in rows]


def frontier(actor: ActorRef) -> Plan[VectorClock]:
    rows = yield Query(
        "SELECT w.writer, (SELECT max(e.n) FROM events e WHERE e.actor_id = w.actor_id"
        " AND e.actor_type = w.actor_type AND e.writer = w.writer)"
        " FROM actor_writers w WHERE w.actor_id = ? AND w.actor_type = ?",
        (actor.id, actor.type),
    )
    return VectorClock((row[0], row[1]) for row in rows)


def loose_events(actor: ActorRef, clock: VectorClock) -> Plan[list[EventRecord]]:
    """Per writer, only the events above what ``clock`` covers: never the whole history."""
    found: list[EventRecord] = []
    for writer, top in (yield from frontier(actor)).items():
        seen = clock.get(writer)
        if top > seen:
            rows = yield Query(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE actor_id = ? AND actor_type = ?"
                " AND writer = ? AND n > ? ORDER BY n",
                (actor.id, actor.type, writer, seen),
            )
            found.extend(event_from_row(row) for row in rows)
    return found


def events(
    dialect: Dialect, actor: ActorRef, dots: Sequence[tuple[str, int]]
) -> Plan[list[EventRecord]]:
    if not dots:
        return []
    rows = yield from dialect.events_by_dots(actor, dots)
    found = {(e.writer, e.n): e for e in map(event_from_row, rows)}
    return [found[dot] for dot in dots if dot in found]


def snapshot(actor: ActorRef, clock: VectorClock) -> Plan[SnapshotRecord | None]:
    row = yield Query(
        f"{_SNAPSHOT} WHERE actor_id = ? AND actor_type = ? AND clock = ?",
        (actor.id, actor.type, clock.to_bytes()),
        Mode.ROW,
    )
    return None if row is None else snapshot_from_row(actor, *row)


def pack(actor: ActorRef, clock: VectorClock) -> Plan[PackRecord | None]:
    row = yield Query(
        "SELECT events FROM packs WHERE actor_id = ? AND actor_type = ? AND clock = ?",
        (actor.id, actor.type, clock.to_bytes()),
        Mode.ROW,
    )
    if row is None:
        return None
    return PackRecord(actor=actor, clock=clock, events=tuple(decode_events(row[0])))


def snapshots(dialect: Dialect, actor: ActorRef) -> Plan[list[SnapshotRecord]]:
    rows = yield Query(
        f"{_SNAPSHOT} WHERE actor_id = ? AND actor_type = ?"
        f" ORDER BY total, {dialect.positions.order('')}",
        (actor.id, actor.type),
    )
    return [snapshot_from_row(actor, *row) for row in rows]


def find_messages(dialect: Dialect, keys: Sequence[MessageKey]) -> Plan[dict[MessageKey, bytes]]:
    """The dots of the message records under these keys, as few queries as the dialect can."""
    rows = yield from dialect.find_messages(keys)
    return {(row[0], row[1], row[2]): row[3] for row in rows}


def actors(limit: int, after: ActorRef | None = None) -> Plan[list[ActorRef]]:
    if after is None:
        rows = yield Query(
            "SELECT DISTINCT actor_type, actor_id FROM actor_writers ORDER BY 1, 2 LIMIT ?",
            (limit,),
        )
    else:
        rows = yield Query(
            "SELECT DISTINCT actor_type, actor_id FROM actor_writers"
            " WHERE (actor_type, actor_id) > (?, ?) ORDER BY 1, 2 LIMIT ?",
            (after.type, after.id, limit),
        )
    return [ActorRef(row[0], row[1]) for row in rows]


def schema_version(dialect: Dialect) -> Plan[int]:
    row = yield Query(dialect.version_query, (), Mode.ROW)
    return int(row[0] or 0) if row is not None else 0


def identity() -> Plan[str]:
    row = yield Query("SELECT value FROM meta WHERE key = 'store_id'", (), Mode.ROW)
    if row is None:
        raise StoreError("the store has no identity; was its schema migrated?")
    return str(row[0])


def checkpoint(source: str) -> Plan[Checkpoint]:
    row = yield Query(
        "SELECT events_seq, events_check, snapshots_seq, snapshots_check,"
        " messages_seq, messages_check FROM checkpoints WHERE source = ?",
        (source,),
        Mode.ROW,
    )
    if row is None:
        return Checkpoint(source)
    return Checkpoint(
        source,
        Cursor(int.from_bytes(row[0], "big"), row[1]),
        Cursor(int.from_bytes(row[2], "big"), row[3]),
        Cursor(int.from_bytes(row[4], "big"), row[5]),
    )
