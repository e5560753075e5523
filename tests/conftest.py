"""Shared test configuration."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator

import pytest
import services
from hypothesis import HealthCheck, settings
from private_broker import PrivateBroker, private_node, rabbitmq_missing
from services import (
    amqp_down,
    amqp_url,
    delete_test_amqp_names,
    delete_used_amqp_names,
    drop_test_schemas,
    is_service_skip,
    memory_queue_url,
    postgres_down,
    services_down,
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI and ``make test`` (``SOURCERY_TEST_REQUIRE_SERVICES=1``) the run stops at
    once when a service does not answer; ``SOURCERY_TEST_SKIP_SERVICES=1`` opts out."""
    if not services.REQUIRE_SERVICES:
        return
    down = services_down()
    if down:
        pytest.exit(
            "services are required (CI=true or SOURCERY_TEST_REQUIRE_SERVICES=1; "
            "SOURCERY_TEST_SKIP_SERVICES=1 skips their tests instead): " + "; ".join(down),
            returncode=3,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test skipped for a missing service fails when services are required."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and services.REQUIRE_SERVICES and is_service_skip(str(report.longrepr)):
        report.outcome = "failed"
        report.longrepr = f"a required service is missing: {report.longrepr}"


settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _clean_postgres_schemas() -> Iterator[None]:
    """This session's test schemas are dropped after it."""
    available = postgres_down() is None
    yield
    if available:
        asyncio.run(drop_test_schemas())


@pytest.fixture(scope="session", autouse=True)
def _clean_amqp_names() -> Iterator[None]:
    """This session's queues and exchanges are deleted after it."""
    yield
    if amqp_down() is None:
        asyncio.run(delete_test_amqp_names())


@pytest.fixture(autouse=True)
def _delete_used_amqp_names() -> Iterator[None]:
    """Each test's queues go when it ends, so the broker never holds hundreds at once."""
    yield
    from services import USED_PREFIXES

    if USED_PREFIXES and amqp_down() is None:
        asyncio.run(delete_used_amqp_names())


BROKERS: dict[str, tuple[Callable[..., str], Callable[[], str | None]]] = {
    "memory": (memory_queue_url, lambda: None),
    "amqp": (amqp_url, amqp_down),
}


@pytest.fixture(params=sorted(BROKERS))
def make_broker(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Makes broker URLs of one kind (in-process, then RabbitMQ), each with fresh names."""
    make, down = BROKERS[request.param]
    reason = down()
    if reason is not None:
        pytest.skip(reason)
    return make


@pytest.fixture(scope="session")
def _private_broker_session() -> Iterator[PrivateBroker]:
    """A RabbitMQ node of this session's own, started by the first test that asks for it."""
    reason = rabbitmq_missing()
    if reason is not None:
        pytest.skip(reason)
    with private_node() as node:
        yield node


@pytest.fixture
def private_broker(_private_broker_session: PrivateBroker) -> PrivateBroker:
    """The private node (see ``private_broker.py``), running: the only broker a test may
    break (drop its connections, restart it)."""
    _private_broker_session.start()  # a no-op, unless an earlier test left it stopped
    return _private_broker_session
