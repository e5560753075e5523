"""The in-process bus (``memory://name``): the embedded default.

Buses opened with one name in one process share their queues, like clients of one broker:
a named queue keeps what is published while nobody listens, an anonymous one lives as
long as its subscription. Publishing is synchronous, so it is "confirmed" at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from sourcery._core.errors import BrokerError, ClosedError, ConfigurationError
from sourcery._core.records import Cursor, EventRecord
from sourcery._messaging.topics.base import Delivery, check_queue_name, routing_key
from sourcery._messaging.topics.patterns import check_pattern, matches_any

__all__ = ["MemoryBus"]


class _Queue:
    """Deliveries waiting for a consumer, and the patterns bound to the queue."""

    def __init__(self) -> None:
        self.bindings: set[str] = set()
        self.items: deque[Delivery] = deque()
        self._waiters: list[asyncio.Future[None]] = []

    def put(self, item: Delivery) -> None:
        self.items.append(item)
        self._wake()

    def put_back(self, item: Delivery) -> None:
        self.items.appendleft(item)
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def interrupt(self) -> None:
        self._wake()


class _Hub:
    """What buses of one name share: the queues."""

    def __init__(self) -> None:
        self.named: dict[str, _Queue] = {}
        self.anonymous: set[_Queue] = set()

    def publish(self, item: Delivery) -> None:
        key = item.routing_key
        for queue in (*self.named.values(), *self.anonymous):
            if matches_any(queue.bindings, key):
                queue.put(item)


_hubs: dict[str, _Hub] = {}


class MemoryBus:
    """An :class:`~sourcery._messaging.topics.base.EventBus` inside this process."""

    def __init__(self, name: str = "") -> None:
        self.name = f"memory://{name}"
        self._hub = _hubs.setdefault(name, _Hub())
        self._subscriptions: set[_MemorySubscription] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryBus:
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.path.strip("/") or parts.query:
            raise ConfigurationError(f"expected memory:// or memory://name, got {url!r}")
        return cls(parts.netloc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()

    async def publish(self, events: Sequence[tuple[Cursor, EventRecord]]) -> None:
        if self._closed:
            raise ClosedError("the bus is closed")
        keys = [routing_key(record) for _, record in events]  # all checked before any goes
        for (position, record), _key in zip(events, keys, strict=True):
            self._hub.publish(Delivery(position, record))

    def subscribe(
        self, patterns: Sequence[str], *, queue: str | None = None
    ) -> _MemorySubscription:
        if isinstance(patterns, str):
            raise ConfigurationError("patterns is a sequence of patterns, not one str")
        checked = [check_pattern(p) for p in patterns]
        if not checked:
            raise ConfigurationError("a subscription needs at least one pattern")
        if queue is not None:
            check_queue_name(queue)
        return _MemorySubscription(self, checked, queue)


class _MemorySubscription:
    def __init__(self, bus: MemoryBus, patterns: list[str], name: str | None) -> None:
        self._bus = bus
        self._patterns = patterns
        self._name = name
        self._queue: _Queue | None = None
        self._unacked: Delivery | None = None
        self._closed = False

    async def __aenter__(self) -> _MemorySubscription:
        bus = self._bus
        if bus._closed:
            raise ClosedError("the bus is closed")
        if self._queue is not None or self._closed:
            raise BrokerError("a subscription is bound once")
        hub = bus._hub
        if self._name is None:
            queue = _Queue()
            hub.anonymous.add(queue)
        else:
            queue = hub.named.setdefault(self._name, _Queue())
        queue.bindings.update(self._patterns)
        self._queue = queue
        bus._subscriptions.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bus._subscriptions.discard(self)
        queue = self._queue
        if queue is None:
            return
        if self._name is None:
            self._bus._hub.anonymous.discard(queue)
        elif self._unacked is not None:
            queue.put_back(self._unacked)
        self._unacked = None
        queue.interrupt()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        queue = self._queue
        if queue is None:
            raise BrokerError("use the subscription with 'async with' first")
        self._unacked = None  # asking for the next one acknowledges the last
        while True:
            if self._closed:
                raise ClosedError("the subscription is closed")
            if queue.items:
                item = queue.items.popleft()
                self._unacked = item
                return item
            await queue.wait()
