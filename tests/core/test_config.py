"""Store URLs: parsing SQLite URLs, choosing a backend by scheme, and loud errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sourcery._core.config import (
    DEFAULT_STORE_URL,
    SqliteSettings,
    parse_sqlite_url,
    redact,
    store_url,
)
from sourcery._core.errors import ConfigurationError
from sourcery._stores import open_store

# -- parse_sqlite_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:///data/sub dir/store.db", "data/sub dir/store.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite:////abs/path.db?synchronous=normal", "/abs/path.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_url_paths(url: str, path: str) -> None:
    settings = parse_sqlite_url(url)
    assert settings.path == path
    assert settings.memory == (path == ":memory:")


def test_sqlite_defaults() -> None:
    assert parse_sqlite_url("sqlite:///x.db") == SqliteSettings(
        path="x.db", synchronous="FULL", busy_timeout_ms=10_000
    )


@pytest.mark.parametrize(
    ("query", "synchronous"),
    [("synchronous=full", "FULL"), ("synchronous=FULL", "FULL"), ("synchronous=Normal", "NORMAL")],
)
def test_sqlite_synchronous(query: str, synchronous: str) -> None:
    assert parse_sqlite_url(f"sqlite:///x.db?{query}").synchronous == synchronous


def test_sqlite_busy_timeout() -> None:
    settings = parse_sqlite_url("sqlite:///x.db?busy_timeout_ms=250&synchronous=normal")
    assert settings == SqliteSettings(path="x.db", synchronous="NORMAL", busy_timeout_ms=250)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?synchronous=off",
        "sqlite:///x.db?synchronous=extra",
        "sqlite:///x.db?synchronous=",
        "sqlite:///x.db?synchronous=0",
    ],
)
def test_bad_synchronous_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="synchronous"):
        parse_sqlite_url(url)


@pytest.mark.parametrize("value", ["soon", "", "1.5", "-1"])
def test_bad_busy_timeout_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="busy_timeout_ms"):
        parse_sqlite_url(f"sqlite:///x.db?busy_timeout_ms={value}")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?journal_mode=delete",
        "sqlite:///x.db?synchronous=full&cache=shared",
        "sqlite:///x.db?Synchronous=full",
        "sqlite://:memory:?mode=ro",
    ],
)
def test_unknown_parameter_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown sqlite URL parameter"):
        parse_sqlite_url(url)


@pytest.mark.parametrize(
    "url", ["sqlite://localhost/x.db", "sqlite://host:5432/x.db", "sqlite://relative.db"]
)
def test_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="host"):
        parse_sqlite_url(url)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///?synchronous=full"])
def test_no_file_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_sqlite_url(url)


@pytest.mark.parametrize("url", ["postgresql://h/db", "sqlite3:///x.db", "x.db", ""])
def test_other_schemes_are_not_sqlite_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_sqlite_url(url)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_sqlite_url("sqlite:///x.db?nope=1")


# -- open_store ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["mysql://user@host/db", "riak://host/bucket", "store.db", "/abs/store.db", ""]
)
async def test_open_store_refuses_an_unknown_scheme(url: str) -> None:
    with pytest.raises(ConfigurationError, match="no store for URL scheme"):
        await open_store(url)


async def test_open_store_does_not_show_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        await open_store("mysql://user:s3cret@host/db")
    assert "s3cret" not in str(info.value)
    assert "user:***@host" in str(info.value)


async def test_open_store_refuses_a_bad_sqlite_url_before_touching_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError):
        await open_store("sqlite:///x.db?synchronous=off")
    assert list(tmp_path.iterdir()) == []


async def test_open_store_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///relative.db")
    await store.aclose()
    assert (tmp_path / "relative.db").is_file()

    absolute = tmp_path / "sub" / "absolute.db"
    absolute.parent.mkdir()
    monkeypatch.chdir(absolute.parent.parent.parent)
    store = await open_store(f"sqlite:///{absolute}")
    await store.aclose()
    assert absolute.is_file()


# -- store_url and redact -------------------------------------------------------------------------


def test_store_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCERY_STORE", raising=False)
    assert store_url() == DEFAULT_STORE_URL
    monkeypatch.setenv("SOURCERY_STORE", "sqlite:///from-env.db")
    assert store_url() == "sqlite:///from-env.db"
    assert store_url("sqlite:///given.db") == "sqlite:///given.db"
    monkeypatch.setenv("SOURCERY_STORE", "")
    assert store_url() == DEFAULT_STORE_URL


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_driver_errors_read_in_plain_words() -> None:
    import aiormq

    from sourcery._io.driver_errors import amqp_refused_login, reason

    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    assert reason(refused) == "Connection refused"
    wrapped = aiormq.exceptions.AMQPConnectionError(refused)
    assert reason(wrapped) == "Connection refused"
    login = aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused")
    assert amqp_refused_login(login) and not amqp_refused_login(wrapped)
    assert "<" not in reason(login)
