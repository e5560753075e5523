"""The store implementations the contract suite runs against.

Every test in ``test_contract.py`` runs once per entry of :data:`FACTORIES`. A new backend
(PostgreSQL, say) joins the suite by adding one :class:`StoreFactory` there: a way to make
a URL for a fresh, empty store, plus what the backend can do. Tests never look at a
factory's name; they ask for a capability (:func:`requires_persistence`) instead.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down

from sourcery._stores import Store, open_store


@dataclass(frozen=True, slots=True)
class StoreFactory:
    """How to get a fresh, empty store of one implementation."""

    id: str
    """The pytest id of this implementation."""
    make_url: Callable[[Path], str]
    """A URL naming a new, empty store; it may put files under the given directory."""
    persistent: bool
    """Whether opening the same URL again sees what an earlier (closed) store wrote."""
    unavailable: Callable[[], str | None] = lambda: None
    """A reason to skip every test of this implementation (e.g. no server configured)."""


def postgres_url(_tmp: Path) -> str:
    return f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:16]}"


FACTORIES: tuple[StoreFactory, ...] = (
    StoreFactory(
        id="sqlite-memory",
        make_url=lambda _tmp: "sqlite://:memory:",
        persistent=False,
    ),
    StoreFactory(
        id="sqlite-file",
        make_url=lambda tmp: f"sqlite:///{tmp / 'store.db'}",
        persistent=True,
    ),
    StoreFactory(
        id="postgres",
        make_url=postgres_url,
        persistent=True,
        unavailable=postgres_down,
    ),
)


@pytest.fixture(params=FACTORIES, ids=[f.id for f in FACTORIES])
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    factory: StoreFactory = request.param
    reason = factory.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return factory


@pytest.fixture
def store_url(store_factory: StoreFactory, tmp_path: Path) -> str:
    """The URL of this test's store; open it again with :func:`reopen`."""
    return store_factory.make_url(tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A fresh, empty store, closed after the test."""
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.aclose()


Reopen = Callable[[], Awaitable[Store]]


@pytest.fixture
async def reopen(store_url: str) -> AsyncIterator[Reopen]:
    """Open another store on this test's URL; every store it opened is closed after."""
    opened: list[Store] = []

    async def _open() -> Store:
        again = await open_store(store_url)
        opened.append(again)
        return again

    try:
        yield _open
    finally:
        for s in opened:
            await s.aclose()


@pytest.fixture
def requires_persistence(store_factory: StoreFactory) -> None:
    """Skip the test unless reopening the store's URL sees its earlier data."""
    if not store_factory.persistent:
        pytest.skip(
            f"{store_factory.id}: reopening its URL gives a new, empty store, "
            "so there is nothing to persist across a reopen"
        )
