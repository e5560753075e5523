"""What ``sourcery inspect`` reports, as plain JSON values: ``--json`` prints them as they
are and :mod:`.inspect_tables` lays them out, so both outputs always say the same.

Stored payloads and states are MessagePack; they are shown decoded without the user's
types (which the CLI does not load), bytes as hex.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from sourcery._apps.history_layout import writer_names
from sourcery._core.clock import VectorClock
from sourcery._core.ids import format_id, id_from_bytes
from sourcery._core.merge import MERGE_WRITER_PREFIX
from sourcery._core.records import ActorRef, EventRecord, PackRecord, SnapshotRecord

__all__ = ["ACTORS_LISTED", "actor_report", "actors_report"]

ACTORS_LISTED = 50
"""Actors a listing shows at most, unless told (``--limit``)."""


def actors_report(
    store: str, refs: Sequence[ActorRef], limit: int = ACTORS_LISTED
) -> dict[str, Any]:
    """One page of a store's actors; ``refs`` may hold one more than is listed. ``next``
    is where the next page starts after (``--after``), or None on the last page."""
    listed = [str(ref) for ref in refs[:limit]]
    more = len(refs) > limit
    return {
        "store": store,
        "actors": listed,
        "more": more,
        "next": listed[-1] if more else None,
    }


def actor_report(
    store: str,
    actor: ActorRef,
    heads: Sequence[SnapshotRecord],
    frontier: VectorClock,
    snapshots: Sequence[SnapshotRecord],
    packs: Sequence[PackRecord | None],
    loose: Sequence[EventRecord],
) -> dict[str, Any]:
    """One actor: its heads, frontier, snapshots (``packs`` in the same order) and loose
    events, oldest first. ``writers`` gives each writer id the short name that the history
    picture (``--svg``) uses for it."""
    head_clocks = {h.clock for h in heads}
    names = writer_names(snapshots, [h.clock for h in heads], [*frontier.writers()])
    return {
        "store": store,
        "actor": str(actor),
        "writers": names,
        "heads": [_head(h) for h in heads],
        "siblings": len(heads) > 1,
        "frontier": frontier.as_dict(),
        "snapshots": [
            {
                "clock": s.clock.as_dict(),
                "parents": [p.as_dict() for p in s.parents],
                "timestamp": _iso(s.timestamp),
                "state_bytes": len(s.state),
                "pack_events": None if pack is None else len(pack.events),
                "head": s.clock in head_clocks,
                "compensations": _compensations(pack),
            }
            for s, pack in zip(snapshots, packs, strict=True)
        ],
        "loose_events": [_event(e) for e in sorted(loose, key=lambda e: e.order)],
    }


def _compensations(pack: PackRecord | None) -> int:
    """Events a merge hook recorded in this pack (their writer ids start with ``merge-``)."""
    if pack is None:
        return 0
    return sum(1 for e in pack.events if e.writer.startswith(MERGE_WRITER_PREFIX))


def _head(snapshot: SnapshotRecord) -> dict[str, Any]:
    return {
        "clock": snapshot.clock.as_dict(),
        "timestamp": _iso(snapshot.timestamp),
        "state": _decoded(snapshot.state),
    }


def _event(e: EventRecord) -> dict[str, Any]:
    return {
        "dot": [e.writer, e.n],
        "id": format_id(id_from_bytes(e.id)),
        "timestamp": _iso(e.timestamp),
        "initiated_by": e.initiated_by,
        "type": e.type,
        "version": e.version,
        "payload": _decoded(e.payload),
    }


def _iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")


def _decoded(data: bytes) -> Any:
    """MessagePack bytes as plain JSON values, without the user's types."""
    try:
        return _plain(msgspec.msgpack.decode(data))
    except msgspec.DecodeError:
        return f"<{len(data)} undecodable bytes>"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
