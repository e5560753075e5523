"""A worker: takes commands from a command queue and runs them on a runtime.

Deliveries are started in the order they arrive, so one actor's commands are decided in
the order they were queued (the runtime's per-actor lock is first come, first served),
while different actors' commands run concurrently and share the store's group commits.
A command is acknowledged only after its events are committed and its reply is sent; a
redelivered command (the worker died between commit and ack) is recognised by its message
id and not applied twice.

What happens to a command:

- applied, or applied before (a duplicate): reply ``ok`` / ``duplicate``, ack;
- rejected by decide: reply ``rejected`` (a business answer, not a failure), ack;
- malformed, too large, of an unknown actor type or command: to the dead letters at once,
  reply ``failed`` (retrying cannot help);
- decide or evolve raised, or the store failed: retried until it failed the queue's
  ``attempts`` times, then to the dead letters with the error, reply ``failed``. The
  worker counts the failures itself: a command also comes back when a worker died or a
  connection dropped under it, which must not count against it;
- the store is unreachable (or the connection to it was lost): retried in place, with a
  growing pause, until it is back (an outage is not the command's fault and must not fill
  the dead letters). It is retried *within the actor's turn* (``Runtime.send``'s
  ``wait_out``), so the actor's later commands, already waiting for their turn, cannot
  pass it. A worker that stops during an outage gives the command back, and with it
  every later command of that actor it holds, in order (none of them runs here).

Order: one actor's commands are applied in the order the queue delivered them. Only a
command's own failure (decide or evolve raised, a store error that is not an outage) may
let the actor's later commands pass it: it goes back to the queue, behind them.

Each delivery is settled exactly once (ack, retry or dead), after the command ran; a reply
that cannot be sent is logged and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sourcery._core.actor import ActorType, Outcome
from sourcery._core.config import broker_url
from sourcery._core.errors import (
    Abandoned,
    ClosedError,
    ConfigurationError,
    Rejected,
    SourceryError,
    StoreUnavailable,
)
from sourcery._core.records import ActorRef
from sourcery._engine.runtime import Runtime
from sourcery._io.opening import Opening
from sourcery._messaging.publishing import Publisher
from sourcery._messaging.queues import CommandQueue, Delivery, open_queue
from sourcery._messaging.settling import ABANDONED, RETRY, Settlement, Verdict
from sourcery._messaging.topics import EventBus, open_bus
from sourcery._messaging.wire import (
    DEFAULT_MAX_MESSAGE,
    CommandDecoder,
    CommandEnvelope,
    Status,
)

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger(__name__)

STORE_RETRY_FIRST = 0.05
STORE_RETRY_MAX = 2.0
"""Pauses between attempts while the store is unreachable: doubling up to this."""
MAX_TRACKED_FAILURES = 10_000
"""Commands whose failures a worker counts at once (see ``Worker._failed``)."""


@dataclass(slots=True)
class WorkerStats:
    """What a worker did with the commands it received (live counters)."""

    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    retried: int = 0
    dead: int = 0
    abandoned: int = 0
    """Deliveries dropped unrun because their channel had gone (the queue gave them to
    another consumer)."""


class Worker:
    """Runs the commands of a :class:`CommandQueue` on a :class:`Runtime`.

    Open with ``async with Worker.open(app, store=..., broker=...) as worker``, then
    ``await worker.run()`` until ``worker.stop()``.
    """

    def __init__(
        self,
        runtime: Runtime,
        queue: CommandQueue,
        actor_types: Iterable[ActorType[Any, Any, Any]],
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        bus: EventBus | None = None,
        owns: bool = False,
    ) -> None:
        """Work on an open runtime and queue; ``owns`` closes them (and ``bus``) with the
        worker. With a ``bus``, ``run`` also publishes the store's committed events on it."""
        self.runtime = runtime
        self.queue = queue
        self.bus = bus
        self.publisher: Publisher | None = None
        self.decoder = CommandDecoder(actor_types, max_size=max_message)
        self.stats = WorkerStats()
        self._owns = owns
        self._stopping = asyncio.Event()
        self._running = False
        self._done = asyncio.Event()
        self._done.set()
        self._consuming = asyncio.Event()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._failures: dict[str, int] = {}
        """Failures so far of the commands that failed and were not settled since."""
        self._given_back: set[ActorRef] = set()
        """Actors one of whose commands was given back unrun (the worker stopping while the
        store is away, or closed): their later commands are given back too, not run."""
        self._settlement = Settlement(queue, self.stats, self._failures)

    @classmethod
    def open(
        cls,
        app: ActorType[Any, Any, Any] | Iterable[ActorType[Any, Any, Any]],
        *,
        store: str | None = None,
        broker: str | None = None,
        cache: str | None = None,
        writer: str | None = None,
        events: str | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> Opening[Worker]:
        """Open the store (``SOURCERY_STORE``), the cache (``SOURCERY_CACHE``, optional) and
        the command queue (``SOURCERY_BROKER``) for the actor types ``app``; with
        ``events`` (an event bus URL), also publish every committed event there. ``await``
        the result, or use it with ``async with``."""
        types = [app] if isinstance(app, ActorType) else list(app)
        url = broker_url(broker)
        if url is None:
            raise ConfigurationError("a worker needs a broker URL: broker=... or SOURCERY_BROKER")
        options: dict[str, Any] = {"cache": cache}
        if writer is not None:
            options["writer"] = writer

        async def opened() -> Worker:
            async with contextlib.AsyncExitStack() as stack:
                runtime = await Runtime.open(store, types, **options)
                stack.push_async_callback(runtime.aclose)
                queue = await open_queue(url)
                stack.push_async_callback(queue.aclose)
                bus = None
                if events:
                    bus = await open_bus(events)
                    stack.push_async_callback(bus.aclose)
                worker = cls(runtime, queue, types, max_message=max_message, bus=bus, owns=True)
                stack.pop_all()
                return worker
            raise AssertionError("unreachable")  # pragma: no cover

        return Opening(opened)

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def inflight(self) -> int:
        """Deliveries received and not yet settled."""
        return self._inflight

    def stop(self) -> None:
        """Ask ``run`` to return: it stops taking commands and finishes those under way."""
        self._stopping.set()

    async def run(self) -> None:
        """Take and run commands until ``stop()``; then finish the ones received."""
        if self._closed:
            raise ClosedError("the worker is closed")
        if self._running:
            raise RuntimeError("this worker is running already")
        self._running = True
        self._done.clear()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.bus is not None:
                    # Entered first, left last: a last pass publishes what the commands
                    # under way at the stop committed.
                    self.publisher = await stack.enter_async_context(
                        Publisher.running(self.runtime.store, self.bus)
                    )
                consumer = await self.queue.consume(self._handle)
                self._consuming.set()
                try:
                    log.info("worker %s taking commands", self.runtime.writer)
                    await self._stopping.wait()
                finally:
                    await consumer.cancel()
                    await self._idle.wait()
        finally:
            self._running = False
            self._consuming.clear()
            self._done.set()
        log.info("worker %s stopped", self.runtime.writer)

    async def ready(self) -> None:
        """Return once ``run`` has subscribed to the command queues."""
        await self._consuming.wait()

    async def aclose(self) -> None:
        """Stop, wait for ``run`` to finish, close what the worker owns. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        await self._done.wait()
        if self._owns:
            try:
                await self.queue.aclose()
                if self.bus is not None:
                    await self.bus.aclose()
            finally:
                await self.runtime.aclose()

    # -- one delivery --------------------------------------------------------------------

    async def _handle(self, delivery: Delivery) -> None:
        self._inflight += 1
        self._idle.clear()
        try:
            try:
                verdict = await self._process(delivery)
            except Exception:
                log.exception(
                    "unexpected error handling command %s; it will be delivered again",
                    delivery.message_id or "(no id)",
                )
                self.stats.retried += 1
                verdict = RETRY
            await self._settlement.settle(delivery, verdict)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _process(self, delivery: Delivery) -> Verdict:
        """Run the command; say how to settle the delivery (nothing is settled here)."""
        decoder = self.decoder
        try:
            envelope = decoder.envelope(delivery.body)
        except SourceryError as exc:
            return Verdict("dead", delivery.message_id, None, "failed", exc=exc, failures=1)
        message_id = envelope.message_id
        try:
            actor, command = decoder.command(envelope)
        except SourceryError as exc:
            return Verdict("dead", message_id, _actor_of(envelope), "failed", exc=exc, failures=1)
        # No wait before this call: it takes the actor's place in line in arrival order.
        try:
            outcome = await self._send(actor, command, message_id, delivery)
        except Exception as exc:
            return self._failure(message_id, actor, exc, delivery)
        if self._failures:
            self._failures.pop(message_id, None)
        if outcome.duplicate:
            self.stats.duplicates += 1
            status: Status = "duplicate"
        else:
            self.stats.applied += 1
            status = "ok"
            if self.publisher is not None and outcome.events:
                self.publisher.wake()
        return Verdict("ack", message_id, actor, status, outcome=outcome)

    def _failure(
        self, message_id: str, actor: ActorRef, exc: Exception, delivery: Delivery
    ) -> Verdict:
        """How to settle a command whose run raised ``exc``."""
        if isinstance(exc, Abandoned) and actor in self._given_back and delivery.live:
            # An earlier command of its actor was given back: this one goes back after it.
            self.stats.retried += 1
            return RETRY
        if isinstance(exc, Abandoned):
            # Its channel is gone, so the queue has it back and may already have handed it
            # (and the actor's later commands) to another worker: running it here too would
            # put two writers on the actor. Nothing was written; nothing can be settled.
            log.info("command %s to %s dropped: its delivery was taken back", message_id, actor)
            self.stats.abandoned += 1
            return ABANDONED
        if isinstance(exc, Rejected):
            self._failures.pop(message_id, None)
            self.stats.rejected += 1
            return Verdict("ack", message_id, actor, "rejected", exc=exc)
        if isinstance(exc, StoreUnavailable | ClosedError):
            # Stopping while the store is away, or closed under us: the next worker will.
            # Not the command's fault, so not counted against it; the actor's later
            # commands must not run here before it.
            self._given_back.add(actor)
            self.stats.retried += 1
            return RETRY
        failures = self._failed(message_id)
        if failures >= self.queue.attempts:
            return Verdict("dead", message_id, actor, "failed", exc=exc, failures=failures)
        log.info(
            "command %s to %s failed (%d of %d), retrying: %r",
            message_id,
            actor,
            failures,
            self.queue.attempts,
            exc,
        )
        self.stats.retried += 1
        return RETRY

    async def _send(
        self, actor: ActorRef, command: object, message_id: str, delivery: Delivery
    ) -> Outcome[Any, Any]:
        """``runtime.send``, waiting out an unreachable store within the actor's turn unless
        stopping; the command is dropped (:class:`Abandoned`) if its delivery is taken back
        before the write, or given back after an earlier command of its actor was."""
        given_back = self._given_back

        def valid() -> bool:
            return delivery.live and actor not in given_back

        return await self.runtime.send(
            actor,
            command,
            message_id=message_id,
            valid=valid,
            wait_out=self._wait_out,
            # A new turn on the actor's queue: another worker may have written it meanwhile.
            tenure=getattr(delivery, "tenure", None),
        )

    async def _wait_out(self, exc: StoreUnavailable, attempt: int) -> None:
        """Pause before trying a command again on an unreachable store (the actor's turn is
        held meanwhile); give up (raise ``exc``) once the worker is stopping."""
        if self._stopping.is_set():
            raise exc
        pause = min(STORE_RETRY_FIRST * 2 ** min(attempt - 1, 16), STORE_RETRY_MAX)
        log.warning("store unavailable, retrying in %.2f s: %s", pause, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), pause)

    def _failed(self, message_id: str) -> int:
        """Count one more failure of the command ``message_id``; return its failures.

        Counted here, not from the delivery's ``attempts``: a command also comes back when a
        worker dies or a connection drops, which is not its fault. The count is forgotten
        when the command is settled, with the worker, and beyond
        ``MAX_TRACKED_FAILURES`` commands (the oldest first); forgetting only gives a
        command more attempts, and the queue's own delivery limit still ends it.
        """
        failures = self._failures.pop(message_id, 0) + 1
        self._failures[message_id] = failures  # (re)inserted last: the newest
        if len(self._failures) > MAX_TRACKED_FAILURES:
            del self._failures[next(iter(self._failures))]
        return failures


def _actor_of(envelope: CommandEnvelope) -> ActorRef | None:
    try:
        actor: ActorRef = envelope.actor
    except SourceryError:
        return None
    return actor
