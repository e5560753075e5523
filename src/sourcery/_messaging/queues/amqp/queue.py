"""Command queues on RabbitMQ.

Topology (all names under the URL's ``prefix``, declared idempotently in one place):

- ``<prefix>.commands.<i>``: durable quorum queues, each with a single active consumer (one
  worker at a time, in order), a generous ``x-delivery-limit`` and the dead-letter exchange
  as a safety net against a command that kills every worker. The sender picks the queue of
  an actor with :func:`~sourcery._messaging.queues.base.queue_index` and publishes to it through the
  default exchange, so one actor's commands always go to the same queue, across broker
  restarts too (RabbitMQ's consistent-hash exchange rebuilds its ring on a restart and then
  routes most keys elsewhere).
- ``<prefix>.dead``: a fanout exchange and a quorum queue holding the dead letters; those
  a worker gives up on carry the error in ``x-sourcery-*`` headers.

Sends are persistent, mandatory and confirmed: ``send`` returns once the queue holds the
command on disk. The connection is robust (aio-pika restores channels, queues and
consumers after a broker restart); a send while the broker is away waits for it up to
``send_timeout`` and then raises :class:`BrokerUnavailable`. Deliveries that were in flight
when the connection broke are redelivered by the broker; the worker recognises them by
message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    ConsumerTag,
    DeliveryMode,
)

from sourcery._core.config import AmqpSettings, parse_amqp_url, redact
from sourcery._core.errors import BrokerError, BrokerUnavailable, ClosedError, ConfigurationError
from sourcery._core.records import ActorRef
from sourcery._messaging.queues.base import (
    ACTOR_HEADER,
    ATTEMPTS_HEADER,
    DELIVERY_LIMIT_ERROR,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    DeadLetter,
    Handler,
    queue_index,
    routing_key,
)
from sourcery._messaging.queues.leases import LeasedConsumer

__all__ = ["AmqpQueue"]

log = logging.getLogger(__name__)

DEFAULT_SEND_TIMEOUT = 30.0
"""How long a send waits for a broker that went away before raising BrokerUnavailable."""
DEFAULT_RECONNECT_INTERVAL = "1"
"""Seconds between reconnection attempts, unless the URL sets ``reconnect_interval``."""
DELIVERY_LIMIT_FACTOR = 4
"""The broker's own delivery limit is this many times ``attempts``: only for commands no
worker lives long enough to settle."""

_LOST = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
)
"""What a lost connection or channel raises."""


def _reconnect_interval(url: str) -> float:
    """Seconds between reconnections: the URL's ``reconnect_interval``, else the default."""
    value = dict(parse_qsl(urlsplit(url).query)).get("reconnect_interval")
    try:
        return max(0.1, float(value or DEFAULT_RECONNECT_INTERVAL))
    except ValueError:
        return float(DEFAULT_RECONNECT_INTERVAL)


def _delivery_count(headers: dict[str, Any]) -> int:
    count = headers.get("x-delivery-count", 0)
    return count if isinstance(count, int) and count >= 0 else 0


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class AmqpDelivery:
    """One command from a RabbitMQ queue.

    Its ack goes out with the acks of the deliveries before it on its channel, as one
    ``basic.ack`` (see :class:`_Acks`); ``ack`` returns once that frame is sent.
    """

    __slots__ = (
        "_acks",
        "_channel",
        "_message",
        "_queue",
        "_settled",
        "_tag",
        "attempts",
        "body",
        "message_id",
        "reply_to",
    )

    def __init__(self, queue: AmqpQueue, message: AbstractIncomingMessage) -> None:
        self._queue = queue
        # Kept: ``message.channel`` raises once the channel is closed (None: closed already).
        self._channel: Any = None
        with contextlib.suppress(aiormq.exceptions.ChannelInvalidStateError):
            self._channel = message.channel
        self._message = message
        self.body = message.body
        self.message_id = message.message_id or ""
        self.reply_to = message.reply_to
        # A quorum queue counts the earlier deliveries that came back unsettled.
        self.attempts = _delivery_count(message.headers) + 1
        self._settled = False
        # Registered as it arrives (before any await), so in delivery-tag order.
        self._tag = message.delivery_tag or 0
        self._acks = _Acks.of(message, self._tag) if self._tag else None

    @property
    def live(self) -> bool:
        return not self._settled and self._channel is not None and not self._channel.is_closed

    async def ack(self) -> None:
        if self._settling() and self._acks is not None:
            await self._acks.ack(self._tag)

    async def retry(self) -> None:
        if self._settling():
            await self._settle(self._message.nack(requeue=True))

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        message = self._message
        headers: dict[str, Any] = {
            ERROR_TYPE_HEADER: error_type,
            ERROR_HEADER: error,
            ATTEMPTS_HEADER: self.attempts if attempts is None else attempts,
            ACTOR_HEADER: _text(message.headers.get(ACTOR_HEADER)),
        }
        copy = aio_pika.Message(
            self.body,
            headers=headers,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.message_id,
        )
        await self._queue._publish_dead(copy)
        await self.ack()

    def _settling(self) -> bool:
        """Whether this is the first settlement (a second one is ignored, as before)."""
        if self._settled:
            log.debug("message %s was settled already", self.message_id)
            return False
        self._settled = True
        return True

    async def _settle(self, settling: Any) -> None:
        """A nack or reject: sent alone, right away; it then counts as settled for the
        acks around it (never before it is sent, so no ack covering it can overtake it)."""
        try:
            await settling
        except (*_LOST, aio_pika.exceptions.MessageProcessError) as exc:
            # The channel it came on is gone: the broker gives it to a consumer again.
            log.debug("could not settle message %s: %r", self.message_id, exc)
        finally:
            if self._acks is not None:
                self._acks.settled(self._tag)


_UNSETTLED, _TO_ACK, _SENT = 0, 1, 2
"""What a registered delivery tag waits for: its settlement, an ack frame, nothing more."""
ACK_HOLD = 0.01
"""Seconds an ack above an unsettled delivery may wait to be covered by a later
``multiple`` ack before it goes alone."""
_EARLY = 0.001
"""A held ack this close to its time goes now (timers may fire a little early)."""


class _Acks:
    """The acks of one channel's deliveries, sent together.

    A channel numbers its deliveries 1, 2, 3, …, and one ``basic.ack`` with ``multiple``
    acks every delivery up to its tag. Deliveries register here as they arrive; acks
    wait for a flush, which runs in the next turn of the event loop (and again as long as
    acks come in while it sends):

    - the lowest registered tags, as long as each is settled (acked, or nacked and that
      sent) and they follow one another without a gap, are covered by one ack with
      ``multiple`` on the highest of them that still needs an ack;
    - an ack above an unsettled delivery, or above a tag that never registered (a
      delivery aiormq dropped), waits up to ``ACK_HOLD`` for that to change, then goes
      out alone: no ack waits for long behind a slow command.

    A nack or reject goes out at once, alone, and counts as settled only after it is sent.
    Tags belong to their channel: a channel that closed voids them (the broker delivers
    those messages again, on another channel, with new tags and a new ``_Acks``).
    """

    __slots__ = (
        "__weakref__",
        "_asked",
        "_channel",
        "_floor",
        "_flushing",
        "_held",
        "_tags",
        "_timer",
        "_waiters",
        "frames",
    )

    _by_channel: weakref.WeakKeyDictionary[Any, _Acks] = weakref.WeakKeyDictionary()

    def __init__(self, channel: Any) -> None:
        # Weakly: the channel is this object's key in _by_channel.
        self._channel = weakref.ref(channel)
        self._floor = 0
        """Every tag up to this one is settled and its ack (if any) sent."""
        self._tags: dict[int, int] = {}
        """Registered tags above the floor, with their state."""
        self._waiters: dict[int, asyncio.Future[None]] = {}
        """The ``ack`` calls waiting for their frame, by tag."""
        self._asked: list[int] = []
        """Tags acked since the last flush."""
        self._held: dict[int, float] = {}
        """Acks above the floor waiting to be covered, with the time they go alone."""
        self._flushing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.frames = 0
        """Ack frames sent (for tests and benchmarks)."""

    @classmethod
    def of(cls, message: AbstractIncomingMessage, tag: int) -> _Acks | None:
        """The acks of the channel ``message`` came on, with its tag registered; None if
        that channel is closed already (nothing can be settled on it)."""
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return None
        acks = cls._by_channel.get(channel)
        if acks is None:
            acks = cls._by_channel[channel] = cls(channel)
        acks._tags[tag] = _UNSETTLED
        return acks

    async def ack(self, tag: int) -> None:
        """Ack ``tag``; return once a frame covering it is sent (or its channel is gone)."""
        if self._tags.get(tag) != _UNSETTLED:
            return
        self._tags[tag] = _TO_ACK
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[tag] = done
        self._asked.append(tag)
        self._flush_soon()
        await done

    def settled(self, tag: int) -> None:
        """``tag`` was nacked or rejected (or could not be): no ack for it."""
        if self._tags.get(tag) == _UNSETTLED:
            self._tags[tag] = _SENT
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())

    def _on_timer(self) -> None:
        self._timer = None
        self._flush_soon()

    async def _flush(self) -> None:
        try:
            while self._asked or self._movable() or self._due():
                try:
                    await self._send()
                except _LOST as exc:
                    # Its deliveries come again on another channel; these tags are void.
                    log.debug("could not ack on a closed channel: %r", exc)
                    self._void()
            if self._held and self._timer is None:
                deadline = next(iter(self._held.values()))
                self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)
        finally:
            self._flushing = None

    def _movable(self) -> bool:
        """Whether the floor can move: the tag after it is registered and settled."""
        return self._tags.get(self._floor + 1, _UNSETTLED) != _UNSETTLED

    def _due(self) -> bool:
        """Whether the oldest held ack has waited long enough."""
        held = self._held
        now = asyncio.get_running_loop().time()
        return bool(held) and next(iter(held.values())) <= now + _EARLY

    def _void(self) -> None:
        waiters = list(self._waiters.values())
        self._tags.clear()
        self._waiters.clear()
        self._held.clear()
        self._asked = []
        for done in waiters:
            if not done.done():
                done.set_result(None)

    async def _send(self) -> None:
        channel = self._channel()
        if channel is None or channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
        tags, held, waiters = self._tags, self._held, self._waiters
        sent: list[asyncio.Future[None]] = []
        # The settled run above the floor, one tag after the other: one ack covers it.
        floor, multiple = self._floor, 0
        while (state := tags.get(floor + 1, _UNSETTLED)) != _UNSETTLED:
            floor += 1
            del tags[floor]
            if state == _TO_ACK:
                multiple = floor
                sent.append(waiters.pop(floor))
                held.pop(floor, None)
        self._floor = floor
        # Acks above it wait to be covered by a later one, but not for long.
        now = asyncio.get_running_loop().time()
        for tag in self._asked:
            if tags.get(tag) == _TO_ACK:
                held[tag] = now + ACK_HOLD
        self._asked = []
        alone = []
        for tag, deadline in held.items():  # oldest first
            if deadline > now + _EARLY:
                break
            alone.append(tag)
        for tag in alone:
            del held[tag]
            tags[tag] = _SENT
            sent.append(waiters.pop(tag))
        try:
            if multiple:
                self.frames += 1
                await channel.basic_ack(multiple, multiple=True)
            for tag in alone:
                self.frames += 1
                await channel.basic_ack(tag)
        finally:
            for done in sent:
                if not done.done():
                    done.set_result(None)


class _AmqpConsumer:
    def __init__(self, queue: AmqpQueue, tags: list[tuple[AbstractQueue, ConsumerTag]]) -> None:
        self._queue = queue
        self._tags = tags

    async def cancel(self) -> None:
        tags, self._tags = self._tags, []
        for queue, tag in tags:
            try:
                await queue.cancel(tag)
            except _LOST as exc:
                log.debug("could not cancel consumer %s: %r", tag, exc)
        # Deliveries that arrived before the cancellation was confirmed are already on
        # their way to the handler (aio-pika hands each over in a task): let them start.
        for _ in range(3):
            await asyncio.sleep(0)


class AmqpQueue:
    """A :class:`~sourcery._messaging.queues.CommandQueue` on RabbitMQ. Open with ``await
    AmqpQueue.open(url)``."""

    def __init__(
        self,
        settings: AmqpSettings,
        connection: AbstractRobustConnection,
        *,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.send_timeout = send_timeout
        self._connection = connection
        self._lock = asyncio.Lock()
        self._publisher: AbstractRobustChannel | None = None
        self._dead: AbstractRobustExchange | None = None
        self._replier: AbstractRobustChannel | None = None
        self._consumers: list[AbstractRobustChannel] = []
        self._leased: list[LeasedConsumer] = []
        self._reconnect_interval = _reconnect_interval(settings.url)
        self._reply_queue: str | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, send_timeout: float = DEFAULT_SEND_TIMEOUT) -> AmqpQueue:
        """Connect and declare the topology (idempotent)."""
        settings = parse_amqp_url(url)
        target = settings.url
        if "reconnect_interval" not in urlsplit(target).query:
            glue = "&" if urlsplit(target).query else "?"
            target = f"{target}{glue}reconnect_interval={DEFAULT_RECONNECT_INTERVAL}"
        try:
            connection = await aio_pika.connect_robust(target, timeout=send_timeout)
        except (
            aiormq.exceptions.AuthenticationError,
            aiormq.exceptions.ProbableAuthenticationError,
        ) as exc:
            # Not worth waiting for: a wrong user or password will not fix itself.
            raise BrokerError(
                f"RabbitMQ at {redact(settings.url)} refused the user or password: {exc!r}"
            ) from exc
        except (TimeoutError, *_LOST, aiormq.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(
                f"cannot connect to RabbitMQ at {redact(settings.url)}: {exc!r}"
            ) from exc
        queue = cls(settings, connection, send_timeout=send_timeout)
        try:
            await queue._publishing()
        except BaseException:
            await connection.close()
            raise
        return queue

    @property
    def attempts(self) -> int:
        return self.settings.attempts

    @property
    def closed(self) -> bool:
        return self._closed

    # -- topology ------------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        s = self.settings
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": s.attempts * DELIVERY_LIMIT_FACTOR,
            "x-dead-letter-exchange": s.dead_letter_queue,
        }
        if s.single_active:
            arguments["x-single-active-consumer"] = True
        return arguments

    async def _declare(
        self, channel: AbstractRobustChannel
    ) -> tuple[AbstractRobustExchange, list[AbstractQueue]]:
        """Every exchange, queue and binding, on ``channel`` (restored with it)."""
        s = self.settings
        dead = await channel.declare_exchange(
            s.dead_letter_queue, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(
            s.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead, "")
        queues: list[AbstractQueue] = []
        arguments = self._queue_arguments()
        # The last first: once queue 0 exists, all of a deployment's queues do, even while
        # other processes declare them too (what _check_queue_count relies on).
        for index in reversed(range(s.queues)):
            queue = await channel.declare_queue(
                s.command_queue(index), durable=True, arguments=arguments
            )
            queues.append(queue)
        queues.reverse()
        return dead, queues

    async def _channel(self, *, confirms: bool) -> AbstractRobustChannel:
        if self._closed:
            raise ClosedError("the command queue is closed")
        try:
            channel = await self._connection.channel(
                publisher_confirms=confirms, on_return_raises=confirms
            )
        except _LOST as exc:
            raise BrokerUnavailable(f"cannot open a RabbitMQ channel: {exc!r}") from exc
        assert isinstance(channel, AbstractRobustChannel)
        return channel

    async def _publishing(self) -> tuple[AbstractRobustChannel, AbstractRobustExchange]:
        """The confirming channel (commands go through its default exchange, straight to
        their queue) and the dead-letter exchange."""
        if self._publisher is None or self._dead is None:
            async with self._lock:
                if self._publisher is None or self._dead is None:
                    await self._check_queue_count()
                    channel = await self._channel(confirms=True)
                    try:
                        dead, _ = await self._declare(channel)
                    except aiormq.exceptions.AMQPError as exc:
                        raise BrokerError(f"cannot declare the command queues: {exc}") from exc
                    self._publisher, self._dead = channel, dead
        return self._publisher, self._dead

    async def _check_queue_count(self) -> None:
        """Refuse to work beside processes that hash actors over another number of command
        queues: they send some actors to queues this one never sends them to, where two
        workers would run them at once. Checked before declaring anything, so a refused
        process leaves the broker as it was."""
        s = self.settings
        fewer = s.queues > 1 and (
            await self._queue_exists(s.command_queue(0))
            and not await self._queue_exists(s.command_queue(s.queues - 1))
        )
        if fewer or await self._queue_exists(s.command_queue(s.queues)):
            raise ConfigurationError(
                f"other clients or workers of prefix {s.prefix!r} use "
                f"{'fewer' if fewer else 'more'} command queues than queues={s.queues}; every "
                "process of a deployment must use the same number"
            )

    async def _queue_exists(self, name: str) -> bool:
        channel = await self._connection.channel()  # a refused passive declare closes it
        try:
            await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(*_LOST, aiormq.exceptions.AMQPError):
                await channel.close()
        return True

    async def _replying(self) -> AbstractRobustChannel:
        if self._replier is None:
            async with self._lock:
                if self._replier is None:
                    try:
                        self._replier = await self._channel(confirms=False)
                    except RuntimeError as exc:
                        # aio-pika, while the connection is down: "Connection was not opened".
                        error = f"cannot open a RabbitMQ channel: {exc!r}"
                        raise BrokerUnavailable(error) from exc
        return self._replier

    # -- sending -------------------------------------------------------------------------

    async def send(
        self, actor: ActorRef, body: bytes, *, message_id: str, reply_to: str | None = None
    ) -> None:
        channel, _ = await self._publishing()
        key = routing_key(actor)
        message = aio_pika.Message(
            body,
            headers={ACTOR_HEADER: key},
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id,
            reply_to=reply_to,
        )
        queue = self.settings.command_queue(queue_index(key, self.settings.queues))
        await self._confirmed(channel.default_exchange, message, queue)

    async def _publish_dead(self, message: aio_pika.Message) -> None:
        _, dead = await self._publishing()
        await self._confirmed(dead, message, "")

    async def _confirmed(
        self, exchange: AbstractExchange, message: aio_pika.Message, key: str
    ) -> None:
        """Publish until confirmed; wait out a lost connection up to ``send_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout
        while True:
            if self._closed:
                raise ClosedError("the command queue is closed")
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await exchange.publish(message, key, mandatory=True)
                return
            except aiormq.exceptions.DeliveryError as exc:
                raise BrokerError(
                    f"RabbitMQ refused command {message.message_id!r}: {exc!r}"
                ) from exc
            except TimeoutError as exc:
                raise BrokerUnavailable(
                    f"RabbitMQ did not confirm command {message.message_id!r} within "
                    f"{self.send_timeout:g} s"
                ) from exc
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and (task is None or not task.cancelling()):
                    raise ClosedError("the command queue was closed while sending") from None
                raise
            except _LOST as exc:
                # Unknown whether it arrived: send it again once the channel is back (the
                # message id makes a second copy harmless).
                log.info("connection lost while sending, retrying: %r", exc)
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    # -- consuming -----------------------------------------------------------------------

    async def consume(self, handler: Handler) -> _AmqpConsumer | LeasedConsumer:
        """With ``share`` (the default), consume the queues whose leases this consumer
        holds, balanced with the other workers (see :mod:`sourcery._messaging.queues.leases`);
        otherwise every queue, on the robust connection."""
        if self.settings.share:
            if self._closed:
                raise ClosedError("the command queue is closed")
            leased = LeasedConsumer(
                self.settings,
                handler,
                lambda message: AmqpDelivery(self, message),
                connect_timeout=self.send_timeout,
                reconnect_interval=self._reconnect_interval,
            )
            await leased.start()
            self._leased.append(leased)
            return leased
        channel = await self._channel(confirms=False)
        self._consumers.append(channel)
        try:
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            _, queues = await self._declare(channel)

            async def on_message(message: AbstractIncomingMessage) -> None:
                await handler(AmqpDelivery(self, message))

            tags = [(queue, await queue.consume(on_message)) for queue in queues]
        except aiormq.exceptions.AMQPError as exc:
            raise BrokerError(f"cannot consume the command queues: {exc}") from exc
        return _AmqpConsumer(self, tags)

    # -- replies -------------------------------------------------------------------------

    async def reply(self, reply_to: str, body: bytes, *, correlation_id: str) -> None:
        """Best effort: a reply lost with the connection is logged, never raised (the
        command is done; the client's request times out and it may ask again)."""
        message = aio_pika.Message(body, correlation_id=correlation_id)
        try:
            channel = await self._replying()
            await channel.default_exchange.publish(message, reply_to, mandatory=False)
        except (BrokerUnavailable, *_LOST) as exc:
            log.info("could not reply to %s: %r", reply_to, exc)

    async def replies(self, handler: Callable[[str, bytes], None]) -> str:
        if self._reply_queue is not None:
            raise BrokerError("this command queue receives replies already")
        channel = await self._replying()
        name = f"{self.settings.prefix}.replies.{secrets.token_hex(8)}"
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)

        async def on_reply(message: AbstractIncomingMessage) -> None:
            handler(message.correlation_id or "", message.body)

        await queue.consume(on_reply, no_ack=True)
        self._reply_queue = name
        return name

    # -- dead letters --------------------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        await self._publishing()
        channel = await self._channel(confirms=False)
        letters: list[DeadLetter] = []
        try:
            queue = await channel.get_queue(self.settings.dead_letter_queue, ensure=False)
            while len(letters) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(_dead_letter(message))
        finally:
            # Closing the channel gives every message it holds back to the queue.
            with contextlib.suppress(*_LOST):
                await channel.close()
        return letters

    # -- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        leased, self._leased = self._leased, []
        for consumer in leased:
            await consumer.aclose()
        with contextlib.suppress(*_LOST, aiormq.exceptions.AMQPError):
            await self._connection.close()


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers
    actor = _text(headers.get(ACTOR_HEADER))
    error_type = _text(headers.get(ERROR_TYPE_HEADER))
    if error_type:
        error = _text(headers.get(ERROR_HEADER))
        attempts = headers.get(ATTEMPTS_HEADER)
    else:
        # Dead-lettered by the broker itself (its delivery limit).
        reason = _text(headers.get("x-first-death-reason")) or "unknown"
        error_type = DELIVERY_LIMIT_ERROR
        error = f"dead-lettered by RabbitMQ ({reason})"
        attempts = _delivery_count(headers)
    return DeadLetter(
        message_id=message.message_id or "",
        body=message.body,
        actor=actor,
        error_type=error_type,
        error=error,
        attempts=attempts if isinstance(attempts, int) else 0,
    )
