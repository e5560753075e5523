"""Sending commands to workers through a command queue, and waiting for their replies.

``send`` returns once the queue holds the command durably (RabbitMQ: on disk, confirmed);
a worker applies it later. ``request`` also waits for the worker's reply. Many concurrent
sends share one connection and channel and are confirmed together, so a client that
gathers them is limited by the broker, not by round trips.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from sourcery._core.config import broker_url
from sourcery._core.errors import (
    ClosedError,
    CommandFailed,
    CommandTimeout,
    ConfigurationError,
    DecodingError,
)
from sourcery._core.ids import format_id, new_id
from sourcery._core.records import ActorRef
from sourcery._io.opening import Opening
from sourcery._messaging.queues import CommandQueue, open_queue
from sourcery._messaging.queues.base import cancelled_by_close
from sourcery._messaging.wire import DEFAULT_MAX_MESSAGE, Reply, decode_reply, encode_command

__all__ = ["Client", "new_message_id"]

C = TypeVar("C")

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


def new_message_id() -> str:
    """A fresh, k-ordered message id."""
    return format_id(new_id())


class Client:
    """Sends commands to the workers behind a command queue.

    Open with ``async with Client.open(broker_url) as client`` (default:
    ``SOURCERY_BROKER``), or over a queue you opened: ``Client(queue)``.
    """

    def __init__(
        self, queue: CommandQueue, *, max_message: int = DEFAULT_MAX_MESSAGE, owns: bool = False
    ) -> None:
        self.queue = queue
        self.max_message = max_message
        self._owns = owns
        self._reply_to: str | None = None
        self._listening = asyncio.Lock()
        self._waiting: dict[str, list[asyncio.Future[Reply]]] = {}
        self._closed = False

    @classmethod
    def open(
        cls, broker: str | None = None, *, max_message: int = DEFAULT_MAX_MESSAGE
    ) -> Opening[Client]:
        """Open the command queue ``broker`` (default: ``SOURCERY_BROKER``) for a client
        that owns it: ``await`` it, or use it with ``async with``."""
        url = broker_url(broker)
        if url is None:
            raise ConfigurationError("a client needs a broker URL: broker=... or SOURCERY_BROKER")

        async def opened() -> Client:
            return cls(await open_queue(url), max_message=max_message, owns=True)

        return Opening(opened)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Fail the requests still waiting, close the queue if the client owns it."""
        if self._closed:
            return
        self._closed = True
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ClosedError("the client was closed"))
        self._waiting.clear()
        if self._owns:
            await self.queue.aclose()

    async def send(
        self, actor: ActorRef[Any, C, Any], command: C, *, message_id: str | None = None
    ) -> str:
        """Queue ``command`` for ``actor``; return its message id once the queue holds it.

        Sending again with the same ``message_id`` is harmless: a worker applies it once.
        Raises EncodingError / PayloadTooLarge before sending anything, BrokerError if the
        broker refused it, BrokerUnavailable if the broker could not be reached in time.
        """
        self._check()
        message_id = message_id or new_message_id()
        body = encode_command(actor, command, message_id, max_size=self.max_message)
        await self.queue.send(actor, body, message_id=message_id)
        return message_id

    async def request(
        self,
        actor: ActorRef[Any, C, Any],
        command: C,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        message_id: str | None = None,
    ) -> Reply:
        """Send ``command`` and wait for the worker's reply.

        Returns the reply when the command was applied (``status`` ``ok``) or had been
        applied before (``duplicate``). Raises :class:`CommandFailed` (``.reply`` set)
        when the worker rejected it or gave up on it, :class:`CommandTimeout` when no reply
        came within ``timeout`` seconds (the command is queued and may still be applied).
        """
        self._check()
        message_id = message_id or new_message_id()
        body = encode_command(actor, command, message_id, max_size=self.max_message)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(message_id, []).append(future)
        try:
            async with asyncio.timeout(timeout):
                reply_to = await self._replies()
                await self.queue.send(actor, body, message_id=message_id, reply_to=reply_to)
                reply = await future
        except TimeoutError:
            raise CommandTimeout(
                f"no reply to command {message_id} for {actor} within {timeout:g} s; "
                "it is queued and may still be applied"
            ) from None
        except asyncio.CancelledError:
            if cancelled_by_close(self._closed):
                raise ClosedError("the client was closed while sending") from None
            raise
        except Exception as exc:
            if self._closed:
                raise ClosedError("the client was closed while sending") from exc
            raise
        finally:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a close that failed it while we sent is ours
            futures = self._waiting.get(message_id)
            if futures is not None:
                if future in futures:
                    futures.remove(future)
                if not futures:
                    del self._waiting[message_id]
        if not reply.ok:
            raise CommandFailed(
                f"command {message_id} for {actor} {reply.status}: "
                f"{reply.error_type}: {reply.error}",
                reply=reply,
            )
        return reply

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the client is closed")

    async def _replies(self) -> str:
        if self._reply_to is None:
            async with self._listening:
                if self._reply_to is None:
                    self._reply_to = await self.queue.replies(self._on_reply)
        return self._reply_to

    def _on_reply(self, correlation_id: str, body: bytes) -> None:
        futures = self._waiting.get(correlation_id)
        if not futures:
            return  # a reply after its request timed out
        try:
            reply = decode_reply(body)
        except DecodingError as exc:
            log.warning("ignoring a malformed reply to %s: %s", correlation_id, exc)
            return
        for future in futures:
            if not future.done():
                future.set_result(reply)
