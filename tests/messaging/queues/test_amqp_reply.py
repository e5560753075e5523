"""A worker's reply is best effort: losing the connection while replying is logged, never
raised into the worker (its command is done and acked regardless)."""

from __future__ import annotations

import logging

import pytest
from services import amqp_down, amqp_url

from sourcery._core.errors import BrokerUnavailable
from sourcery._messaging.queues.amqp import AmqpQueue

pytestmark = pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down()))


async def test_a_reply_without_a_connection_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = await AmqpQueue.open(amqp_url(queues=1))
    try:
        # The connection goes away before the first reply opens the reply channel.
        await queue._connection.close()
        with caplog.at_level(logging.INFO, logger="sourcery._messaging.queues.amqp"):
            await queue.reply("sourcery-test.nowhere", b"reply", correlation_id="m-1")
        assert any("could not reply" in r.getMessage() for r in caplog.records)
        # Asking for replies without a connection is the broker being unavailable.
        with pytest.raises(BrokerUnavailable):
            await queue.replies(lambda _id, _body: None)
    finally:
        await queue.aclose()
