"""The ordered feeds: what replication copies (``read_since``) and what publishers and
subscriptions follow (``read_events``). Where a row stands is the dialect's business
(:class:`~sourcery._stores.sql.dialect.Positions`); walking the feed is shared."""

from __future__ import annotations

from typing import Any

from sourcery._core.records import (
    ActorRef,
    Chunk,
    Cursor,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
    decode_events,
)
from sourcery._stores.sql.dialect import Dialect, Mode, Plan, Query
from sourcery._stores.sql.rows import (
    EVENT_COLUMNS,
    decode_dots,
    event_from_row,
    message_check,
    snapshot_check,
    snapshot_from_row,
)

__all__ = ["read_events", "read_since"]

_EVENT_ROW = ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))


def _page(dialect: Dialect, table: str, columns: str, after: Cursor, limit: int) -> Query:
    """Up to ``limit`` rows of ``table`` after ``after``: position columns, then ``columns``."""
    pos = dialect.positions
    alias = table[0]
    join = (
        " JOIN packs p ON p.actor_id = s.actor_id AND p.actor_type = s.actor_type"
        " AND p.clock = s.clock"
        if table == "snapshots"
        else ""
    )
    return Query(
        f"SELECT {pos.columns(f'{alias}.')}, {columns} FROM {table} {alias}{join}"
        f" WHERE {pos.after(f'{alias}.')} ORDER BY {pos.order(f'{alias}.')} LIMIT ?",
        (*pos.args(after.seq), limit),
    )


def _still_there(dialect: Dialect, table: str, columns: str, cursor: Cursor) -> Plan[Any]:
    """The ``columns`` of the row a cursor stopped at (None if it is gone)."""
    pos = dialect.positions
    row = yield Query(
        f"SELECT {columns} FROM {table} WHERE {pos.at('')}", pos.args(cursor.seq), Mode.ROW
    )
    return row


def read_since(
    dialect: Dialect, events: Cursor, snapshots: Cursor, limit: int, messages: Cursor
) -> Plan[Chunk]:
    """Run it in one snapshot of the database, so the three streams agree."""
    w = dialect.positions.width
    position = dialect.positions.position
    restarted = False
    if messages.seq:
        row = yield from _still_there(
            dialect, "messages", "actor_type, actor_id, message_id", messages
        )
        if row is None or message_check(*row) != messages.check:
            messages, restarted = Cursor(), True
    if events.seq:
        row = yield from _still_there(dialect, "events", "id", events)
        if row is None or row[0] != events.check:
            events, restarted = Cursor(), True
    if snapshots.seq:
        row = yield from _still_there(
            dialect, "snapshots", "actor_type, actor_id, clock", snapshots
        )
        if row is None or snapshot_check(*row) != snapshots.check:
            snapshots, restarted = Cursor(), True
    message_rows = yield _page(
        dialect, "messages", "m.actor_type, m.actor_id, m.message_id, m.dots", messages, limit
    )
    event_rows = yield _page(dialect, "events", _EVENT_ROW, events, limit)
    snapshot_rows = yield _page(
        dialect,
        "snapshots",
        "s.actor_type, s.actor_id, s.clock, s.parents, s.state, s.timestamp, p.events",
        snapshots,
        limit,
    )

    copied_messages = tuple(
        MessageRecord(ActorRef(kind, ident), message_id, decode_dots(dots, "message record"))
        for kind, ident, message_id, dots in (row[w:] for row in message_rows)
    )
    if message_rows:
        last = message_rows[-1]
        messages = Cursor(position(last[:w]), message_check(*last[w : w + 3]))
    copied_events = tuple(event_from_row(row[w:]) for row in event_rows)
    if event_rows:
        events = Cursor(position(event_rows[-1][:w]), copied_events[-1].id)
    copied: list[tuple[SnapshotRecord, PackRecord]] = []
    for row in snapshot_rows:
        kind, ident, clock, parents, state, ts, pack = row[w:]
        actor = ActorRef(kind, ident)
        snapshot = snapshot_from_row(actor, clock, parents, state, ts)
        copied.append((snapshot, PackRecord(actor, snapshot.clock, tuple(decode_events(pack)))))
        snapshots = Cursor(position(row[:w]), snapshot_check(kind, ident, clock))
    return Chunk(
        copied_events, tuple(copied), events, snapshots, restarted, copied_messages, messages
    )


def read_events(
    dialect: Dialect, after: Cursor, limit: int
) -> Plan[list[tuple[Cursor, EventRecord]]]:
    w = dialect.positions.width
    position = dialect.positions.position
    rows = yield _page(dialect, "events", _EVENT_ROW, after, limit)
    found: list[tuple[Cursor, EventRecord]] = []
    for row in rows:
        record = event_from_row(row[w:])
        found.append((Cursor(position(row[:w]), record.id), record))
    return found
