"""Every process of a deployment must hash actors over the same number of command queues."""

from __future__ import annotations

import asyncio

import pytest
from services import amqp_down, amqp_prefix, amqp_url

from sourcery._core.errors import ConfigurationError
from sourcery._core.records import ActorRef
from sourcery._messaging.queues import open_queue


@pytest.fixture(autouse=True)
def _broker() -> None:
    reason = amqp_down()
    if reason is not None:
        pytest.skip(reason)


async def test_a_process_with_fewer_queues_than_the_deployment_is_refused() -> None:
    prefix = amqp_prefix()
    wider = await open_queue(amqp_url(prefix, queues=3))
    try:
        with pytest.raises(ConfigurationError, match="use more command queues than queues=2"):
            await open_queue(amqp_url(prefix, queues=2))
        with pytest.raises(ConfigurationError, match="use fewer command queues than queues=5"):
            await open_queue(amqp_url(prefix, queues=5))
        # Refused before declaring anything: no queue 3 or 4 was left behind.
        for index in (3, 4):
            assert not await wider._queue_exists(f"{prefix}.commands.{index}")  # type: ignore[attr-defined]
        # The same number is fine, and the refused process changed nothing: still usable.
        same = await open_queue(amqp_url(prefix, queues=3))
        try:
            await same.send(ActorRef("account", "q1"), b"x", message_id="m1")
        finally:
            await same.aclose()
        await wider.send(ActorRef("account", "q2"), b"y", message_id="m2")
    finally:
        await wider.aclose()


async def test_a_process_starting_while_another_declares_the_queues_starts() -> None:
    # The other one's half-declared set must not look like a deployment with fewer queues.
    prefix = amqp_prefix()
    url = amqp_url(prefix, queues=12)
    probe = await open_queue(amqp_url(amqp_prefix()))
    first = asyncio.create_task(open_queue(url))
    try:
        names = [f"{prefix}.commands.{i}" for i in (0, 11)]
        async with asyncio.timeout(30):
            while not any([await probe._queue_exists(n) for n in names]):  # type: ignore[attr-defined]
                await asyncio.sleep(0)
        assert not first.done()  # caught half-way
        second = await open_queue(url)
        await second.aclose()
    finally:
        await (await first).aclose()
        await probe.aclose()
