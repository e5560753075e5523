"""For any command history: live state == reloaded state == a plain fold of the stored events.

The actor is the bank account plus a journal of every amount applied, in order, so that a
state reached by applying the right events in the wrong order does not compare equal.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sourcery import ActorType, Rejected, Runtime
from sourcery._core.codec import Codec
from sourcery._core.history import fold
from sourcery.examples import bank
from sourcery.examples.bank import Account, BankEvent, Command, Deposit, Deposited, Withdraw

ACTORS = 4

Step = tuple[int, Deposit | Withdraw]
"""A command for actor k."""


class Journal(msgspec.Struct, frozen=True):
    account: Account = msgspec.field(default_factory=Account)
    log: tuple[int, ...] = ()


def journal_decide(state: Journal, command: Command) -> list[BankEvent]:
    return bank.decide(state.account, command)


def journal_evolve(state: Journal, event: BankEvent) -> Journal:
    signed = event.amount if isinstance(event, Deposited) else -getattr(event, "amount", 0)
    return Journal(bank.evolve(state.account, event), (*state.log, signed))


def journals(snapshot_every: int) -> ActorType[Journal, Command, BankEvent]:
    return ActorType(
        name="journal",
        initial=Journal(),
        decide=journal_decide,
        evolve=journal_evolve,
        commands=bank.accounts.commands,
        events=bank.accounts.events,
        snapshot_every=snapshot_every,
    )


steps = st.tuples(
    st.integers(min_value=0, max_value=ACTORS - 1),
    st.builds(Deposit, st.integers(min_value=-2, max_value=60))
    | st.builds(Withdraw, st.integers(min_value=-2, max_value=80)),
)


def model(history: list[Step]) -> tuple[list[Journal], list[bool]]:
    """Each actor's state and, per command, whether the bank accepts it."""
    states = [Journal() for _ in range(ACTORS)]
    accepted = []
    for k, command in history:
        balance = states[k].account.balance
        ok = command.amount > 0 and (isinstance(command, Deposit) or command.amount <= balance)
        if ok:
            signed = command.amount if isinstance(command, Deposit) else -command.amount
            states[k] = Journal(Account(balance=balance + signed), (*states[k].log, signed))
        accepted.append(ok)
    return states, accepted


def folded_from_store(path: Path) -> tuple[list[Journal], Counter[str]]:
    """Every actor's state as a pure fold over its stored events in (timestamp, id) order,
    and how many events each message id stored."""
    codec = Codec(journals(100))
    con = sqlite3.connect(path)
    try:
        states = []
        per_message: Counter[str] = Counter()
        for k in range(ACTORS):
            rows = con.execute(
                "SELECT type, version, payload, initiated_by FROM events"
                " WHERE actor_type = 'journal' AND actor_id = ? ORDER BY timestamp, id",
                (f"j{k}",),
            ).fetchall()
            per_message.update(row[3] for row in rows)
            payloads = [codec.decode_payload(t, v, p) for t, v, p, _ in rows]
            states.append(fold(journal_evolve, Journal(), payloads))
    finally:
        con.close()
    return states, per_message


async def run(
    url: str, history: list[Step], snapshot_every: int
) -> tuple[list[Journal], list[Journal], list[bool]]:
    kind = journals(snapshot_every)
    refs = [kind(f"j{k}") for k in range(ACTORS)]
    accepted = []
    async with Runtime.open(url, [kind]) as rt:
        for i, (k, command) in enumerate(history):
            try:
                await rt.send(refs[k], command, message_id=f"m{i}")
            except Rejected:
                accepted.append(False)
            else:
                accepted.append(True)
        live = [await rt.state(ref) for ref in refs]
    async with Runtime.open(url, [kind]) as rt:
        reloaded = [await rt.state(ref) for ref in refs]
    return live, reloaded, accepted


@settings(max_examples=30)
@given(
    history=st.lists(steps, max_size=40),
    snapshot_every=st.integers(min_value=1, max_value=7),
)
def test_live_reloaded_and_folded_states_agree(history: list[Step], snapshot_every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.db"
        live, reloaded, accepted = asyncio.run(run(f"sqlite:///{path}", history, snapshot_every))
        folded, per_message = folded_from_store(path)

    expected, expected_accepted = model(history)
    assert accepted == expected_accepted
    assert live == expected
    assert reloaded == expected
    assert folded == expected
    # Each accepted command stored exactly its one event; a rejected one stored nothing.
    assert per_message == Counter(f"m{i}" for i, ok in enumerate(accepted) if ok)


async def run_in_sessions(
    url: str, sessions: list[list[Step]], snapshot_every: int
) -> tuple[list[Journal], list[bool]]:
    """Each session is one runtime (a new writer) whose actors run their commands
    concurrently, with room for only two actors in memory."""
    kind = journals(snapshot_every)
    refs = [kind(f"j{k}") for k in range(ACTORS)]
    accepted: dict[int, bool] = {}
    number = 0
    for session in sessions:
        per_actor: dict[int, list[tuple[int, Deposit | Withdraw]]] = {}
        for k, command in session:
            per_actor.setdefault(k, []).append((number, command))
            number += 1
        async with Runtime.open(url, [kind], max_actors=2) as rt:

            async def drive(k: int, todo: list[tuple[int, Deposit | Withdraw]]) -> None:
                for i, command in todo:
                    try:
                        await rt.send(refs[k], command, message_id=f"m{i}")
                    except Rejected:
                        accepted[i] = False
                    else:
                        accepted[i] = True

            await asyncio.gather(*(drive(k, todo) for k, todo in per_actor.items()))
        # Event ids order events by millisecond first: let the next writer start in a later
        # one, so that replay order is the order the commands were sent in.
        await asyncio.sleep(0.002)
    async with Runtime.open(url, [kind]) as rt:
        reloaded = [await rt.state(ref) for ref in refs]
    return reloaded, [accepted[i] for i in range(number)]


@settings(max_examples=30)
@given(
    sessions=st.lists(st.lists(steps, max_size=15), min_size=1, max_size=4),
    snapshot_every=st.integers(min_value=1, max_value=7),
)
def test_many_writers_concurrent_actors_and_passivation_agree(
    sessions: list[list[Step]], snapshot_every: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.db"
        reloaded, accepted = asyncio.run(
            run_in_sessions(f"sqlite:///{path}", sessions, snapshot_every)
        )
        folded, per_message = folded_from_store(path)

    expected, expected_accepted = model([step for session in sessions for step in session])
    assert accepted == expected_accepted
    assert reloaded == expected
    assert folded == expected
    assert per_message == Counter(f"m{i}" for i, ok in enumerate(accepted) if ok)
