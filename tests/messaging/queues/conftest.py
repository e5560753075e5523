"""The command queue implementations the contract suite runs against."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from services import amqp_down, amqp_url


@dataclass(frozen=True, slots=True)
class QueueFactory:
    id: str
    make_url: Callable[..., str]
    """A URL naming fresh, empty queues; keyword arguments become URL parameters."""
    unavailable: Callable[[], str | None] = lambda: None


def memory_url(**params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"memory://test-{uuid.uuid4().hex}" + (f"?{query}" if query else "")


FACTORIES = (
    QueueFactory("memory", memory_url),
    QueueFactory("amqp", amqp_url, amqp_down),
)


@pytest.fixture(params=FACTORIES, ids=[f.id for f in FACTORIES])
def make_url(request: pytest.FixtureRequest) -> Callable[..., str]:
    factory: QueueFactory = request.param
    reason = factory.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return factory.make_url
