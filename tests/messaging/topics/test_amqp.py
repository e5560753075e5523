"""What only the RabbitMQ bus can meet: messages on its exchange from anyone but a publisher."""

from __future__ import annotations

import asyncio

import aio_pika
import msgspec
import pytest
from services import amqp_down, amqp_url

from sourcery._core.config import parse_amqp_url
from sourcery._messaging.topics import open_bus
from sourcery._messaging.topics.amqp import AmqpBus
from sourcery._messaging.topics.base import encode_message

from .test_contract import at, record

pytestmark = pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down()))


async def test_malformed_messages_are_dropped_with_a_log_and_the_subscription_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = amqp_url()
    good = at(record("account", "Deposited"))
    position, valid = good[0]
    hostile = [
        ("account.Deposited", b"not msgpack at all \xff"),
        ("account.Deposited", msgspec.msgpack.encode([1, 2, 3])),
        ("order.Placed", encode_message(position, valid)),  # a key that is not the event's
        ("account.Deposited", encode_message(position, msgspec.structs.replace(valid, id=b"x"))),
        (
            "account.Deposited",
            encode_message(position, msgspec.structs.replace(valid, actor_id="")),
        ),
    ]
    bus = await open_bus(url)
    assert isinstance(bus, AmqpBus)
    async with bus, bus.subscribe(["#"]) as sub:
        connection = await aio_pika.connect(parse_amqp_url(url).url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(parse_amqp_url(url).events_exchange)
            for key, body in hostile:
                await exchange.publish(aio_pika.Message(body), routing_key=key)
        await bus.publish(good)
        delivery = await asyncio.wait_for(anext(sub), 10)
        assert sub.dropped == len(hostile)
    assert delivery.record == valid and delivery.position == position
    assert sum("not an event" in r.getMessage() for r in caplog.records) == len(hostile)
