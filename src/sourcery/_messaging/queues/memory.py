"""Command queues inside one process: ``memory://NAME?queues=…&attempts=…&prefetch=…``.

Behaves like the RabbitMQ queues (hashing by actor, one active consumer per queue, counted
redeliveries, dead letters, replies) so that a worker and its clients can run in one
process, and tests can exercise the worker without a broker. Queues of one name are shared
by every ``open_queue`` of that name in the process; nothing survives the process.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sourcery._core.config import unique_params
from sourcery._core.errors import BrokerError, ClosedError, ConfigurationError
from sourcery._core.records import ActorRef
from sourcery._messaging.queues.base import (
    DELIVERY_LIMIT_ERROR,
    DeadLetter,
    Handler,
    queue_index,
    routing_key,
)

__all__ = ["MemoryQueue"]

DELIVERY_LIMIT_FACTOR = 4


@dataclass(eq=False, slots=True)
class _Message:
    body: bytes
    message_id: str
    actor: str
    reply_to: str | None
    returned: int = 0
    """Deliveries that came back unsettled (RabbitMQ's ``x-delivery-count``)."""


@dataclass(eq=False, slots=True)
class _Subscription:
    hub: _Hub
    handler: Handler
    prefetch: int
    unsettled: dict[int, set[MemoryDelivery]] = field(default_factory=dict)
    active: bool = True

    async def cancel(self) -> None:
        self.hub.unsubscribe(self, requeue=False)
        for _ in range(3):
            await asyncio.sleep(0)


class _Hub:
    """The queues of one name."""

    def __init__(self, queues: int, attempts: int, prefetch: int) -> None:
        self.queues = queues
        self.attempts = attempts
        self.prefetch = prefetch
        self.messages: list[deque[_Message]] = [deque() for _ in range(queues)]
        self.consumers: list[list[_Subscription]] = [[] for _ in range(queues)]
        self.dead: list[DeadLetter] = []
        self.reply_handlers: dict[str, Callable[[str, bytes], None]] = {}
        self._pumping = False
        self._seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def index(self, key: str) -> int:
        return queue_index(key, self.queues)

    def put(self, message: _Message) -> None:
        self.messages[self.index(message.actor)].append(message)
        self.schedule()

    def subscribe(self, subscription: _Subscription) -> None:
        for index in range(self.queues):
            self.consumers[index].append(subscription)
            subscription.unsettled[index] = set()
        self.schedule()

    def unsubscribe(self, subscription: _Subscription, *, requeue: bool) -> None:
        """Stop delivering to it; with ``requeue``, also take back what it did not settle
        (what RabbitMQ does when a consumer's channel closes)."""
        subscription.active = False
        for index in range(self.queues):
            if subscription in self.consumers[index]:
                self.consumers[index].remove(subscription)
            if requeue:
                pending = sorted(subscription.unsettled[index], key=lambda d: d.seq)
                for delivery in reversed(pending):
                    delivery.settled = True
                    self.requeue(index, delivery.message)
                subscription.unsettled[index].clear()
        self.schedule()

    def requeue(self, index: int, message: _Message) -> None:
        message.returned += 1
        if message.returned > self.attempts * DELIVERY_LIMIT_FACTOR:
            self.dead.append(
                DeadLetter(
                    message_id=message.message_id,
                    body=message.body,
                    actor=message.actor,
                    error_type=DELIVERY_LIMIT_ERROR,
                    error="dead-lettered by the queue (delivery_limit)",
                    attempts=message.returned,
                )
            )
        else:
            self.messages[index].appendleft(message)
        self.schedule()

    def schedule(self) -> None:
        if not self._pumping:
            self._pumping = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Hand every queue's next messages to its active consumer, up to its prefetch."""
        self._pumping = False
        for index in range(self.queues):
            waiting = self.messages[index]
            consumers = self.consumers[index]
            if not waiting or not consumers:
                continue
            active = consumers[0]
            unsettled = active.unsettled[index]
            while waiting and len(unsettled) < active.prefetch:
                message = waiting.popleft()
                delivery = MemoryDelivery(self, active, index, message, next(self._seq))
                unsettled.add(delivery)
                task = asyncio.get_running_loop().create_task(active.handler(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)


class MemoryDelivery:
    """One command from an in-process queue."""

    __slots__ = (
        "_hub",
        "_index",
        "_subscription",
        "attempts",
        "body",
        "message",
        "message_id",
        "reply_to",
        "seq",
        "settled",
    )

    def __init__(
        self, hub: _Hub, subscription: _Subscription, index: int, message: _Message, seq: int
    ) -> None:
        self._hub = hub
        self._subscription = subscription
        self._index = index
        self.message = message
        self.seq = seq
        self.body = message.body
        self.message_id = message.message_id
        self.reply_to = message.reply_to
        self.attempts = message.returned + 1
        self.settled = False

    @property
    def live(self) -> bool:
        return not self.settled

    def _settle(self) -> bool:
        if self.settled:
            return False  # taken back already, as from a closed channel
        self.settled = True
        self._subscription.unsettled[self._index].discard(self)
        self._hub.schedule()
        return True

    async def ack(self) -> None:
        self._settle()

    async def retry(self) -> None:
        if self._settle():
            self._hub.requeue(self._index, self.message)

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        if self._settle():
            m = self.message
            self._hub.dead.append(
                DeadLetter(
                    message_id=m.message_id,
                    body=m.body,
                    actor=m.actor,
                    error_type=error_type,
                    error=error,
                    attempts=self.attempts if attempts is None else attempts,
                )
            )


_hubs: dict[str, _Hub] = {}
_reply_names = itertools.count(1)


class MemoryQueue:
    """A :class:`~sourcery._messaging.queues.CommandQueue` in this process."""

    def __init__(self, hub: _Hub, name: str) -> None:
        self.name = name
        self._hub = hub
        self._subscriptions: list[_Subscription] = []
        self._reply_to: str | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryQueue:
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ConfigurationError(f"not a memory URL: {url!r}")
        name = parts.netloc + parts.path
        numbers = {"queues": 16, "attempts": 5, "prefetch": 256}
        for key, value in unique_params(url, parts.query):
            if key not in numbers:
                raise ConfigurationError(f"unknown memory queue parameter {key!r} in {url!r}")
            try:
                numbers[key] = int(value)
            except ValueError:
                raise ConfigurationError(f"{key} must be an int, got {value!r}") from None
            if numbers[key] < 1:
                raise ConfigurationError(f"{key} must be at least 1, got {value!r}")
        hub = _hubs.get(name)
        if hub is None:
            hub = _hubs[name] = _Hub(numbers["queues"], numbers["attempts"], numbers["prefetch"])
        elif parts.query and (hub.queues, hub.attempts, hub.prefetch) != (
            numbers["queues"],
            numbers["attempts"],
            numbers["prefetch"],
        ):
            raise ConfigurationError(f"memory queue {name!r} is open with other parameters")
        return cls(hub, name)

    @property
    def attempts(self) -> int:
        return self._hub.attempts

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the command queue is closed")

    async def send(
        self, actor: ActorRef, body: bytes, *, message_id: str, reply_to: str | None = None
    ) -> None:
        self._check()
        self._hub.put(_Message(bytes(body), message_id, routing_key(actor), reply_to))

    async def consume(self, handler: Handler) -> _Subscription:
        self._check()
        subscription = _Subscription(self._hub, handler, self._hub.prefetch)
        self._subscriptions.append(subscription)
        self._hub.subscribe(subscription)
        return subscription

    async def reply(self, reply_to: str, body: bytes, *, correlation_id: str) -> None:
        self._check()
        handler = self._hub.reply_handlers.get(reply_to)
        if handler is not None:
            asyncio.get_running_loop().call_soon(handler, correlation_id, bytes(body))

    async def replies(self, handler: Callable[[str, bytes], None]) -> str:
        self._check()
        if self._reply_to is not None:
            raise BrokerError("this command queue receives replies already")
        self._reply_to = f"replies.{next(_reply_names)}"
        self._hub.reply_handlers[self._reply_to] = handler
        return self._reply_to

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self._hub.dead[:limit]

    async def aclose(self) -> None:
        """Close; deliveries this queue's consumers left unsettled go back to the queues."""
        if self._closed:
            return
        self._closed = True
        for subscription in self._subscriptions:
            self._hub.unsubscribe(subscription, requeue=True)
        if self._reply_to is not None:
            self._hub.reply_handlers.pop(self._reply_to, None)
