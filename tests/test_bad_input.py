"""Bad input from outside and careless user code: typed errors, nothing stored changes."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import msgspec
import pytest

from sourcery import (
    ActorType,
    ConfigurationError,
    DecodingError,
    HandlerError,
    Runtime,
    StoreError,
)
from sourcery._stores import open_store
from sourcery.examples import bank


class Put(msgspec.Struct, frozen=True):
    item: int


class Added(msgspec.Struct, frozen=True):
    item: int


class Bag(msgspec.Struct):
    """Mutable on purpose: the evolve below changes it in place, then fails."""

    items: list[int] = msgspec.field(default_factory=list)


def decide(state: Bag, command: Put) -> list[Added]:
    return [Added(command.item), Added(-1)] if command.item == 13 else [Added(command.item)]


def careless_evolve(state: Bag, event: Added) -> Bag:
    state.items.append(event.item)  # in place: exactly what evolve must not do
    if event.item < 0:
        raise ValueError("negative")
    return state


bags = ActorType(
    name="bag",
    initial=Bag(),
    decide=decide,
    evolve=careless_evolve,
    commands=[Put],
    events=[Added],
)


async def test_an_evolve_that_mutates_then_fails_corrupts_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bag.db'}"
    async with Runtime.open(url, [bags]) as rt:
        await rt.send(bags("a"), Put(1))
        with pytest.raises(HandlerError):
            await rt.send(bags("a"), Put(13))
        # The failed command's in-place changes are gone: the state is rebuilt from the store.
        assert await rt.state(bags("a")) == Bag([1])
        # Nor did they leak into the initial state that every other actor starts from.
        assert await rt.state(bags("b")) == Bag([])
        assert bags.initial == Bag([])
        await rt.send(bags("a"), Put(2))
    async with Runtime.open(url, [bags]) as rt:
        assert await rt.state(bags("a")) == Bag([1, 2])


async def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (name TEXT)")
    con.execute("INSERT INTO users VALUES ('ann')")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a sourcery store"):
        await open_store(f"sqlite:///{path}")
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()


@pytest.mark.parametrize(
    ("column", "value"),
    [("payload", "'hello'"), ("timestamp", "'yesterday'"), ("n", "'one'")],
)
async def test_a_damaged_event_row_is_a_decoding_error(
    tmp_path: Path, column: str, value: str
) -> None:
    path = tmp_path / "damaged.db"
    url = f"sqlite:///{path}"
    ref = bank.accounts("a")
    async with Runtime.open(url, [bank.accounts]) as rt:
        await rt.send(ref, bank.Deposit(5))
        await rt.send(ref, bank.Deposit(6))
    con = sqlite3.connect(path)
    con.execute(f"UPDATE events SET {column} = {value} WHERE n = 2")
    con.commit()
    rows = con.execute("SELECT * FROM events ORDER BY seq").fetchall()
    con.close()
    async with Runtime.open(url, [bank.accounts]) as rt:
        with pytest.raises(DecodingError):
            await rt.state(ref)
    con = sqlite3.connect(path)
    assert con.execute("SELECT * FROM events ORDER BY seq").fetchall() == rows
    con.close()


class Priced(msgspec.Struct, frozen=True):
    cents: int


async def test_an_upcaster_that_raises_is_a_decoding_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'up.db'}"
    old = dataclasses.replace(
        bank.accounts, events=[bank.Opened, bank.Deposited, bank.Withdrew, bank.Overdrawn]
    )
    async with Runtime.open(url, [old]) as rt:
        await rt.send(bank.accounts("a"), bank.Deposit(5))

    def broken(fields: dict[str, object]) -> dict[str, object]:
        return {"amount": fields["no-such-field"]}

    new = dataclasses.replace(bank.accounts, upcasters={"Deposited": [broken]})
    async with Runtime.open(url, [new]) as rt:
        with pytest.raises(DecodingError, match="upcaster"):
            await rt.state(bank.accounts("a"))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?synchronous=full&synchronous=normal",
        "postgresql://u@127.0.0.1/db?schema=a&schema=b",
        "redis://127.0.0.1:6379/0?ttl=1&ttl=2",
    ],
)
async def test_a_url_parameter_given_twice_is_refused(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sourcery._caches import open_cache

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="more than once"):
        if url.startswith("redis"):
            await open_cache(url)
        else:
            await open_store(url)
    assert not (tmp_path / "x.db").exists()
