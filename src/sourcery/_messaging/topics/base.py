"""The event bus interface (the "publisher" plug-in point) and what travels on it.

A bus carries committed events, each with its position in the store order, to every
subscription whose patterns match its routing key ``<actor type>.<event type>``. The bus
is a fast path, not the record: the store is. So a subscription may see an event twice
(several publishers, a redelivery) and subscribers drop positions they have passed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import msgspec

from sourcery._core.actor import Event
from sourcery._core.errors import ConfigurationError, DecodingError, EncodingError
from sourcery._core.ids import id_from_bytes
from sourcery._core.records import ActorRef, Cursor, EventRecord, check_text
from sourcery._messaging.topics.patterns import MAX_KEY_BYTES

__all__ = [
    "Delivery",
    "EventBus",
    "Subscription",
    "check_queue_name",
    "decode_message",
    "encode_message",
    "routing_key",
]


def routing_key(record: EventRecord) -> str:
    """``<actor type>.<event type>``: what subscribers' patterns are matched against.

    Names are used as they are: an actor type named ``shop.order`` makes keys of three
    words, which patterns must then spell out.
    """
    key = f"{record.actor_type}.{record.type}"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise EncodingError(f"routing key longer than {MAX_KEY_BYTES} bytes: {key[:80]!r}…")
    return key


def check_queue_name(name: str) -> str:
    if (
        not name
        or len(name) > 200
        or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
    ):
        raise ConfigurationError(
            f"a queue name is 1..200 letters, digits, '-', '_' or '.', got {name!r}"
        )
    return name


@dataclass(frozen=True, slots=True)
class Delivery:
    """One committed event as a subscriber receives it.

    ``position`` is where it stands in the store order: save it, and a subscription
    resumed after it misses nothing. ``event`` is the decoded :class:`~sourcery.Event`
    when the subscription was given the event's actor type, else None.
    """

    position: Cursor
    record: EventRecord
    event: Event[Any] | None = None

    @property
    def routing_key(self) -> str:
        return f"{self.record.actor_type}.{self.record.type}"

    @property
    def actor(self) -> ActorRef:
        return self.record.actor

    @property
    def type(self) -> str:
        return self.record.type

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def payload(self) -> bytes:
        return self.record.payload

    @property
    def id(self) -> int:
        return id_from_bytes(self.record.id)

    @property
    def timestamp(self) -> int:
        return self.record.timestamp

    @property
    def initiated_by(self) -> str:
        return self.record.initiated_by

    @property
    def dot(self) -> tuple[str, int]:
        return (self.record.writer, self.record.n)


class _Wire(msgspec.Struct, frozen=True, array_like=True):
    """An event on the wire: its position (128 bits as two words) and the stored record."""

    high: int
    low: int
    record: EventRecord


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)
_MASK = 2**64 - 1


def encode_message(position: Cursor, record: EventRecord) -> bytes:
    return _encoder.encode(_Wire(position.seq >> 64, position.seq & _MASK, record))


def decode_message(data: bytes, key: str | None = None) -> Delivery:
    """A delivery from bytes a broker handed over; DecodingError if they are not one.

    The bytes may come from anyone who can publish to the exchange, so everything is
    checked: the types, the names, and that the routing key is the one the event implies.
    """
    try:
        wire = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodingError(f"malformed event message: {exc}") from exc
    if not (0 <= wire.high <= _MASK and 0 <= wire.low <= _MASK):
        raise DecodingError("event message position out of range")
    record = wire.record
    try:
        for value, what in (
            (record.actor_type, "actor type"),
            (record.actor_id, "actor id"),
            (record.writer, "writer"),
            (record.type, "event type"),
            (record.initiated_by, "message id"),
        ):
            check_text(value, what)
        id_from_bytes(record.id)
    except ValueError as exc:
        raise DecodingError(f"malformed event message: {exc}") from exc
    if key is not None and key != f"{record.actor_type}.{record.type}":
        raise DecodingError(
            f"event message under routing key {key!r} holds a {record.actor_type}.{record.type}"
        )
    return Delivery(Cursor((wire.high << 64) | wire.low, record.id), record)


@runtime_checkable
class Subscription(Protocol):
    """Deliveries of the events whose routing keys match the subscription's patterns.

    ``async with`` binds it: from then on, every event published is delivered. Asking for
    the next delivery acknowledges the previous one; one not acknowledged when the
    subscription closes goes back to its queue (a named queue keeps it for the next
    subscriber). A message that is not a well-formed event is logged and dropped.
    """

    async def __aenter__(self) -> Subscription: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def __anext__(self) -> Delivery: ...


@runtime_checkable
class EventBus(Protocol):
    """Where committed events are published and subscribed to."""

    name: str
    """Identifies the bus (URL without secrets), e.g. for a publisher's checkpoint."""

    async def publish(self, events: Sequence[tuple[Cursor, EventRecord]]) -> None:
        """Publish events; return once the bus has every one (confirmed, persistent).

        Raises BrokerError (BrokerUnavailable if it cannot be reached); some of the events
        may then have been published, and publishing them again is harmless.
        """

    def subscribe(self, patterns: Sequence[str], *, queue: str | None = None) -> Subscription:
        """A subscription to the events matching any of ``patterns`` (``*``, ``#``).

        Without ``queue`` it sees only what is published while it is bound. With a
        ``queue`` name, the queue outlives the subscription and keeps what is published
        while nobody listens; subscriptions sharing a name share its deliveries.
        """

    async def aclose(self) -> None:
        """Close every subscription and connection of this bus. Idempotent."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...
