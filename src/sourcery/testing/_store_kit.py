"""What the store contract suite is built from: the harness a backend's test class fills in
(one hook, :meth:`StoreHarness.create_store`), and the records its tests write.

Only the contract suite imports this module; it needs pytest (and hypothesis).
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st

from sourcery._core.clock import VectorClock
from sourcery._core.ids import id_to_bytes, new_id
from sourcery._core.records import (
    ActorRef,
    CommitBatch,
    EventRecord,
    PackRecord,
    SnapshotRecord,
)
from sourcery._stores.base import ActorRecords, Store

Reopen = Callable[[], Awaitable[Store]]


class StoreHarness(abc.ABC):
    """How the contract gets stores of one backend. Subclass it (through
    :class:`~sourcery.testing.stores.StoreContract`) and implement :meth:`create_store`."""

    persistent: ClassVar[bool] = False
    """Whether :meth:`reopen_store` opens the database :meth:`create_store` made: set it
    and implement that method to run the tests of durability and of concurrent stores."""

    @abc.abstractmethod
    async def create_store(self) -> Store:
        """Open a new, empty store (each test calls it once)."""

    async def reopen_store(self) -> Store:
        """Open another store on the database the last :meth:`create_store` made, while
        that one is open or after it closed."""
        raise NotImplementedError(f"{type(self).__name__} does not persist")

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        """A fresh, empty store, closed after the test."""
        opened = await self.create_store()
        try:
            yield opened
        finally:
            await opened.aclose()

    @pytest.fixture
    def requires_persistence(self) -> None:
        """Skip the test unless another store can open the same database."""
        if not self.persistent:
            pytest.skip(
                f"{type(self).__name__}: reopening gives a new, empty store, "
                "so there is nothing to persist across a reopen"
            )

    @pytest.fixture
    async def reopen(self, requires_persistence: None) -> AsyncIterator[Reopen]:
        """Open another store on this test's database; every one it opened is closed after."""
        opened: list[Store] = []

        async def _open() -> Store:
            again = await self.reopen_store()
            opened.append(again)
            return again

        try:
            yield _open
        finally:
            for s in opened:
                await s.aclose()


# -- strategies ----------------------------------------------------------------------------

WRITER_IDS = ("a", "b", "c", "d", "w-1")


def writers() -> st.SearchStrategy[str]:
    return st.sampled_from(WRITER_IDS)


def clocks(max_value: int) -> st.SearchStrategy[VectorClock]:
    """A vector clock over :func:`writers` (zero entries included on purpose)."""
    return st.dictionaries(writers(), st.integers(0, max_value)).map(VectorClock)


# -- building records ----------------------------------------------------------------------

A = ActorRef("account", "a-1")
B = ActorRef("account", "b-2")
EMPTY = VectorClock.empty()

_timestamps = itertools.count(1_700_000_000_000)


def event(
    actor: ActorRef,
    writer: str,
    n: int,
    *,
    payload: bytes | None = None,
    initiated_by: str = "msg-1",
    type: str = "Deposited",
) -> EventRecord:
    """A new event with dot ``(writer, n)``; a fresh id each call, so never equal to another."""
    return EventRecord(
        actor_type=actor.type,
        actor_id=actor.id,
        writer=writer,
        n=n,
        id=id_to_bytes(new_id()),
        timestamp=next(_timestamps),
        initiated_by=initiated_by,
        type=type,
        version=1,
        payload=f"{writer}:{n}".encode() if payload is None else payload,
    )


def clock(**entries: int) -> VectorClock:
    return VectorClock(entries)


def snapshot(
    actor: ActorRef,
    vc: VectorClock,
    parents: Iterable[VectorClock] = (),
    *,
    events: Iterable[EventRecord] = (),
    state: bytes | None = None,
) -> tuple[SnapshotRecord, PackRecord]:
    snap = SnapshotRecord(
        actor=actor,
        clock=vc,
        parents=tuple(parents),
        state=repr(vc).encode() if state is None else state,
        timestamp=next(_timestamps),
    )
    return snap, PackRecord(actor=actor, clock=vc, events=tuple(events))


def dots_of(events: Iterable[EventRecord]) -> list[tuple[str, int]]:
    return sorted((e.writer, e.n) for e in events)


def by_dot(events: Iterable[EventRecord]) -> list[EventRecord]:
    return sorted(events, key=lambda e: (e.writer, e.n))


def snap_key(s: SnapshotRecord) -> tuple[Any, ...]:
    """A snapshot as comparable data; the order of its parents carries no meaning."""
    return (s.actor, s.clock, frozenset(s.parents), s.state, s.timestamp)


def head_clocks(heads: Iterable[SnapshotRecord]) -> set[VectorClock]:
    return {h.clock for h in heads}


async def all_events(store: ActorRecords, actor: ActorRef) -> list[EventRecord]:
    return by_dot(await store.loose_events(actor, EMPTY))


async def dump(store: Store, actor: ActorRef, message_ids: Sequence[str] = ()) -> dict[str, Any]:
    """Everything the store tells about one actor."""
    snapshots = await store.snapshots(actor)
    return {
        "events": await all_events(store, actor),
        "frontier": await store.frontier(actor),
        "snapshots": [snap_key(s) for s in snapshots],
        "heads": sorted((snap_key(h) for h in await store.heads(actor)), key=repr),
        "packs": [await store.pack(actor, s.clock) for s in snapshots],
        "messages": [await store.message(actor, m) for m in message_ids],
        "listed": actor in await store.actors(limit=10_000),
    }


async def assert_nothing_of(store: Store, actor: ActorRef, message_ids: Sequence[str]) -> None:
    assert await dump(store, actor, message_ids) == {
        "events": [],
        "frontier": EMPTY,
        "snapshots": [],
        "heads": [],
        "packs": [],
        "messages": [None] * len(message_ids),
        "listed": False,
    }


# -- closing -------------------------------------------------------------------------------------

Operation = Callable[[Store], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "register_writer": lambda s: s.register_writer("w-late"),
    "commit": lambda s: s.commit(CommitBatch(events=[event(A, "w1", 1)])),
    "commit-empty": lambda s: s.commit(CommitBatch()),
    "heads": lambda s: s.heads(A),
    "frontier": lambda s: s.frontier(A),
    "loose_events": lambda s: s.loose_events(A, EMPTY),
    "events": lambda s: s.events(A, [("w1", 1)]),
    "snapshot": lambda s: s.snapshot(A, clock(w1=1)),
    "pack": lambda s: s.pack(A, clock(w1=1)),
    "snapshots": lambda s: s.snapshots(A),
    "message": lambda s: s.message(A, "m"),
    "actors": lambda s: s.actors(),
}


HOSTILE = [
    "'",
    '"',
    'it\'s "quoted"',
    "'; DROP TABLE events; --",
    '"); DELETE FROM snapshots; --',
    "back\\slash\\",
    "\\x00",
    "%_*?[]",
    "line\nbreak\ttab\rreturn",
    "emoji 🎉👩‍👩‍👧",
    "\u202eright-to-left",
    "é",  # precomposed
    "e\u0301",  # the same letter, decomposed: a different id
    "E\u0301",
    "trailing space ",
    "trailing space",
    "x" * 255,
    "é" * 127 + "x",  # 255 bytes
    "🎉" * 63 + "abc",  # 255 bytes
]


PAYLOADS = [
    b"",
    b"\x00",
    b"\x00\x00ab\x00",
    bytes(range(256)),
    b"\xff\xfe\xfd not utf-8 \xc3\x28 \xed\xa0\x80",
    b"'; DROP TABLE events; --",
    b"\\\x00'\"",
    bytes(range(256)) * 4096,  # 1 MiB
]


_actor_numbers = itertools.count()
