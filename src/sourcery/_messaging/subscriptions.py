"""Catch-up subscriptions: the stored events from a position on, then the live ones.

The seam between the two is where events get lost or doubled, so the order of steps is
the whole design:

1. bind the live subscription on the bus first;
2. read the store from the start position to its end (in store order);
3. deliver live events, dropping every one at or before the last position delivered.

A publisher only publishes what it read from the store, so anything published before
step 1 was readable in the store before step 2 began: step 2 has it. Anything published
after step 1 is in the live queue. Several publishers, or a publisher repeating a page,
only make duplicates, and step 3 drops them by position. If the broker connection is
lost, the subscription binds again and re-reads the store from its last position.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any

from sourcery._core.actor import ActorType
from sourcery._core.codec import Codec
from sourcery._core.errors import BrokerUnavailable, ConfigurationError
from sourcery._core.records import BEGINNING, Cursor, EventRecord
from sourcery._messaging.topics.base import Delivery, EventBus
from sourcery._messaging.topics.patterns import check_pattern, matches_any
from sourcery._stores.base import Store

__all__ = ["CatchUpSubscription", "subscribe"]

log = logging.getLogger(__name__)


def subscribe(
    store: Store,
    bus: EventBus,
    patterns: Sequence[str],
    *,
    after: Cursor = BEGINNING,
    queue: str | None = None,
    types: Iterable[ActorType[Any, Any, Any]] = (),
    batch: int = 500,
    retry: float = 0.5,
) -> CatchUpSubscription:
    """Every committed event matching ``patterns``, after position ``after``, then live.

    Use as ``async with subscribe(...) as sub: async for delivery in sub: …``. Save
    ``delivery.position`` where you keep your progress and pass it back as ``after`` to
    resume: nothing is skipped, in store order (so in order per actor). ``queue`` names a
    durable queue on the bus, so the live part survives a restart without a re-read.
    With ``types``, deliveries of those actor types carry the decoded ``event`` (an event
    the code cannot decode raises DecodingError: it is stored, so skipping it would lose it).
    """
    return CatchUpSubscription(
        store, bus, patterns, after=after, queue=queue, types=types, batch=batch, retry=retry
    )


class CatchUpSubscription:
    """See :func:`subscribe`."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        patterns: Sequence[str],
        *,
        after: Cursor = BEGINNING,
        queue: str | None = None,
        types: Iterable[ActorType[Any, Any, Any]] = (),
        batch: int = 500,
        retry: float = 0.5,
    ) -> None:
        if isinstance(patterns, str):
            raise ConfigurationError("patterns is a sequence of patterns, not one str")
        self.patterns = [check_pattern(p) for p in patterns]
        if not self.patterns:
            raise ConfigurationError("a subscription needs at least one pattern")
        if batch < 1:
            raise ConfigurationError(f"batch must be at least 1, got {batch}")
        self.store = store
        self.bus = bus
        self.queue = queue
        self.batch = batch
        self.retry = retry
        self._codecs: dict[str, Codec[Any, Any, Any]] = {t.name: Codec(t) for t in types}
        self.position = after
        """The last position delivered (or passed over as not matching)."""
        self.live = False
        """Whether the stored events are read and deliveries now come from the bus."""
        self.dropped = 0
        """Live deliveries dropped as at or before a position already delivered."""
        self._events: AsyncGenerator[Delivery, None] | None = None

    async def __aenter__(self) -> CatchUpSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unbind from the bus. Idempotent."""
        if self._events is not None:
            await self._events.aclose()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        if self._events is None:
            self._events = self._run()
        return await anext(self._events)

    def _delivery(self, position: Cursor, record: EventRecord) -> Delivery:
        codec = self._codecs.get(record.actor_type)
        event = None if codec is None else codec.decode_event(record)
        return Delivery(position, record, event)

    async def _run(self) -> AsyncGenerator[Delivery, None]:
        while True:
            self.live = False
            try:
                async with self.bus.subscribe(self.patterns, queue=self.queue) as live:
                    # Bound: from here on the bus keeps what is published. Now the store.
                    while page := await self.store.read_events(self.position, self.batch):
                        for position, record in page:
                            self.position = position
                            if matches_any(self.patterns, f"{record.actor_type}.{record.type}"):
                                yield self._delivery(position, record)
                    self.live = True
                    async for delivery in live:
                        if delivery.position.seq <= self.position.seq:
                            self.dropped += 1
                            continue
                        if not matches_any(self.patterns, delivery.routing_key):
                            continue  # an older binding of a named queue
                        self.position = delivery.position
                        yield self._delivery(delivery.position, delivery.record)
            except BrokerUnavailable as exc:
                log.warning(
                    "lost the bus (%s); catching up again from the store in %.2fs", exc, self.retry
                )
                await asyncio.sleep(self.retry)
