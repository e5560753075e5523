"""Healing divergent heads, as pure algorithms: latest common ancestor, every branch's
events once, in order, and the merged snapshot they make.

The walks over the snapshot graph are plain generators (sans-I/O, as h11 is): they *ask*
for the snapshots and packs they need (``yield ("snapshot", clock)``) and are sent the
records back, so nothing here touches a store; ``sourcery._engine.resolution`` drives them.
Each walk reads only the part of the graph that is newer than the common ancestor.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sourcery._core.actor import ActorType, Branch
from sourcery._core.clock import VectorClock
from sourcery._core.codec import Codec
from sourcery._core.errors import HandlerError, StoreError
from sourcery._core.history import fold, replay_order
from sourcery._core.records import EventRecord, PackRecord, SnapshotRecord

__all__ = [
    "MERGE_WRITER_PREFIX",
    "ROOT",
    "Plan",
    "Request",
    "Walk",
    "collect_events",
    "find_base",
    "merge_writer",
    "plan_merge",
]

S = TypeVar("S")
E = TypeVar("E")

MERGE_WRITER_PREFIX = "merge-"
"""Writer ids of a merge's own clock entry (and of its compensating events) start so."""

ROOT = VectorClock()
"""The virtual snapshot every history starts from: the initial state, covering nothing."""

Request = tuple[Literal["snapshot", "pack"], VectorClock]
"""What a walk asks its driver for: the snapshot or the pack with this clock."""

Walk = Generator[Request, "SnapshotRecord | PackRecord | None", Any]


def _parents(node: SnapshotRecord | None) -> tuple[VectorClock, ...]:
    if node is None:  # the root
        return ()
    return node.parents or (ROOT,)


def find_base(
    heads: Sequence[SnapshotRecord],
    nodes: dict[VectorClock, SnapshotRecord | None] | None = None,
) -> Generator[Request, Any, VectorClock]:
    """The latest common ancestor of ``heads``; yields the clocks of snapshots it must read.

    Walks from the heads towards the root, newest first (a child always covers more events
    than its parents, so every child is seen before its parents), marking which heads reach
    each snapshot. A snapshot all heads reach is common; its ancestors are then *stale*, and
    the walk stops once only stale snapshots are left. Of several maximal common ancestors
    (criss-cross merges) the one covering most events wins, ties broken by clock bytes, so
    every replica picks the same one. Snapshots read are left in ``nodes`` if given.
    """
    full = (1 << len(heads)) - 1
    if nodes is None:
        nodes = {}
    mask: dict[VectorClock, int] = {}
    stale: set[VectorClock] = set()
    heap: list[tuple[int, bytes, VectorClock]] = []
    for i, head in enumerate(heads):
        nodes[head.clock] = head
        if head.clock not in mask:
            heapq.heappush(heap, (-head.clock.total(), head.clock.to_bytes(), head.clock))
        mask[head.clock] = mask.get(head.clock, 0) | (1 << i)
    common: list[VectorClock] = []
    while heap and any(entry[2] not in stale for entry in heap):
        if common and -heap[0][0] < common[0].total():
            break  # what is left covers fewer events than the ancestor found: it cannot win
        _, _, clock = heapq.heappop(heap)
        if clock not in nodes:  # read a snapshot only once it is reached, not when named
            nodes[clock] = None if clock == ROOT else (yield ("snapshot", clock))
            if clock != ROOT and nodes[clock] is None:
                raise StoreError(f"snapshot {clock!r} is missing: its child arrived first")
        bits = mask[clock]
        is_common = bits == full and clock not in stale
        if is_common:
            common.append(clock)
        for parent in _parents(nodes[clock]):
            if parent not in mask:
                mask[parent] = 0
                heapq.heappush(heap, (-parent.total(), parent.to_bytes(), parent))
            mask[parent] |= bits
            if is_common or clock in stale:
                stale.add(parent)
    if not common:
        return ROOT
    return max(common, key=lambda c: (c.total(), c.to_bytes()))


def collect_events(
    heads: Sequence[SnapshotRecord],
    base: VectorClock,
    known: Mapping[VectorClock, SnapshotRecord | None] | None = None,
) -> Generator[Request, Any, list[list[EventRecord]]]:
    """Per head, the events it covers that ``base`` does not, read from event packs.

    Only snapshots whose clock ``base`` does not dominate are opened: an event missing from
    ``base`` lies in the pack of a snapshot on a path of snapshots that all lack ``base``'s
    cover.
    """
    per_head: list[list[EventRecord]] = []
    seen_nodes: dict[VectorClock, SnapshotRecord] = {
        clock: node for clock, node in (known or {}).items() if node is not None
    }
    packs: dict[VectorClock, PackRecord] = {}
    for head in heads:
        seen_nodes[head.clock] = head
    for head in heads:
        events: dict[tuple[str, int], EventRecord] = {}
        todo = [head.clock]
        visited: set[VectorClock] = set()
        while todo:
            clock = todo.pop()
            if clock in visited or clock == ROOT or clock <= base:
                continue
            visited.add(clock)
            node = seen_nodes.get(clock)
            if node is None:
                fetched = yield ("snapshot", clock)
                if not isinstance(fetched, SnapshotRecord):
                    raise StoreError(f"snapshot {clock!r} is missing: its child arrived first")
                node = seen_nodes[clock] = fetched
            pack = packs.get(clock)
            if pack is None:
                fetched_pack = yield ("pack", clock)
                if not isinstance(fetched_pack, PackRecord):
                    raise StoreError(f"the event pack of snapshot {clock!r} is missing")
                pack = packs[clock] = fetched_pack
            for e in pack.events:
                if e.n > base.get(e.writer):
                    events[(e.writer, e.n)] = e
            todo.extend(_parents(node))
        per_head.append(sorted(events.values(), key=replay_order))
    return per_head


def merge_writer(heads: Sequence[SnapshotRecord]) -> tuple[str, bytes]:
    """A writer id and seed that depend only on the heads, so that compensating events
    made by any replica for the same merge are the same records."""
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(h.clock.to_bytes() for h in heads):
        digest.update(len(key).to_bytes(4, "big"))
        digest.update(key)
    raw = digest.digest()
    return f"{MERGE_WRITER_PREFIX}{raw[:8].hex()}", raw


@dataclass(frozen=True, slots=True)
class Plan:
    """A merge worked out but not yet written."""

    snapshot: SnapshotRecord
    pack: PackRecord
    compensations: tuple[EventRecord, ...]
    merged_events: int


def plan_merge(
    spec: ActorType[S, Any, E],
    codec: Codec[S, Any, E],
    heads: Sequence[SnapshotRecord],
    base_state: S,
    base_clock: VectorClock,
    per_head: list[list[EventRecord]],
) -> Plan:
    """Replay every branch's events once on the ancestor's state; apply the merge hook."""
    actor = heads[0].actor
    unique: dict[tuple[str, int], EventRecord] = {}
    for events in per_head:
        for e in events:
            if e.n > base_clock.get(e.writer):  # the base's own events are in its state
                unique[(e.writer, e.n)] = e
    ordered = sorted(unique.values(), key=replay_order)
    decoded = {key: codec.decode_payload(e.type, e.version, e.payload) for key, e in unique.items()}
    try:
        state = fold(spec.evolve, base_state, (decoded[(e.writer, e.n)] for e in ordered))
    except Exception as exc:
        raise HandlerError(f"evolve failed merging {actor}: {exc!r}") from exc
    clock = VectorClock.merge_all(h.clock for h in heads)
    compensations: list[EventRecord] = []
    if spec.on_merge is not None:
        branches = [
            Branch(
                state=codec.decode_state(h.state),
                events=tuple(codec.decode_event(e, actor) for e in events),
            )
            for h, events in zip(heads, per_head, strict=True)
        ]
        try:
            extra = list(spec.on_merge(state, branches))
            for payload in extra:
                if codec.event_type(payload) is None:
                    raise TypeError(f"{type(payload).__name__} is not an event type")
            state = fold(spec.evolve, state, extra)
        except Exception as exc:
            raise HandlerError(f"the merge hook failed on {actor}: {exc!r}") from exc
        if extra:
            writer, seed = merge_writer(heads)
            last = max((e.timestamp for e in ordered), default=max(h.timestamp for h in heads))
            node = int.from_bytes(seed[:8], "big") >> 16
            for i, payload in enumerate(extra, start=1):
                name, version = codec.event_type(payload) or ("", 0)
                event_id = (last << 64) | (node << 16) | (i & 0xFFFF)
                compensations.append(
                    EventRecord(
                        actor.type,
                        actor.id,
                        writer,
                        i,
                        event_id.to_bytes(16, "big"),
                        last,
                        f"merge:{seed.hex()}",
                        name,
                        version,
                        codec.encode_payload(payload),
                    )
                )
    # The merge's own entry: merges of different sets of heads can cover the same events
    # (one head a descendant of another's sibling), and must still never share a key. It
    # names the compensating events, or no event at all when there are none.
    merger, _ = merge_writer(heads)
    clock = clock.with_entry(merger, max(1, len(compensations)))
    snapshot = SnapshotRecord(
        actor=actor,
        clock=clock,
        parents=tuple(sorted((h.clock for h in heads), key=VectorClock.to_bytes)),
        state=codec.encode_state(state),
        timestamp=max(h.timestamp for h in heads),
    )
    pack = PackRecord(actor=actor, clock=clock, events=tuple(compensations))
    return Plan(snapshot, pack, tuple(compensations), len(ordered))
