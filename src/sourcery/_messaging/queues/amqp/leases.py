"""Workers sharing the RabbitMQ command queues: one lease per queue.

With a single active consumer on every queue, RabbitMQ 3.10 makes the first worker active
on all of them. Instead, a sharing worker consumes command queue ``i`` only while it holds
lease ``i``: the exclusive, non-durable queue ``<prefix>.lease.<i>``. The broker lets one
connection at a time declare it (another connection's declare fails with
RESOURCE_LOCKED) and deletes it when that connection goes, together with the connection's
consumers, whose unsettled deliveries it gives back to their queues.

Safety (one actor's commands on one worker at a time, in order):

- A worker consumes queue ``i`` only on the connection that holds lease ``i``.
- It gives a lease up only after cancelling its consumer on ``i``, once every delivery
  it got from ``i`` is settled (acked, retried or dead-lettered), and after closing the
  consumer's channel (one per queue: anything delivered that never reached the handler
  goes back to the head of the queue). Only then can another worker claim the lease and
  start on the queue.
- If the connection goes instead (crash, kill -9, network), the broker drops the lease, the
  consumer and the deliveries together. The single active consumer stays on as a safety
  net: a consumer that registers on ``i`` while the dead one is still registered waits,
  and the broker activates it in the same step that returns the dead one's deliveries.
- The connection is deliberately not robust (aio-pika's robust connections re-declare
  queues and restore consumers by themselves after a reconnection). When it is lost, the
  worker holds no lease and no consumer, its deliveries from it are void (their settling
  fails quietly; the broker gives them to the next owner), and it starts from scratch on a
  new connection: a consumer without its lease cannot exist. A channel or consumer the
  broker closes or cancels on its own also ends the whole connection, for the same reason.

What a lost connection cannot prevent (as before sharing): a worker cut off from the broker
may still be finishing deliveries while their next owner starts on them; the message ids
make a second application harmless, and a concurrent write heals on the next read.

Balance: each worker publishes its presence (its id and the leases it holds) on the fanout
exchange ``<prefix>.workers`` every ``share_interval`` seconds, and reads the others' from
an exclusive queue of its own. The live workers are those heard of within
``LIVE_INTERVALS`` intervals. Sorted by id, each should hold ``queues // n`` leases, plus
one for the first ``queues % n``. A worker below its share claims free leases; one above
releases the excess (to workers below theirs, once the view has been stable for a while,
then waits a cooldown); a lease nobody holds for a few intervals is claimed by any worker,
whatever its share, so the queues of a dead worker are taken over within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)
from aiormq.abc import DeliveredMessage

from sourcery._core.config import AmqpSettings
from sourcery._core.errors import BrokerError, BrokerUnavailable
from sourcery._messaging.queues.base import Delivery, Handler

__all__ = ["LeasedConsumer", "shares"]

log = logging.getLogger(__name__)

LIVE_INTERVALS = 3.5
"""A worker not heard of for this many intervals is taken for gone."""
STABLE_INTERVALS = 2.0
"""A worker releases leases only once the set of live workers was stable this long."""
COOLDOWN_INTERVALS = 3.0
"""Between two releases, so that every worker has seen the last one's effect."""
STUCK_INTERVALS = 3.0
"""A lease nobody holds for this long is claimed by any worker, whatever its share."""
SETTLE_YIELDS = 5
"""Loop turns after a consumer is cancelled, for the deliveries that arrived before the
cancellation was confirmed to reach the handler (aiormq hands each over in a task)."""

_LOST = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
"""What a lost connection, a closed channel or a broker's refusal raises: each ends the
connection, and the consumer starts over on a new one."""


def shares(workers: set[str] | list[str], queues: int) -> dict[str, int]:
    """How many leases each live worker should hold."""
    ordered = sorted(workers)
    n = len(ordered)
    return {w: queues // n + (1 if k < queues % n else 0) for k, w in enumerate(ordered)}


@dataclass(slots=True)
class _Peer:
    seen: float
    held: frozenset[int]
    leaving: bool


class _Tracked:
    """A delivery counted as unsettled on its queue until it is acked, retried or dead."""

    __slots__ = ("_delivery", "_index", "_session", "attempts", "body", "message_id", "reply_to")

    def __init__(self, delivery: Delivery, session: _Session, index: int) -> None:
        self._delivery = delivery
        self._session: _Session | None = session
        self._index = index
        self.body = delivery.body
        self.message_id = delivery.message_id
        self.attempts = delivery.attempts
        self.reply_to = delivery.reply_to
        session.started(index)

    @property
    def live(self) -> bool:
        return self._session is not None and self._delivery.live

    def _done(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.settled(self._index)

    async def ack(self) -> None:
        try:
            await self._delivery.ack()
        finally:
            self._done()

    async def retry(self) -> None:
        try:
            await self._delivery.retry()
        finally:
            self._done()

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        try:
            if attempts is None:
                await self._delivery.dead(error_type, error)
            else:
                await self._delivery.dead(error_type, error, attempts=attempts)
        finally:
            self._done()


@dataclass(eq=False)
class _Session:
    """One connection, and the leases, consumers and deliveries that live and die with it."""

    connection: AbstractConnection
    control: AbstractChannel
    exchange: AbstractExchange
    held: set[int] = field(default_factory=set)
    channels: dict[int, AbstractChannel] = field(default_factory=dict)
    """The channel of each held lease's consumer (one per queue)."""
    queues: dict[int, AbstractQueue] = field(default_factory=dict)
    releasing: set[int] = field(default_factory=set)
    tags: dict[int, ConsumerTag] = field(default_factory=dict)
    unsettled: dict[int, int] = field(default_factory=dict)
    idle: dict[int, asyncio.Event] = field(default_factory=dict)
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def started(self, index: int) -> None:
        self.unsettled[index] = self.unsettled.get(index, 0) + 1
        self._idle(index).clear()

    def settled(self, index: int) -> None:
        left = self.unsettled[index] = self.unsettled.get(index, 1) - 1
        if left <= 0:
            self._idle(index).set()

    def _idle(self, index: int) -> asyncio.Event:
        event = self.idle.get(index)
        if event is None:
            event = self.idle[index] = asyncio.Event()
            event.set()
        return event

    async def all_settled(self, index: int) -> None:
        for _ in range(SETTLE_YIELDS):
            await asyncio.sleep(0)
        await self._idle(index).wait()

    async def close(self) -> None:
        self.lost.set()
        with contextlib.suppress(*_LOST, asyncio.TimeoutError):
            await asyncio.wait_for(self.connection.close(), 5)


class _Incoming:
    """What :class:`AmqpDelivery` reads of an ``IncomingMessage``, taken from aiormq's
    delivery as it is (the channel, for settling, only while it is open)."""

    __slots__ = ("_channel", "body", "delivery_tag", "headers", "message_id", "reply_to")

    def __init__(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        self._channel = message.channel
        self.body = message.body
        self.delivery_tag = message.delivery_tag
        self.headers = properties.headers or {}
        self.message_id = properties.message_id
        self.reply_to = properties.reply_to

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError
        return self._channel

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        if self.delivery_tag is not None:
            await self.channel.basic_nack(self.delivery_tag, multiple=multiple, requeue=requeue)


class LeasedConsumer:
    """Consumes the command queues whose leases it holds (see the module's doc)."""

    def __init__(
        self,
        settings: AmqpSettings,
        handler: Handler,
        wrap: Callable[[AbstractIncomingMessage], Delivery],
        *,
        connect_timeout: float,
        reconnect_interval: float,
    ) -> None:
        self.settings = settings
        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._handler = handler
        self._wrap = wrap
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._interval = settings.share_interval
        self._peers: dict[str, _Peer] = {}
        self._live: set[str] = {self.id}
        self._live_since = 0.0
        self._release_after = 0.0
        self._free_since: dict[int, float] = {}
        self._refused_until: dict[int, float] = {}
        self._session: _Session | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._cancelled = False
        self._closed = False
        self._finished = asyncio.Event()
        self._lock = asyncio.Lock()
        """Held while claiming, and by ``cancel``: no consumer starts after a cancel."""

    @property
    def held(self) -> frozenset[int]:
        """The leases (command queue indexes) this consumer holds now."""
        session = self._session
        return frozenset(session.held) if session is not None else frozenset()

    @property
    def consuming(self) -> frozenset[int]:
        """The command queues it takes deliveries from now."""
        session = self._session
        return frozenset(session.tags) if session is not None else frozenset()

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, announce this worker and claim what it may; then keep balancing."""
        try:
            session = await self._open()
        except _LOST as exc:
            if isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError)):
                raise BrokerUnavailable(f"cannot connect to RabbitMQ to consume: {exc!r}") from exc
            raise BrokerError(f"cannot consume the command queues: {exc!r}") from exc
        self._session = session
        try:
            await self._beat(session)
            await self._balance(session)
        except _LOST as exc:
            log.info("connection lost while starting to consume: %r", exc)
            await session.close()
        self._task = asyncio.get_running_loop().create_task(self._run(session))

    async def cancel(self) -> None:
        """Take no new deliveries; release every lease once its deliveries are settled."""
        if self._cancelled:
            return
        self._cancelled = True
        session = self._session
        async with self._lock:
            if session is not None and not session.lost.is_set():
                try:
                    for index in list(session.tags):
                        tag = session.tags.pop(index, None)
                        queue = session.queues.get(index)
                        if tag is not None and queue is not None:
                            await queue.cancel(tag)
                    await self._beat(session)
                except _LOST as exc:
                    log.debug("connection lost while cancelling: %r", exc)
                    await session.close()
        for _ in range(SETTLE_YIELDS):
            await asyncio.sleep(0)
        self._wake.set()

    async def aclose(self) -> None:
        """Stop for good: the connection closes, and every lease with it."""
        if self._closed:
            return
        session = self._session
        if (
            self._cancelled
            and self._task is not None
            and not self._task.done()
            and session is not None
            and not any(session.unsettled.values())
        ):
            # A graceful stop with every delivery settled: let the leases go one by one
            # (a few round trips) rather than all at once with the connection.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._finished.wait()), 2.0)
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for release in list(self._releases):
            release.cancel()
        await asyncio.gather(*self._releases, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self, session: _Session) -> None:
        while not self._closed:
            try:
                await self._work(session)
            except _LOST as exc:
                log.info("consumer connection lost, starting over: %r", exc)
            except Exception:
                # Whatever it was, a connection holding leases must not linger unused.
                log.exception("consumer %s failed, starting over on a new connection", self.id)
            await session.close()
            self._forget(session)
            if self._cancelled or self._closed:
                self._finished.set()
                return
            while not (self._cancelled or self._closed):
                await asyncio.sleep(self._reconnect_interval)
                try:
                    session = await self._open()
                except _LOST as exc:
                    log.info("cannot reconnect to consume yet: %r", exc)
                    continue
                self._session = session
                log.info("consumer %s reconnected", self.id)
                break
            else:
                self._finished.set()
                return

    def _forget(self, session: _Session) -> None:
        """After a loss: nothing of that connection is held any more."""
        session.held.clear()
        session.tags.clear()
        session.releasing.clear()
        session.channels.clear()
        session.queues.clear()
        for event in session.idle.values():
            event.set()  # its deliveries are void: nobody waits for them

    async def _work(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while not session.lost.is_set() and not self._closed:
            if self._cancelled:
                await self._finish(session)
                return
            now = loop.time()
            if now >= next_beat:
                await self._beat(session)
                next_beat = now + self._interval
            self._wake.clear()
            await self._balance(session)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_beat - loop.time()))

    async def _finish(self, session: _Session) -> None:
        """Graceful stop: each lease goes once its queue's deliveries are settled."""
        # Releases under way first: the connection must outlive their deliveries.
        await asyncio.gather(*self._releases, return_exceptions=True)
        await asyncio.gather(*(self._release(session, i) for i in list(session.held)))
        await self._beat(session, leaving=True)
        self._finished.set()

    # -- the broker side -----------------------------------------------------------------

    async def _open(self) -> _Session:
        s = self.settings
        connection = await aio_pika.connect(s.url, timeout=self._connect_timeout)
        try:
            control = await connection.channel(publisher_confirms=False)
            exchange = await control.declare_exchange(
                s.workers_exchange, aio_pika.ExchangeType.FANOUT, durable=False
            )
            presence = await control.declare_queue(
                f"{s.workers_exchange}.{self.id}",
                exclusive=True,
                auto_delete=True,
                arguments={"x-message-ttl": int(LIVE_INTERVALS * self._interval * 1000)},
            )
            await presence.bind(exchange, "")
            session = _Session(connection, control, exchange)

            def lost(*_: object) -> None:
                session.lost.set()
                self._wake.set()

            connection.close_callbacks.add(lost)
            control.close_callbacks.add(lost)

            async def on_presence(message: AbstractIncomingMessage) -> None:
                self._heard(message.body)

            await presence.consume(on_presence, no_ack=True)
        except BaseException:
            with contextlib.suppress(*_LOST, asyncio.TimeoutError):
                await asyncio.wait_for(connection.close(), 5)
            raise
        self._live_since = asyncio.get_running_loop().time()
        return session

    async def _beat(self, session: _Session, *, leaving: bool = False) -> None:
        body = json.dumps(
            {
                "id": self.id,
                "held": sorted(session.held),
                "leaving": leaving or self._cancelled,
            }
        ).encode()
        message = aio_pika.Message(
            body, expiration=LIVE_INTERVALS * self._interval, content_type="application/json"
        )
        await session.exchange.publish(message, "")

    def _heard(self, body: bytes) -> None:
        try:
            data = json.loads(body)
            peer = str(data["id"])
            held = frozenset(int(i) for i in data["held"])
            leaving = bool(data.get("leaving", False))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed presence message: %r", body[:200])
            return
        if peer == self.id:
            return
        now = asyncio.get_running_loop().time()
        before = self._peers.get(peer)
        self._peers[peer] = _Peer(now, held, leaving)
        if before is None or before.held != held or before.leaving != leaving:
            for index in before.held - held if before is not None else ():
                self._refused_until.pop(index, None)  # let go of: worth a claim at once
            self._wake.set()

    async def _claim(self, session: _Session, index: int) -> bool:
        """Try to take lease ``index``; if it is ours, consume its queue on the channel
        that took it."""
        channel = await session.connection.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(
                self.settings.lease_queue(index), exclusive=True, durable=False
            )
        except aiormq.exceptions.ChannelLockedResource:
            # Another connection holds it; the broker closed this channel.
            return False
        session.held.add(index)
        session.channels[index] = channel
        session.unsettled.setdefault(index, 0)

        def closed(*_: object) -> None:
            if session.channels.get(index) is channel:  # not closed by a release: start over
                session.lost.set()
                self._wake.set()

        channel.close_callbacks.add(closed)
        # A consumer the broker cancels by itself (its queue deleted): start over too.
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(closed)
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        # Declared by AmqpQueue.open (and again by its robust channel after a restart).
        queue = await channel.get_queue(self.settings.command_queue(index), ensure=False)
        session.queues[index] = queue
        handler, wrap = self._handler, self._wrap

        async def on_message(message: DeliveredMessage) -> None:
            if session.lost.is_set():
                # Read after its connection was lost (e.g. from a buffer, after a pause):
                # void, and already the next owner's; not started here.
                return
            incoming = cast(AbstractIncomingMessage, _Incoming(message))
            await handler(_Tracked(wrap(incoming), session, index))

        # Straight on aiormq's channel, which hands each delivery over in a task of its
        # own, in arrival order: aio-pika's consume would add a second task and an
        # IncomingMessage (every property parsed) per delivery.
        consuming = await underlay.basic_consume(queue.name, on_message)
        session.tags[index] = consuming.consumer_tag or ""
        log.info("consumer %s took command queue %d", self.id, index)
        return True

    async def _release(self, session: _Session, index: int) -> None:
        """Stop consuming queue ``index``, wait for its deliveries, then free its lease."""
        if index in session.releasing or index not in session.held:
            return
        session.releasing.add(index)
        try:
            tag = session.tags.pop(index, None)
            queue = session.queues.get(index)
            if tag is not None and queue is not None:
                await queue.cancel(tag)
            await session.all_settled(index)
            if session.lost.is_set():
                return
            # Closing its channel gives back anything delivered that never reached the
            # handler (none is expected): the next owner starts from it, in order.
            channel = session.channels.pop(index, None)
            session.queues.pop(index, None)
            if channel is not None:
                await channel.close()
            await session.control.queue_delete(self.settings.lease_queue(index))
            session.held.discard(index)
            log.info("consumer %s handed command queue %d over", self.id, index)
        finally:
            session.releasing.discard(index)
        await self._beat(session)

    async def _released(self, session: _Session, index: int) -> None:
        try:
            await self._release(session, index)
        except _LOST as exc:
            log.info("connection lost while releasing queue %d: %r", index, exc)
            await session.close()
        self._wake.set()

    # -- balance -------------------------------------------------------------------------

    async def _balance(self, session: _Session) -> None:
        """Claim or release leases towards this worker's share."""
        async with self._lock:
            if self._cancelled or session.lost.is_set():
                return
            await self._balanced(session)

    async def _balanced(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        horizon = LIVE_INTERVALS * self._interval
        for peer in [p for p, seen in self._peers.items() if now - seen.seen > horizon]:
            del self._peers[peer]
        peers = self._peers
        live = {self.id} | {p for p, seen in peers.items() if not seen.leaving}
        if live != self._live:
            self._live, self._live_since = live, now
        share = shares(live, self.settings.queues)
        mine = share[self.id]
        # Leases of leaving workers are claimed as soon as they let them go.
        taken: set[int] = set()
        going: set[int] = set()
        for other in peers.values():
            (going if other.leaving else taken).update(other.held)
        free = [i for i in range(self.settings.queues) if i not in session.held | taken]
        for i in list(self._free_since):
            if i not in free or i in going:
                del self._free_since[i]
        for i in free:
            if i not in going:
                self._free_since.setdefault(i, now)
        patience = STUCK_INTERVALS * self._interval
        stuck = {i for i, since in self._free_since.items() if now - since >= patience}
        random.shuffle(free)
        wanted = mine - len(session.held)
        for index in free:
            if self._refused_until.get(index, 0.0) > now:
                continue
            if wanted <= 0 and index not in stuck:
                continue
            if await self._claim(session, index):
                wanted -= 1
                self._free_since.pop(index, None)
                await self._beat(session)
            else:
                self._refused_until[index] = now + self._interval
        active = [i for i in session.held if i not in session.releasing]
        excess = len(active) - mine
        if (
            excess > 0
            and now - self._live_since >= STABLE_INTERVALS * self._interval
            and now >= self._release_after
        ):
            deficit = sum(max(0, share[p] - len(peers[p].held)) for p in live if p != self.id)
            count = min(excess, deficit)
            if count > 0:
                # The quickest handovers first: queues with the fewest unsettled deliveries.
                active.sort(key=lambda i: session.unsettled.get(i, 0))
                for index in active[:count]:
                    task = loop.create_task(self._released(session, index))
                    self._releases.add(task)
                    task.add_done_callback(self._releases.discard)
                self._release_after = now + COOLDOWN_INTERVALS * self._interval
