"""How a group of batches is written, and how a schema is brought up to date: once, for
every SQL dialect. These are plans (see ``dialect``): they yield statements and never
touch a connection, so the caller decides the transaction around them."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from sourcery._core.errors import StoreError
from sourcery._core.records import (
    Checkpoint,
    CommitBatch,
    EventRecord,
    PackRecord,
    SnapshotRecord,
    encode_events,
)
from sourcery._stores.sql.dialect import Dialect, Mode, Plan, Query, WriterKey
from sourcery._stores.sql.rows import EVENT_COLUMNS, encode_parents, event_from_row, replaced_heads
from sourcery._stores.sql.schema import SCHEMA_VERSION, checked_version, statements

__all__ = ["SELECT_EVENT", "flush", "migrate", "register_writer"]

SELECT_EVENT = (
    f"SELECT {EVENT_COLUMNS} FROM events"
    " WHERE actor_id = ? AND actor_type = ? AND writer = ? AND n = ?"
)


def flush(
    dialect: Dialect, batches: Sequence[CommitBatch], known: Collection[WriterKey]
) -> Plan[set[WriterKey]]:
    """Write the batches (in the caller's transaction); return the writers-per-actor rows
    it added, which the caller may skip next time once the transaction committed."""
    events = [e for b in batches for e in b.events]
    messages = [m for b in batches for m in b.messages]
    # The index of writers per actor: a row this store recently wrote is skipped, so the
    # hot path pays a set lookup, not an insert per event. Sorted, so two transactions
    # take the rows' locks in one order.
    firsts = sorted({k for e in events if (k := (e.actor_id, e.actor_type, e.writer)) not in known})
    if events or messages:
        suspects = yield from dialect.write_rows(events, messages, firsts)
        yield from _check_same(suspects)
    # Snapshots take per-actor locks (where the dialect locks): always in one order, so two
    # transactions never wait for each other's locks.
    snapshots = sorted(
        (item for b in batches for item in b.snapshots),
        key=lambda item: (item[0].actor.type, item[0].actor.id, item[0].clock.total()),
    )
    for snapshot, pack in snapshots:
        yield from _write_snapshot(dialect, snapshot, pack)
    for b in batches:
        if b.checkpoint is not None:
            yield _checkpoint(b.checkpoint)
    return set(firsts)


def _check_same(events: Sequence[EventRecord]) -> Plan[None]:
    """Some dots were taken already (or twice in this group): fine only where the stored
    event is this very event."""
    for e in events:
        row = yield Query(SELECT_EVENT, (e.actor_id, e.actor_type, e.writer, e.n), Mode.ROW)
        if row is not None and event_from_row(row) != e:
            raise StoreError(
                f"conflict: dot ({e.writer!r}, {e.n}) of {e.actor} is already another event"
            )


def _write_snapshot(dialect: Dialect, snapshot: SnapshotRecord, pack: PackRecord) -> Plan[None]:
    actor = snapshot.actor
    key = snapshot.clock.to_bytes()
    # Heads of one actor change under a lock, so concurrent writers cannot both decide
    # that their snapshot is the only head.
    lock = dialect.lock_actor(actor)
    if lock is not None:
        yield lock
    inserted = yield Query(
        "INSERT INTO snapshots (actor_id, actor_type, clock, total, parents, state, timestamp)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            actor.id,
            actor.type,
            key,
            snapshot.clock.total(),
            encode_parents(snapshot.parents),
            snapshot.state,
            snapshot.timestamp,
        ),
        Mode.COUNT,
    )
    if not inserted:
        return
    yield Query(
        "INSERT INTO packs (actor_id, actor_type, clock, events) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (actor.id, actor.type, key, encode_events(list(pack.events))),
        Mode.COUNT,
    )
    heads = yield Query(
        "SELECT clock FROM heads WHERE actor_id = ? AND actor_type = ?", (actor.id, actor.type)
    )
    replaced = replaced_heads([bytes(row[0]) for row in heads], snapshot.clock)
    if replaced is None:
        return
    for old in replaced:
        yield Query(
            "DELETE FROM heads WHERE actor_id = ? AND actor_type = ? AND clock = ?",
            (actor.id, actor.type, old),
            Mode.COUNT,
        )
    yield Query(
        "INSERT INTO heads (actor_id, actor_type, clock) VALUES (?, ?, ?)",
        (actor.id, actor.type, key),
        Mode.COUNT,
    )


def _checkpoint(cp: Checkpoint) -> Query:
    return Query(
        "INSERT INTO checkpoints (source, events_seq, events_check, snapshots_seq,"
        " snapshots_check, messages_seq, messages_check) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (source) DO UPDATE SET events_seq = excluded.events_seq,"
        " events_check = excluded.events_check, snapshots_seq = excluded.snapshots_seq,"
        " snapshots_check = excluded.snapshots_check, messages_seq = excluded.messages_seq,"
        " messages_check = excluded.messages_check",
        (
            cp.source,
            cp.events.seq.to_bytes(16, "big"),
            cp.events.check,
            cp.snapshots.seq.to_bytes(16, "big"),
            cp.snapshots.check,
            cp.messages.seq.to_bytes(16, "big"),
            cp.messages.check,
        ),
        Mode.COUNT,
    )


def register_writer(writer: str) -> Plan[None]:
    claimed = yield Query(
        "INSERT INTO writers (writer, started) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (writer, int(time.time() * 1000)),
        Mode.COUNT,
    )
    if not claimed:
        raise StoreError(f"writer id {writer!r} was already used on this store")


def migrate(dialect: Dialect, where: str) -> Plan[int]:
    """Bring the schema to :data:`SCHEMA_VERSION` (in the caller's transaction, under the
    caller's lock); return the version it was at, in today's numbering (0: new)."""
    row = yield Query(dialect.version_query, (), Mode.ROW)
    recorded = int(row[0] or 0) if row is not None else 0
    version = checked_version(dialect, recorded, where)
    if version != recorded:
        yield dialect.record_version(version)
    for number in range(version + 1, SCHEMA_VERSION + 1):
        for ddl in statements(dialect, number):
            yield Query(ddl, (), Mode.EXECUTE)
        yield dialect.record_version(number)
    return version
