"""The command queue interface: how commands travel from clients to workers.

A command queue spreads commands over a fixed number of queues by actor, so that one
actor's commands always land in one queue, in the order they were sent; each queue has
one active consumer at a time, so one worker processes an actor's commands, one after the
other. A command is acknowledged only after its events are committed; until then the
queue keeps it and gives it to the next consumer if this one goes away, and the message
id makes that second delivery harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sourcery._core.records import ActorRef

__all__ = [
    "ERROR_HEADER",
    "ERROR_TYPE_HEADER",
    "CommandQueue",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "cancelled_by_close",
    "queue_index",
    "routing_key",
]

ERROR_TYPE_HEADER = "x-sourcery-error-type"
ERROR_HEADER = "x-sourcery-error"
ATTEMPTS_HEADER = "x-sourcery-attempts"
ACTOR_HEADER = "x-sourcery-actor"

DELIVERY_LIMIT_ERROR = "DeliveryLimit"
"""The error type of a command the queue itself gave up on, after many more deliveries
than ``attempts`` (workers that died on it, again and again)."""


def cancelled_by_close(closed: bool) -> bool:
    """Whether the CancelledError being handled is a close's doing: closing the connection
    cancels what the broker client had under way (a consume, a publish) without anyone
    cancelling this task."""
    task = asyncio.current_task()
    return closed and (task is None or not task.cancelling())


def routing_key(actor: ActorRef) -> str:
    """What commands are hashed on: all of one actor's commands share a queue."""
    return f"{actor.type}/{actor.id}"


_JUMP_MULTIPLIER = 2862933555777941757
_MASK64 = (1 << 64) - 1


def queue_index(key: str, queues: int) -> int:
    """The command queue of the actor ``key`` (a :func:`routing_key`), in ``range(queues)``.

    Computed by the sender, not by the broker: RabbitMQ's consistent-hash exchange rebuilds
    its ring when the node restarts and then sends most actors to another queue, where a
    second worker would run them beside the first. A fixed hash (BLAKE2b) and jump
    consistent hashing (Lamping and Veach) give every process the same answer forever, and
    moving from ``n`` to ``n + 1`` queues moves only a ``1/(n + 1)`` share of the actors.
    """
    if queues < 1:
        raise ValueError(f"queues must be at least 1, not {queues}")
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    point = int.from_bytes(digest, "big")
    bucket, candidate = -1, 0
    while candidate < queues:
        bucket = candidate
        point = (point * _JUMP_MULTIPLIER + 1) & _MASK64
        candidate = int((bucket + 1) * ((1 << 31) / ((point >> 33) + 1)))
    return bucket


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A command that was given up on, with why: what ``dead_letters()`` returns."""

    message_id: str
    body: bytes
    actor: str
    """``type/id`` of the actor it was sent to."""
    error_type: str
    """The name of the exception that made it fail, e.g. ``HandlerError``, ``DecodingError``."""
    error: str
    attempts: int
    """How many times it failed before a worker gave up on it (1 for a command that cannot
    be decoded); for a ``DeliveryLimit`` dead letter, how many times it was delivered."""


class Delivery(Protocol):
    """One command handed to a consumer. Settle it exactly once: ack, retry or dead."""

    @property
    def body(self) -> bytes: ...

    @property
    def message_id(self) -> str:
        """The id the sender gave it ("" if none: the envelope's id counts)."""

    @property
    def attempts(self) -> int:
        """Which delivery of this command this is: 1 the first time, 2 after one retry or
        after a consumer went away without settling it, and so on (RabbitMQ's
        ``x-delivery-count`` + 1). Deliveries are not failures: a command also comes back
        when a worker dies or a connection drops, so a worker counts the failures itself."""

    @property
    def reply_to(self) -> str | None:
        """Where the sender waits for a reply, if it does."""

    @property
    def live(self) -> bool:
        """False once it is settled or taken back (its channel or connection is gone, so
        the queue gives it, and the actor's later commands, to another consumer): a worker
        must then not run it."""

    async def ack(self) -> None:
        """Done: the queue forgets it."""

    async def retry(self) -> None:
        """Not done: deliver it again (the next delivery's ``attempts`` is one more)."""

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        """Give up: keep a copy in the dead-letter queue with the error and ``attempts``
        (the failures the worker counted; by default this delivery's ``attempts``), then
        forget it."""


Handler = Callable[[Delivery], Coroutine[Any, Any, None]]


class Consumer(Protocol):
    """A subscription to every command queue, from ``CommandQueue.consume``."""

    async def cancel(self) -> None:
        """Take no new deliveries. Those handed out already can still be settled."""


@runtime_checkable
class CommandQueue(Protocol):
    """Where commands wait for a worker. Open one with ``open_queue(url)``."""

    @property
    def attempts(self) -> int:
        """Failures of a command before a worker sends it to the dead letters. The queue
        itself dead-letters a command after ``attempts * 4`` deliveries, failed or not (one
        that no worker survives)."""

    async def send(
        self, actor: ActorRef, body: bytes, *, message_id: str, reply_to: str | None = None
    ) -> None:
        """Queue ``body`` for ``actor``; return once the queue holds it durably.

        Raises BrokerError if the broker refused it, BrokerUnavailable if it could not be
        reached in time (the command may or may not have been queued: send it again with
        the same message id, which makes a second copy harmless).
        """

    async def consume(self, handler: Handler) -> Consumer:
        """Call ``handler`` with every delivery of every command queue this consumer is
        active on. Each queue's deliveries are started in order; ``handler`` must start
        its work before its first real wait to keep that order."""

    async def reply(self, reply_to: str, body: bytes, *, correlation_id: str) -> None:
        """Send a reply to a waiting sender (not confirmed: a lost reply is a timeout)."""

    async def replies(self, handler: Callable[[str, bytes], None]) -> str:
        """Receive replies: ``handler(correlation_id, body)``. Returns the address to put
        in ``reply_to``. Replies sent while this queue is closed are lost."""

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, without removing them."""

    async def aclose(self) -> None:
        """Close connections. Idempotent."""
