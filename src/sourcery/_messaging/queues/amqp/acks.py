"""Acks batching: the acks of one channel's deliveries go out together."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import aiormq
from aio_pika.abc import AbstractIncomingMessage

from sourcery._io.driver_errors import amqp_channel

__all__ = ["ACK_HOLD", "Acks"]

log = logging.getLogger(__name__)

_UNSETTLED, _TO_ACK, _SENT = 0, 1, 2
"""What a registered delivery tag waits for: its settlement, an ack frame, nothing more."""
ACK_HOLD = 0.01
"""Seconds an ack above an unsettled delivery may wait to be covered by a later
``multiple`` ack before it goes alone."""
_EARLY = 0.001
"""A held ack this close to its time goes now (timers may fire a little early)."""


class Acks:
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
    those messages again, on another channel, with new tags and a new ``Acks``).
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

    _by_channel: weakref.WeakKeyDictionary[Any, Acks] = weakref.WeakKeyDictionary()

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
    def of(cls, message: AbstractIncomingMessage, tag: int) -> Acks | None:
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
                except amqp_channel().lost as exc:
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
