"""Actors held in memory: one *cell* per actor, bounded by passivating idle ones."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.codec import Codec
from sourcery._core.records import ActorRef, EventRecord, SnapshotRecord

__all__ = ["ActorKind", "Cell", "Cells"]


class ActorKind:
    """An actor type with what the runtime derives from it once."""

    __slots__ = ("codec", "commands", "spec")

    def __init__(self, spec: ActorType[Any, Any, Any], max_payload: int) -> None:
        self.spec = spec
        self.codec: Codec[Any, Any, Any] = Codec(spec, max_payload)
        self.commands = frozenset(spec.commands)


class Cell:
    """One actor held in memory: the snapshot it was loaded from, the events applied since
    (in replay order), and the resulting state and clock."""

    __slots__ = (
        "base",
        "base_clock",
        "clock",
        "kind",
        "latest",
        "loaded",
        "lock",
        "own",
        "pending",
        "ref",
        "since",
        "since_count",
        "state",
        "tenure",
        "users",
    )

    def __init__(self, ref: ActorRef, kind: ActorKind) -> None:
        self.ref = ref
        self.kind = kind
        self.lock = asyncio.Lock()
        """Held from decide to commit: one actor sees one message at a time."""
        self.users = 0
        self.loaded = False
        self.base: SnapshotRecord | None = None
        self.base_clock = VectorClock()
        self.since: list[tuple[EventRecord, Any]] | None = []
        """Events applied since ``base``, in replay order; None until needed after a cache hit."""
        self.since_count = 0
        self.latest = 0
        """The latest timestamp among the events the state reflects."""
        self.state: Any = None
        self.clock = VectorClock()
        """Covers what was loaded; this runtime's own newer events are counted in ``own``."""
        self.own = 0
        self.pending: asyncio.Future[None] | None = None
        """A write whose waiter was cancelled: settle it before touching the actor again."""
        self.tenure: object = None
        """Where its last command came from (see ``Runtime.send``'s ``tenure``)."""

    def current_clock(self, writer: str) -> VectorClock:
        if self.own > self.clock.get(writer):
            self.clock = self.clock.with_entry(writer, self.own)
        return self.clock

    @property
    def idle(self) -> bool:
        return self.users == 0 and (self.pending is None or self.pending.done())


class Cells:
    """The cells in memory, least recently used first; at most ``limit`` of them idle.

    Dropping a cell loses nothing: the store can always rebuild it.
    """

    __slots__ = ("_cells", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._cells: OrderedDict[ActorRef, Cell] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cells)

    def get(self, ref: ActorRef) -> Cell | None:
        return self._cells.get(ref)

    def use(self, ref: ActorRef, kind: ActorKind) -> Cell:
        """The actor's cell, made if needed, counted as in use until ``release``."""
        cell = self._cells.get(ref)
        if cell is None:
            cell = self._cells[ref] = Cell(ref, kind)
        else:
            self._cells.move_to_end(ref)
        cell.users += 1
        return cell

    def release(self, cell: Cell) -> None:
        cell.users -= 1
        if len(self._cells) > self.limit:
            self._passivate()

    def _passivate(self) -> None:
        """Drop the least recently used idle cells until the bound holds again.

        The oldest cells are nearly always idle, so this stops after a few steps.
        """
        excess = len(self._cells) - self.limit
        idle: list[ActorRef] = []
        for ref, cell in self._cells.items():
            if cell.idle:
                idle.append(ref)
                if len(idle) >= excess:
                    break
        for ref in idle:
            del self._cells[ref]
