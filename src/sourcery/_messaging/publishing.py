"""Publishing committed events from the store, never from the commit path.

A :class:`Publisher` reads the store's event order from its checkpoint, hands each page
to the bus, and moves the checkpoint only once the bus confirmed the page. A crash between
a commit and its publication therefore delays the events (the next publisher, from the
same checkpoint, publishes them) but never drops them; a crash between the confirm and
the checkpoint publishes a page twice, which subscribers drop by position.

Several publishers (one per worker) may share a checkpoint: each starts every pass from
the furthest of its own position and the stored checkpoint, so they mostly leapfrog and at
worst publish a page twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from sourcery._core.errors import BrokerError, ClosedError, ConfigurationError, StoreError
from sourcery._core.records import BEGINNING, Checkpoint, CommitBatch, Cursor
from sourcery._messaging.topics.base import EventBus
from sourcery._stores.base import Store

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


class Publisher:
    """Publishes every committed event of ``store`` on ``bus``, at least once, in order.

    Run it with ``await publisher.run()`` (until ``stop()``) or
    ``async with Publisher.running(store, bus) as publisher: …``. Call ``wake()`` after a
    commit to publish at once instead of at the next poll.
    """

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        batch: int = 500,
        interval: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        if batch < 1:
            raise ConfigurationError(f"batch must be at least 1, got {batch}")
        if interval <= 0 or max_backoff <= 0:
            raise ConfigurationError("interval and max_backoff must be positive")
        self.store = store
        self.bus = bus
        self.batch = batch
        self.interval = interval
        self.max_backoff = max_backoff
        self.source = f"publish:{bus.name}"
        """The name of the checkpoint in the store."""
        self.position: Cursor = BEGINNING
        """The last position this publisher saw confirmed and checkpointed."""
        self.published = 0
        """Events published (and confirmed) by this publisher."""
        self.failures = 0
        """Passes that failed since the last one that worked."""
        self._stopping = False
        self._wake = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        store: Store,
        bus: EventBus,
        *,
        batch: int = 500,
        interval: float = 0.1,
        max_backoff: float = 5.0,
    ) -> AsyncIterator[Publisher]:
        """Run a publisher in the background for the body of the ``async with``.

        On exit it makes a last pass (so what was committed before is published), then
        stops.
        """
        publisher = cls(store, bus, batch=batch, interval=interval, max_backoff=max_backoff)
        task = asyncio.create_task(publisher.run(), name="sourcery-publisher")
        try:
            yield publisher
        finally:
            publisher.stop()
            await task

    def stop(self) -> None:
        """Make ``run`` return after its current pass (and one last pass)."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Events were committed: look for them now rather than at the next poll."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish every event readable now; return how many. Errors propagate."""
        stored = (await self.store.checkpoint(self.source)).events
        if stored.seq > self.position.seq:
            self.position = stored
        count = 0
        while True:
            page = await self.store.read_events(self.position, self.batch)
            if not page:
                return count
            await self.bus.publish(page)
            last = page[-1][0]
            await self.store.commit(CommitBatch(checkpoint=Checkpoint(self.source, events=last)))
            self.position = last
            self.published += len(page)
            count += len(page)

    async def run(self) -> None:
        """Publish until ``stop()``. Nothing else ends it: store and broker outages are
        logged and retried, and so is any other error (logged with its traceback), with a
        growing pause, so that a worker never goes on without publishing."""
        while True:
            stopping = self._stopping
            self._wake.clear()
            delay = self.interval
            try:
                await self.publish_pending()
                self.failures = 0
            except Exception as exc:
                if isinstance(exc, ClosedError) and (stopping or self._stopping):
                    return
                self.failures += 1
                delay = min(self.max_backoff, self.interval * 2**self.failures)
                if isinstance(exc, StoreError | BrokerError | ClosedError):
                    log.warning(
                        "publishing from %s failed (%s); retrying in %.2fs", self.source, exc, delay
                    )
                else:
                    log.exception(
                        "unexpected error publishing from %s; retrying in %.2fs", self.source, delay
                    )
            if stopping:
                return
            if not self._stopping:
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
