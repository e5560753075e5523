"""Each projection's position, kept in its own database beside the tables it writes.

One row per projection name. The runner moves the position in the same transaction as the
handlers' writes, and only from the position it read (``WHERE position = old``), so two
runners of one projection can never both apply a batch: the second one's update finds no
row and its transaction rolls back. Positions are kept as decimal text, since PostgreSQL's
(transaction id, sequence) positions pass 64 bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from sourcery._core.records import Cursor
from sourcery._readside.target import ProjectionTransaction

__all__ = [
    "TABLE",
    "ProjectionStatus",
    "Tracked",
    "advance",
    "ensure",
    "fail",
    "follow",
    "load",
    "names",
    "skip",
    "snapshot_cursors",
    "snapshot_text",
    "unpark",
]

TABLE = "sourcery_projections"

State = Literal["running", "failing", "parked"]

_COLUMNS = (
    "position, checks, events, state, failures, error, failed_event, failed_position,"
    " failed_check, updated, snapshots"
)


def _ddl(dialect: str) -> str:
    blob, big = ("bytea", "bigint") if dialect == "postgresql" else ("BLOB", "INTEGER")
    return (
        f"CREATE TABLE IF NOT EXISTS {TABLE} (name text PRIMARY KEY,"
        f" position text NOT NULL, checks {blob} NOT NULL, events {big} NOT NULL,"
        f" state text NOT NULL, failures integer NOT NULL, error text NOT NULL,"
        f" failed_event text NOT NULL, failed_position text NOT NULL,"
        f" failed_check {blob} NOT NULL, updated {big} NOT NULL, snapshots text NOT NULL)"
    )


def _now() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Tracked:
    """A projection's row: where it stands and how its current event fares."""

    position: Cursor
    events: int
    state: State
    failures: int
    error: str
    failed_event: str
    failed_position: Cursor
    updated: int
    snapshots: str
    """How far a state projection has followed the snapshots (see :func:`snapshot_cursors`)."""


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """What ``status`` reports about one projection."""

    name: str
    state: State
    """``running``; ``failing`` (a handler raised, retried with backoff); ``parked``
    (stopped at ``failed_event`` until it is skipped or the projection restarts)."""
    position: Cursor
    """The last store position whose effect is committed."""
    events: int
    """Feed events passed since the projection was created (handled or not of its types)."""
    lag: int
    """Events in the store after ``position`` (counted up to a bound)."""
    lag_seconds: float
    """How long ago the oldest event not yet projected was written (0 when caught up)."""
    failures: int
    error: str
    failed_event: int | None
    """The id of the event whose handler failed, or None."""
    updated: int
    """When the row last changed, in Unix milliseconds."""


async def ensure(tx: ProjectionTransaction, name: str) -> None:
    """Create the table and the projection's row (at the beginning) if missing."""
    await tx.execute(_ddl(tx.dialect))
    await tx.execute(
        f"INSERT INTO {TABLE} (name, {_COLUMNS}) VALUES (?, '0', ?, 0, 'running', 0, '', '',"
        " '0', ?, ?, '') ON CONFLICT (name) DO NOTHING",
        (name, b"", b"", _now()),
    )


async def names(tx: ProjectionTransaction) -> list[str]:
    """The projections this database tracks (none if it has no tracking table)."""
    if tx.dialect == "postgresql":
        exists = await tx.fetch("SELECT to_regclass(?)::text", (TABLE,))
    else:
        exists = await tx.fetch("SELECT name FROM sqlite_master WHERE name = ?", (TABLE,))
    if not exists or exists[0][0] is None:
        return []
    return [str(n) for (n,) in await tx.fetch(f"SELECT name FROM {TABLE} ORDER BY name")]


async def load(tx: ProjectionTransaction, name: str) -> Tracked | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM {TABLE} WHERE name = ?", (name,))
    if not rows:
        return None
    pos, check, events, state, failures, error, failed, failed_pos, failed_check, upd, snaps = rows[
        0
    ]
    return Tracked(
        position=Cursor(int(pos), bytes(check)),
        events=int(events),
        state=state,
        failures=int(failures),
        error=error,
        failed_event=failed,
        failed_position=Cursor(int(failed_pos), bytes(failed_check)),
        updated=int(upd),
        snapshots=snaps,
    )


async def advance(
    tx: ProjectionTransaction, name: str, old: Cursor, new: Cursor, passed: int
) -> bool:
    """Move the position from ``old`` to ``new``; False if it no longer stood at ``old``."""
    changed = await tx.execute(
        f"UPDATE {TABLE} SET position = ?, checks = ?, events = events + ?, state = 'running',"
        " failures = 0, error = '', failed_event = '', failed_position = '0',"
        " failed_check = ?, updated = ? WHERE name = ? AND position = ?",
        (str(new.seq), new.check, passed, b"", _now(), name, str(old.seq)),
    )
    return changed == 1


def snapshot_cursors(text: str) -> tuple[Cursor, Cursor]:
    """The snapshot and message cursors of the replication feed a state projection follows
    (it reads the snapshots; the messages cursor only keeps that feed from re-reading)."""
    if not text:
        return Cursor(), Cursor()
    snap, snap_check, message, message_check = text.split(":")
    return (
        Cursor(int(snap), bytes.fromhex(snap_check)),
        Cursor(int(message), bytes.fromhex(message_check)),
    )


def snapshot_text(snapshots: Cursor, messages: Cursor) -> str:
    return f"{snapshots.seq}:{snapshots.check.hex()}:{messages.seq}:{messages.check.hex()}"


async def follow(tx: ProjectionTransaction, name: str, old: str, new: str) -> bool:
    """Move the snapshot cursors from ``old`` to ``new``; False if they moved meanwhile."""
    changed = await tx.execute(
        f"UPDATE {TABLE} SET snapshots = ?, updated = ? WHERE name = ? AND snapshots = ?",
        (new, _now(), name, old),
    )
    return changed == 1


async def fail(
    tx: ProjectionTransaction,
    name: str,
    at: Cursor,
    failed: tuple[Cursor, int],
    failures: int,
    error: str,
    *,
    park: bool,
) -> bool:
    """Record a failed attempt at the event after ``at`` (its position and id)."""
    changed = await tx.execute(
        f"UPDATE {TABLE} SET state = ?, failures = ?, error = ?, failed_event = ?,"
        " failed_position = ?, failed_check = ?, updated = ? WHERE name = ? AND position = ?",
        (
            "parked" if park else "failing",
            failures,
            error,
            str(failed[1]),
            str(failed[0].seq),
            failed[0].check,
            _now(),
            name,
            str(at.seq),
        ),
    )
    return changed == 1


async def skip(tx: ProjectionTransaction, name: str, event_id: int) -> bool:
    """Move a parked projection past the event it is parked at, if it is ``event_id``."""
    row = await load(tx, name)
    if row is None or row.state != "parked" or row.failed_event != str(event_id):
        return False
    return await advance(tx, name, row.position, row.failed_position, 1)


async def unpark(tx: ProjectionTransaction, name: str) -> None:
    """Let a parked projection try its event again (a restart, with new code, does this)."""
    await tx.execute(
        f"UPDATE {TABLE} SET state = 'running', failures = 0, updated = ?"
        " WHERE name = ? AND state = 'parked'",
        (_now(), name),
    )
