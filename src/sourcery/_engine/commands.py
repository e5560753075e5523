"""The steps of one command that need no store: decide, the new event records, evolve,
and the batch that makes them durable (with a snapshot when one is due)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sourcery._core.actor import Event
from sourcery._core.errors import HandlerError, Rejected
from sourcery._core.history import fold
from sourcery._core.ids import IdGenerator, id_to_bytes
from sourcery._core.records import (
    CommitBatch,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
)
from sourcery._engine.cells import Cell

__all__ = ["Draft", "decide", "draft", "evolve", "generated_message_id", "plan_batch"]


def generated_message_id(value: int) -> str:
    """Ids the runtime makes up for messages that came without one (never deduplicated)."""
    return f"~{value:032x}"


def decide(cell: Cell, command: object) -> Sequence[Any]:
    """The user's ``decide``; its own failures become :class:`HandlerError`."""
    ref = cell.ref
    try:
        payloads = cell.kind.spec.decide(cell.state, command)
    except Rejected:
        raise
    except Exception as exc:
        cell.loaded = False  # in case it changed the state in place before failing
        raise HandlerError(f"decide failed on {ref} for {command!r}: {exc!r}") from exc
    if isinstance(payloads, (str, bytes)) or not isinstance(payloads, Sequence):
        raise HandlerError(
            f"decide must return a sequence of events, got {type(payloads).__name__}"
        )
    return payloads


@dataclass(slots=True)
class Draft:
    """A command's events before they are written: records to store, events to return."""

    message_id: str
    n: int
    """The writer's counter for this actor after these events."""
    records: list[EventRecord] = field(default_factory=list)
    events: list[Event[Any]] = field(default_factory=list)
    state: Any = None
    since: list[tuple[EventRecord, Any]] | None = None
    snapshot: SnapshotRecord | None = None


def draft(
    cell: Cell, payloads: Sequence[Any], message_id: str, writer: str, ids: IdGenerator
) -> Draft:
    """Give each payload its envelope: a new id, the next dot of ``writer``."""
    ref = cell.ref
    codec = cell.kind.codec
    out = Draft(message_id=message_id, n=cell.own)
    for payload in payloads:
        named = codec.event_type(payload)
        if named is None:
            raise HandlerError(
                f"decide returned {type(payload).__name__}, "
                f"not an event type of {cell.kind.spec.name!r}"
            )
        name, version = named
        data = codec.encode_payload(payload)
        event_id = ids.new()
        timestamp = event_id >> 64
        out.n += 1
        out.records.append(
            EventRecord(
                ref.type,
                ref.id,
                writer,
                out.n,
                id_to_bytes(event_id),
                timestamp,
                message_id,
                name,
                version,
                data,
            )
        )
        out.events.append(
            Event(event_id, ref, timestamp, message_id, writer, out.n, name, version, payload)
        )
    return out


def evolve(cell: Cell, work: Draft, since: list[tuple[EventRecord, Any]] | None) -> None:
    """Apply the drafted events to the cell's state; ``since`` grows by them.

    Ids only grow and loading moved them past every loaded event, so these events replay
    after everything the state holds: applying them now is replay order.
    """
    work.since = (
        None
        if since is None
        else since + [(r, e.payload) for r, e in zip(work.records, work.events, strict=True)]
    )
    try:
        work.state = fold(cell.kind.spec.evolve, cell.state, (e.payload for e in work.events))
    except Exception as exc:
        cell.loaded = False  # evolve may have changed the state in place before failing
        raise HandlerError(f"evolve failed on {cell.ref}: {exc!r}") from exc


def plan_batch(cell: Cell, work: Draft, *, given: bool, due: bool, writer: str) -> CommitBatch:
    """The records to commit at once: events, the message record if the sender named the
    message (so a redelivery is recognised), and a snapshot with its pack when one is due."""
    ref = cell.ref
    batch = CommitBatch(events=work.records)
    if given:
        dots = tuple((writer, r.n) for r in work.records)
        batch.messages = [MessageRecord(actor=ref, message_id=work.message_id, dots=dots)]
    since = work.since
    if due and since is not None:
        clock = cell.clock.with_entry(writer, work.n) if work.n else cell.clock
        base = cell.base
        work.snapshot = SnapshotRecord(
            actor=ref,
            clock=clock,
            parents=(cell.base_clock,) if base is not None else (),
            state=cell.kind.codec.encode_state(work.state),
            timestamp=max(base.timestamp if base else 0, since[-1][0].timestamp),
        )
        pack = PackRecord(actor=ref, clock=clock, events=tuple(r for r, _ in since))
        batch.snapshots.append((work.snapshot, pack))
    return batch
