"""Store URLs for the read-side tests: a SQLite file, then a PostgreSQL schema of its own."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down


def postgres_url() -> str:
    return f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """Makes fresh store URLs of one kind (each also the projections' database)."""
    if request.param == "postgresql":
        reason = postgres_down()
        if reason is not None:
            pytest.skip(reason)
        return postgres_url
    names = iter(range(1000))
    return lambda: f"sqlite:///{tmp_path}/store{next(names)}.db"
