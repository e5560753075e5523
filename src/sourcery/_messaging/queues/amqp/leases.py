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
an exclusive queue of its own; :mod:`.balance` says from those which leases to claim or
release (see there), :mod:`.session` holds one connection and all that dies with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable

from aio_pika.abc import AbstractIncomingMessage

from sourcery._core.config import AmqpSettings
from sourcery._core.errors import BrokerError, BrokerUnavailable
from sourcery._io.driver_errors import reason
from sourcery._messaging.queues.amqp.balance import Balance, shares
from sourcery._messaging.queues.amqp.session import SETTLE_YIELDS, Session, ending
from sourcery._messaging.queues.base import Delivery, Handler

__all__ = ["LeasedConsumer", "shares"]

log = logging.getLogger(__name__)


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
        self._balance = Balance(self.id, settings.queues, settings.share_interval)
        self._session: Session | None = None
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
        except ending() as exc:
            if isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError)):
                raise BrokerUnavailable(
                    f"cannot connect to RabbitMQ to consume: {reason(exc)}"
                ) from exc
            raise BrokerError(f"cannot consume the command queues: {reason(exc)}") from exc
        self._session = session
        try:
            await self._beat(session)
            await self._rebalance(session)
        except ending() as exc:
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
                        await session.stop_consuming(index)
                    await self._beat(session)
                except ending() as exc:
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

    async def _run(self, session: Session) -> None:
        """Work on ``session`` until it is lost, then on a new one, until stopped."""
        while not self._closed:
            try:
                await self._work(session)
            except ending() as exc:
                log.info("consumer connection lost, starting over: %r", exc)
            except Exception:
                # Whatever it was, a connection holding leases must not linger unused.
                log.exception("consumer %s failed, starting over on a new connection", self.id)
            await session.close()
            session.forget()
            if self._cancelled or self._closed:
                self._finished.set()
                return
            reconnected = await self._reconnect()
            if reconnected is None:
                self._finished.set()
                return
            session = reconnected

    async def _reconnect(self) -> Session | None:
        """A new session, once the broker can be reached; None if stopped meanwhile."""
        while not (self._cancelled or self._closed):
            await asyncio.sleep(self._reconnect_interval)
            try:
                session = await self._open()
            except ending() as exc:
                log.info("cannot reconnect to consume yet: %r", exc)
                continue
            self._session = session
            log.info("consumer %s reconnected", self.id)
            return session
        return None

    async def _work(self, session: Session) -> None:
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
            await self._rebalance(session)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_beat - loop.time()))

    async def _finish(self, session: Session) -> None:
        """Graceful stop: each lease goes once its queue's deliveries are settled."""
        # Releases under way first: the connection must outlive their deliveries.
        await asyncio.gather(*self._releases, return_exceptions=True)
        await asyncio.gather(*(self._release(session, i) for i in list(session.held)))
        await self._beat(session, leaving=True)
        self._finished.set()

    # -- the broker side -----------------------------------------------------------------

    async def _open(self) -> Session:
        session = await Session.open(
            self.settings,
            self.id,
            timeout=self._connect_timeout,
            ttl=self._balance.horizon,
            wake=self._wake.set,
            heard=self._heard,
        )
        self._balance.live_since = asyncio.get_running_loop().time()
        return session

    async def _beat(self, session: Session, *, leaving: bool = False) -> None:
        await session.announce(self._balance.presence(session.held, leaving or self._cancelled))

    def _heard(self, body: bytes) -> None:
        if self._balance.heard(body, asyncio.get_running_loop().time()):
            self._wake.set()

    async def _claim(self, session: Session, index: int) -> bool:
        if not await session.claim(index, self._handler, self._wrap):
            return False
        log.info("consumer %s took command queue %d", self.id, index)
        return True

    async def _release(self, session: Session, index: int) -> None:
        """Stop consuming queue ``index``, wait for its deliveries, then free its lease."""
        if await session.release(index):
            log.info("consumer %s handed command queue %d over", self.id, index)
            await self._beat(session)

    async def _released(self, session: Session, index: int) -> None:
        try:
            await self._release(session, index)
        except ending() as exc:
            log.info("connection lost while releasing queue %d: %r", index, exc)
            await session.close()
        self._wake.set()

    # -- balance -------------------------------------------------------------------------

    async def _rebalance(self, session: Session) -> None:
        """Claim or release leases towards this worker's share."""
        async with self._lock:
            if self._cancelled or session.lost.is_set():
                return
            await self._balanced(session)

    async def _balanced(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        turn = self._balance.round(loop.time(), session.held)
        for index in turn.free:
            if not turn.worth_claiming(index):
                continue
            if await self._claim(session, index):
                turn.claimed(index)
                await self._beat(session)
            else:
                turn.refused(index)
        active = [i for i in session.held if i not in session.releasing]
        for index in turn.to_release(active, session.unsettled):
            task = loop.create_task(self._released(session, index))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
