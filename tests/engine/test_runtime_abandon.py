"""``Runtime.send(valid=...)``: a caller can withdraw a command until just before its write."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from test_bad_input import Bag, Put, bags  # its evolve changes the state in place

from sourcery import Abandoned, ActorRef, CommandError, Runtime
from sourcery.examples import bank
from sourcery.examples.bank import Deposit, Open

ACCOUNT = ActorRef("account", "a1")


def answers(*values: bool) -> tuple[Callable[[], bool], list[bool]]:
    """A ``valid`` that gives ``values`` in turn (the last one from then on), and a log of
    what it answered."""
    said: list[bool] = []

    def valid() -> bool:
        said.append(values[min(len(said), len(values) - 1)])
        return said[-1]

    return valid, said


def stored_events(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        (count,) = con.execute("SELECT count(*) FROM events").fetchone()
    finally:
        con.close()
    return int(count)


@pytest.mark.parametrize(
    ("said", "when"), [((False,), "before its turn"), ((True, False), "before its write")]
)
async def test_a_withdrawn_command_writes_nothing(
    tmp_path: Path, said: tuple[bool, ...], when: str
) -> None:
    path = tmp_path / "s.db"
    async with await Runtime.open(f"sqlite:///{path}", [bank.accounts]) as runtime:
        await runtime.send(ACCOUNT, Open("ann"), message_id="m1")
        valid, asked = answers(*said)
        with pytest.raises(Abandoned, match=when) as caught:
            await runtime.send(ACCOUNT, Deposit(5), message_id="m2", valid=valid)
        assert isinstance(caught.value, CommandError)
        assert asked == list(said)
        assert (await runtime.state(ACCOUNT)).balance == 0
        # Not recorded as processed: the same message id is applied when sent again.
        outcome = await runtime.send(ACCOUNT, Deposit(5), message_id="m2", valid=lambda: True)
        assert not outcome.duplicate
        assert (await runtime.state(ACCOUNT)).balance == 5
    assert stored_events(path) == 2
    async with await Runtime.open(f"sqlite:///{path}", [bank.accounts]) as runtime:
        assert (await runtime.state(ACCOUNT)).balance == 5


async def test_a_valid_command_is_asked_twice_and_applied(tmp_path: Path) -> None:
    async with await Runtime.open(f"sqlite:///{tmp_path / 's.db'}", [bank.accounts]) as runtime:
        valid, asked = answers(True)
        outcome = await runtime.send(ACCOUNT, Open("ann"), valid=valid)
        assert [e.type for e in outcome.events] == ["Opened"]
        assert asked == [True, True]


async def test_a_command_withdrawn_before_its_write_leaves_no_in_place_change(
    tmp_path: Path,
) -> None:
    async with await Runtime.open(f"sqlite:///{tmp_path / 's.db'}", [bags]) as runtime:
        await runtime.send(bags("b"), Put(1))
        valid, _ = answers(True, False)
        with pytest.raises(Abandoned, match="before its write"):
            await runtime.send(bags("b"), Put(2), valid=valid)
        # evolve appended 2 to the state in place before the withdrawal: the actor is
        # reloaded, so neither a read nor the next command sees it.
        assert await runtime.state(bags("b")) == Bag([1])
        outcome = await runtime.send(bags("b"), Put(3))
        assert outcome.state == Bag([1, 3])
