"""Group commit: many concurrent batches, one transaction, nobody told before it commits.

While one transaction is being written, new batches queue up; they all go into the next
one. A transaction that fails is retried batch by batch, so one bad batch fails only its
own sender.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from .errors import ClosedError, StoreUnavailable
from .records import CommitBatch

__all__ = ["GroupCommitter"]

Flush = Callable[[Sequence[CommitBatch]], Awaitable[None]]


class GroupCommitter:
    """Collects batches from concurrent callers and hands them to ``flush`` together."""

    __slots__ = ("_closed", "_flush", "_max_batches", "_pending", "_task", "transactions")

    def __init__(self, flush: Flush, max_batches: int = 5000) -> None:
        self._flush = flush
        self._max_batches = max_batches
        self._pending: list[tuple[CommitBatch, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.transactions = 0

    def commit(self, batch: CommitBatch) -> asyncio.Future[None]:
        """A future that is done once ``batch`` is durable, or failed as its transaction did.

        Cancelling whoever awaits it does not stop the write: await it through
        ``asyncio.shield`` to learn how the write ended.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ClosedError("the store is closed"))
            return future
        self._pending.append((batch, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return future

    async def _run(self) -> None:
        try:
            while self._pending:
                taken = self._pending[: self._max_batches]
                del self._pending[: len(taken)]
                await self._write(taken)
        finally:
            self._task = None

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


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
