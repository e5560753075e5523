"""The runtime's side of a state cache: validated reads, writes behind the commands.

A cache is an optimisation only. Its failures are logged once and the cache is skipped
for a while; commands go on from the store.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sourcery._caches import Cache, CacheEntry
from sourcery._core.errors import DecodingError, EncodingError, SourceryError
from sourcery._core.records import ActorRef
from sourcery._engine.cells import Cell

__all__ = ["CACHE_RETRY_SECONDS", "CACHE_WRITE_DELAY", "WriteBehind"]

log = logging.getLogger(__name__)

CACHE_RETRY_SECONDS = 1.0
"""After a cache failure, commands skip the cache this long before trying it again."""
CACHE_WRITE_DELAY = 0.02
"""Entries are written behind the commands, at most this often per actor."""


class WriteBehind:
    """Reads entries for loads and writes the states of changed cells in the background."""

    __slots__ = ("_dirty", "_failing", "_retry_at", "_task", "_writer", "cache", "closing")

    def __init__(self, cache: Cache, writer: str) -> None:
        self.cache = cache
        self._writer = writer
        self._retry_at = 0.0
        self._failing = False
        self._dirty: dict[ActorRef, Cell] = {}
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        """Set when the runtime closes: what is dirty is written without waiting."""

    async def get(self, ref: ActorRef) -> CacheEntry | None:
        if time.monotonic() < self._retry_at:
            return None
        try:
            entry = await self.cache.get(ref)
        except DecodingError as exc:
            log.warning("ignoring a damaged cache entry for %s: %s", ref, exc)
            return None
        except SourceryError as exc:
            self._failed(exc)
            return None
        self._ok()
        if entry is not None and entry.actor != ref:
            return None
        return entry

    def mark(self, cell: Cell) -> None:
        """Have the cell's state written soon."""
        self._dirty[cell.ref] = cell
        if self._task is None:
            self._task = asyncio.create_task(self._write())

    async def flush(self) -> None:
        """Wait for what is being written (the runtime is closing)."""
        self.closing = True
        if self._task is not None:
            await self._task

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + CACHE_RETRY_SECONDS
        if not self._failing:
            self._failing = True
            log.warning("the cache is unavailable; working from the store alone: %s", exc)

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("the cache is back")

    async def _write(self) -> None:
        try:
            while self._dirty:
                if not self.closing:
                    await asyncio.sleep(CACHE_WRITE_DELAY)
                dirty, self._dirty = self._dirty, {}
                if time.monotonic() < self._retry_at:
                    continue
                for cell in dirty.values():
                    if cell.loaded and not await self._put(cell):
                        break
        finally:
            self._task = None

    async def _put(self, cell: Cell) -> bool:
        """Write one cell's entry; False if the cache failed."""
        try:
            state = cell.kind.codec.encode_state(cell.state)
        except EncodingError:
            return True  # too large or not encodable: this actor is not cached
        try:
            entry = CacheEntry(
                actor=cell.ref,
                heads=(cell.base.clock,) if cell.base is not None else (),
                clock=cell.current_clock(self._writer),
                state=state,
                latest=cell.latest,
            )
            await self.cache.put(entry)
        except SourceryError as exc:
            self._failed(exc)
            return False
        self._ok()
        return True
