"""The bus implementations the contract suite runs against: in-process and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from services import amqp_down, amqp_url

from sourcery._messaging.topics import EventBus, open_bus

BUSES: dict[str, tuple[Callable[[], str], Callable[[], str | None]]] = {
    "memory": (lambda: f"memory://{uuid.uuid4().hex}", lambda: None),
    "amqp": (amqp_url, amqp_down),
}


@pytest.fixture(params=sorted(BUSES))
def bus_url(request: pytest.FixtureRequest) -> str:
    """A URL naming a fresh bus (its own names), one per implementation."""
    make, down = BUSES[request.param]
    reason = down()
    if reason is not None:
        pytest.skip(reason)
    return make()


@pytest.fixture
async def bus(bus_url: str) -> AsyncIterator[EventBus]:
    opened = await open_bus(bus_url)
    try:
        yield opened
    finally:
        await opened.aclose()
