"""Group commit: many concurrent batches, one transaction, nobody told before it commits.

While one transaction is being written, new batches queue up; they all go into the next
one. A transaction that fails is retried batch by batch, so one bad batch fails only its
own sender.

Lookups by key are batched the same way (:class:`LookupBatcher`): the keys asked for in
one event-loop turn, or while a query is under way, are looked up by the next query
together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sourcery._core.errors import ClosedError, StoreUnavailable
from sourcery._core.records import CommitBatch

__all__ = ["GroupCommitter", "LookupBatcher"]

Flush = Callable[[Sequence[CommitBatch]], Awaitable[None]]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")


class _Batching(Generic[T, R]):
    """Requests queued by concurrent callers, each with a future of its own, and one task
    that works through them batch by batch while there are any."""

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    def _queue(self, request: T) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return future

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._next()
        finally:
            self._task = None

    async def _next(self) -> None:
        """Take some of ``_pending`` and settle their futures."""
        raise NotImplementedError


class GroupCommitter(_Batching[CommitBatch, None]):
    """Collects batches from concurrent callers and hands them to ``flush`` together."""

    __slots__ = ("_closed", "_flush", "_max_batches", "transactions")

    def __init__(self, flush: Flush, max_batches: int = 5000) -> None:
        super().__init__()
        self._flush = flush
        self._max_batches = max_batches
        self._closed = False
        self.transactions = 0

    def commit(self, batch: CommitBatch) -> asyncio.Future[None]:
        """A future that is done once ``batch`` is durable, or failed as its transaction did.

        Cancelling whoever awaits it does not stop the write: await it through
        ``asyncio.shield`` to learn how the write ended.
        """
        if self._closed:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(ClosedError("the store is closed"))
            return future
        return self._queue(batch)

    async def _next(self) -> None:
        taken = self._pending[: self._max_batches]
        del self._pending[: len(taken)]
        await self._write(taken)

    async def _write(self, taken: list[tuple[CommitBatch, asyncio.Future[None]]]) -> None:
        try:
            await self._flush([batch for batch, _ in taken])
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Cancelled or exiting: nobody may wait forever, and nothing is known written.
                for _, future in taken + self._pending:
                    _settle(future, ClosedError("the store closed during a commit"))
                self._pending.clear()
                raise
            if len(taken) == 1 or isinstance(exc, StoreUnavailable):
                # The store is gone (and its own retries are spent): everybody hears now,
                # rather than each batch retrying alone behind the others.
                for _, future in taken:
                    _settle(future, exc)
                return
            for item in taken:
                await self._write([item])
            return
        self.transactions += 1
        for _, future in taken:
            _settle(future, None)

    async def aclose(self) -> None:
        """Refuse new batches and wait for those already queued to be written."""
        self._closed = True
        task = self._task
        if task is not None:
            await asyncio.shield(task)


class LookupBatcher(_Batching[K, "V | None"]):
    """Collects keys from concurrent callers and looks them up with one ``fetch`` call.

    ``fetch`` gets distinct keys and returns what it found for them; a key it leaves out
    was not found (``None``). A query only ever sees keys asked for before it started, so
    a lookup sees everything committed before it was asked for.
    """

    __slots__ = ("_fetch", "_max_keys", "queries")

    def __init__(
        self, fetch: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]], max_keys: int = 1000
    ) -> None:
        super().__init__()
        self._fetch = fetch
        self._max_keys = max_keys
        self.queries = 0
        """``fetch`` calls made (a retry of one key alone counts too)."""

    def get(self, key: K) -> asyncio.Future[V | None]:
        """A future for what ``fetch`` finds under ``key`` (None if nothing), or its error.

        Each caller gets a future of its own, so cancelling one waiter cancels nobody else.
        """
        return self._queue(key)

    async def _next(self) -> None:
        # One more turn of the event loop first: the deliveries that arrived together reach
        # their lookups in the same few turns, and so share the query.
        try:
            await asyncio.sleep(0)
        except BaseException:
            closed = ClosedError("the store closed during a lookup")
            for _, future in self._pending:
                _settle(future, closed)
            self._pending.clear()
            raise
        # Up to max_keys keys, each with every caller waiting for it.
        keys: dict[K, list[asyncio.Future[V | None]]] = {}
        later: list[tuple[K, asyncio.Future[V | None]]] = []
        for key, future in self._pending:
            waiting = keys.get(key)
            if waiting is None:
                if len(keys) >= self._max_keys:
                    later.append((key, future))
                    continue
                keys[key] = waiting = []
            waiting.append(future)
        self._pending = later
        await self._lookup(keys)

    async def _lookup(self, keys: dict[K, list[asyncio.Future[V | None]]]) -> None:
        # Nobody waits any more for a key whose callers were all cancelled.
        wanted = [k for k, futures in keys.items() if not all(f.done() for f in futures)]
        if not wanted:
            return
        self.queries += 1
        try:
            found = await self._fetch(wanted)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Cancelled or exiting: nobody may wait forever.
                closed = ClosedError("the store closed during a lookup")
                for futures in keys.values():
                    for future in futures:
                        _settle(future, closed)
                for _, future in self._pending:
                    _settle(future, closed)
                self._pending.clear()
                raise
            if len(wanted) > 1 and not isinstance(exc, StoreUnavailable):
                # One key the query could not take must not fail the others.
                for key in wanted:
                    await self._lookup({key: keys[key]})
                return
            for key in wanted:
                for future in keys[key]:
                    _settle(future, exc)
            return
        for key in wanted:
            value = found.get(key)
            for future in keys[key]:
                if not future.done():
                    future.set_result(value)


def _settle(future: asyncio.Future[Any], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
