"""The runtime end to end on a real SQLite store: commands, errors, snapshots, isolation."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sourcery import (
    ActorRef,
    ActorType,
    ClosedError,
    ConfigurationError,
    EncodingError,
    HandlerError,
    InvalidActorRef,
    PayloadTooLarge,
    Runtime,
    StoreError,
    UnknownActorType,
    UnknownCommand,
    UnknownEventType,
    VectorClock,
)
from sourcery._core.history import fold
from sourcery._core.ids import IdGenerator
from sourcery._stores import open_store
from sourcery.examples import bank
from sourcery.examples.bank import (
    Account,
    Deposit,
    Deposited,
    InsufficientFunds,
    Open,
    Opened,
    Withdraw,
    Withdrew,
)

# -- helpers -------------------------------------------------------------------------------

TABLES = ("events", "snapshots", "packs", "heads", "actor_writers", "messages")


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every record the store holds (writer claims aside), in a comparable form."""
    con = sqlite3.connect(path)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    finally:
        con.close()


def count(path: Path, table: str = "events") -> int:
    con = sqlite3.connect(path)
    try:
        n: int = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return n
    finally:
        con.close()


# -- a counter that notices any interleaving -------------------------------------------------


class Tally(msgspec.Struct, frozen=True):
    count: int = 0


class Incr(msgspec.Struct, frozen=True):
    pass


class Counted(msgspec.Struct, frozen=True):
    value: int


def counter_decide(state: Tally, command: Incr) -> list[Counted]:
    return [Counted(state.count + 1)]


def counter_evolve(state: Tally, event: Counted) -> Tally:
    assert event.value == state.count + 1, f"event {event.value} applied at {state.count}"
    return Tally(event.value)


counters: ActorType[Tally, Incr, Counted] = ActorType(
    name="counter",
    initial=Tally(),
    decide=counter_decide,
    evolve=counter_evolve,
    commands=[Incr],
    events=[Counted],
)

# -- an actor type whose handlers misbehave on request ---------------------------------------


class Junk(msgspec.Struct, frozen=True):
    count: int = 0
    extra: Any = None


class Add(msgspec.Struct, frozen=True):
    n: int


class FailDecide(msgspec.Struct, frozen=True):
    pass


class FailEvolve(msgspec.Struct, frozen=True):
    pass


class ReturnNonEvent(msgspec.Struct, frozen=True):
    pass


class ReturnSingle(msgspec.Struct, frozen=True):
    pass


class ReturnString(msgspec.Struct, frozen=True):
    pass


class ReturnGenerator(msgspec.Struct, frozen=True):
    pass


class Unencodable(msgspec.Struct, frozen=True):
    pass


class Big(msgspec.Struct, frozen=True):
    size: int


class Poison(msgspec.Struct, frozen=True):
    pass


class Added(msgspec.Struct, frozen=True):
    n: int


class Exploded(msgspec.Struct, frozen=True):
    pass


class Blob(msgspec.Struct, frozen=True):
    value: Any


class Poisoned(msgspec.Struct, frozen=True):
    pass


class NotAnEvent(msgspec.Struct, frozen=True):
    pass


def junk_decide(state: Junk, command: Any) -> Any:
    match command:
        case Add(n):
            return [Added(n)]
        case FailDecide():
            raise ValueError("decide blew up")
        case FailEvolve():
            return [Added(1), Exploded()]
        case ReturnNonEvent():
            return [Added(1), NotAnEvent()]
        case ReturnSingle():
            return Added(1)
        case ReturnString():
            return "Added"
        case ReturnGenerator():
            return (e for e in [Added(1)])
        case Unencodable():
            return [Added(1), Blob(object())]
        case Big(size):
            return [Blob("x" * size)]
        case Poison():
            return [Poisoned()]
    raise AssertionError(command)  # pragma: no cover


def junk_evolve(state: Junk, event: Any) -> Junk:
    match event:
        case Added(n):
            return msgspec.structs.replace(state, count=state.count + n)
        case Exploded():
            raise RuntimeError("evolve blew up")
        case Blob():
            return state
        case Poisoned():
            return msgspec.structs.replace(state, extra=object())
    raise AssertionError(event)  # pragma: no cover


junk: ActorType[Junk, Any, Any] = ActorType(
    name="junk",
    initial=Junk(),
    decide=junk_decide,
    evolve=junk_evolve,
    commands=[
        Add,
        FailDecide,
        FailEvolve,
        ReturnNonEvent,
        ReturnSingle,
        ReturnString,
        ReturnGenerator,
        Unencodable,
        Big,
        Poison,
    ],
    events=[Added, Exploded, Blob, Poisoned],
)

# -- the bank, the happy path ------------------------------------------------------------------


async def test_bank_commands_events_state_and_clock(tmp_path: Path) -> None:
    ref = bank.accounts("alice")
    async with Runtime.open(url_of(tmp_path / "b.db"), [bank.accounts], writer="w1") as rt:
        opened = await rt.send(ref, Open("Alice"), message_id="open-1")
        assert [e.payload for e in opened.events] == [Opened("Alice")]
        event = opened.events[0]
        assert (event.actor, event.type, event.version) == (ref, "Opened", 1)
        assert rt.writer.startswith("w1.")
        w1 = rt.writer
        assert (event.initiated_by, event.dot) == ("open-1", (w1, 1))
        assert not opened.duplicate

        deposited = await rt.send(ref, Deposit(100))
        assert [e.payload for e in deposited.events] == [Deposited(100)]
        assert deposited.events[0].dot == (w1, 2)
        assert deposited.events[0].id > event.id
        assert deposited.state == Account("Alice", 100)

        withdrew = await rt.send(ref, Withdraw(30))
        assert [e.payload for e in withdrew.events] == [Withdrew(30)]
        assert withdrew.state == Account("Alice", 70)

        # Opening again with the same owner is a no-op: no events, nothing written.
        again = await rt.send(ref, Open("Alice"))
        assert again.events == ()
        assert again.state == Account("Alice", 70)

        assert await rt.state(ref) == Account("Alice", 70)
        assert await rt.clock(ref) == VectorClock({w1: 3})
        # Another actor is untouched.
        assert await rt.state(bank.accounts("bob")) == Account()
        assert await rt.clock(bank.accounts("bob")) == VectorClock()
    assert count(tmp_path / "b.db") == 3

    async with Runtime.open(url_of(tmp_path / "b.db"), [bank.accounts], writer="w2") as rt:
        assert await rt.state(ref) == Account("Alice", 70)
        assert await rt.clock(ref) == VectorClock({w1: 3})
        out = await rt.send(ref, Deposit(5))
        assert out.events[0].dot == (rt.writer, 1)
        assert await rt.clock(ref) == VectorClock({w1: 3, rt.writer: 1})

    async with Runtime.open(url_of(tmp_path / "b.db"), [bank.accounts]) as rt:
        assert await rt.state(ref) == Account("Alice", 75)


# -- invariant 6: bad input never corrupts ---------------------------------------------------


async def test_rejection_propagates_as_its_own_type_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    ref = bank.accounts("a")
    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        await rt.send(ref, Deposit(10))
        before, state, clock = dump(path), await rt.state(ref), await rt.clock(ref)
        with pytest.raises(InsufficientFunds) as info:
            await rt.send(ref, Withdraw(11), message_id="w-11")
        assert type(info.value) is InsufficientFunds
        assert dump(path) == before
        assert await rt.state(ref) == state
        assert await rt.clock(ref) == clock
        assert await rt.state(ref, refresh=True) == state
        # A rejected message id is not remembered: a later valid command may use it.
        out = await rt.send(ref, Withdraw(10), message_id="w-11")
        assert not out.duplicate
        assert out.state == Account(balance=0)


def expect_cause(kind: type[BaseException]) -> Callable[[BaseException], None]:
    def check(exc: BaseException) -> None:
        assert isinstance(exc.__cause__, kind), repr(exc.__cause__)

    return check


def no_check(exc: BaseException) -> None:
    pass


BAD_COMMANDS: list[tuple[str, object, type[Exception], Callable[[BaseException], None]]] = [
    ("unknown command", Deposit(1), UnknownCommand, no_check),
    ("unknown command (not a struct)", "Add", UnknownCommand, no_check),
    ("decide raises", FailDecide(), HandlerError, expect_cause(ValueError)),
    ("evolve raises", FailEvolve(), HandlerError, expect_cause(RuntimeError)),
    ("decide returns a non-event", ReturnNonEvent(), HandlerError, no_check),
    ("decide returns one event", ReturnSingle(), HandlerError, no_check),
    ("decide returns a string", ReturnString(), HandlerError, no_check),
    ("decide returns a generator", ReturnGenerator(), HandlerError, no_check),
    ("unencodable payload", Unencodable(), EncodingError, expect_cause(TypeError)),
    ("payload too large", Big(2000), PayloadTooLarge, no_check),
]


@pytest.mark.parametrize(
    ("command", "error", "check"),
    [case[1:] for case in BAD_COMMANDS],
    ids=[case[0] for case in BAD_COMMANDS],
)
async def test_bad_command_changes_nothing(
    tmp_path: Path, command: object, error: type[Exception], check: Callable[[BaseException], None]
) -> None:
    path = tmp_path / "bad.db"
    ref = junk("j")
    async with Runtime.open(url_of(path), [junk, bank.accounts], max_payload=1000) as rt:
        await rt.send(ref, Add(5), message_id="first")
        await rt.send(ref, Add(7))
        before, state, clock = dump(path), await rt.state(ref), await rt.clock(ref)
        assert state == Junk(12)

        with pytest.raises(error) as info:
            await rt.send(ref, command, message_id="bad")
        check(info.value)

        assert dump(path) == before
        assert await rt.state(ref) == state
        assert await rt.clock(ref) == clock
        assert await rt.state(ref, refresh=True) == state
        # The failed message id was not recorded and the actor goes on normally.
        out = await rt.send(ref, Add(1), message_id="bad")
        assert not out.duplicate
        assert out.state == Junk(13)
        assert [e.dot for e in out.events] == [(rt.writer, 3)]
    async with Runtime.open(url_of(path), [junk]) as rt:
        assert await rt.state(ref) == Junk(13)
    assert count(path) == 3


async def test_unknown_actor_type_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        await rt.send(bank.accounts("a"), Deposit(3))
        before = dump(path)
        with pytest.raises(UnknownActorType):
            await rt.send(ActorRef("nope", "a"), Deposit(1))
        with pytest.raises(UnknownActorType):
            await rt.send(junk("a"), Add(1))
        with pytest.raises(UnknownActorType):
            await rt.state(ActorRef("nope", "a"))
        with pytest.raises(UnknownActorType):
            await rt.clock(ActorRef("nope", "a"))
        assert dump(path) == before
        assert rt.actors_in_memory == 1
        out = await rt.send(bank.accounts("a"), Deposit(1))
        assert out.state == Account(balance=4)


async def test_unencodable_state_at_snapshot_time_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    kind = dataclasses.replace(junk, snapshot_every=3)
    ref = kind("p")
    async with Runtime.open(url_of(path), [kind]) as rt:
        await rt.send(ref, Add(1))
        await rt.send(ref, Add(1))
        before, clock = dump(path), await rt.clock(ref)
        with pytest.raises(EncodingError):
            await rt.send(ref, Poison())
        assert dump(path) == before
        assert count(path, "snapshots") == 0
        assert await rt.state(ref) == Junk(2)
        assert await rt.clock(ref) == clock
        out = await rt.send(ref, Add(1))
        assert out.state == Junk(3)
        assert count(path, "snapshots") == 1
        assert count(path, "events") == 3
    async with Runtime.open(url_of(path), [kind]) as rt:
        assert await rt.state(ref) == Junk(3)


# -- invalid actor refs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "actor_id",
    ["", "a\x00b", "x" * 256, "é" * 128, "\ud800"],
    ids=["empty", "nul", "too-long", "too-long-utf8", "surrogate"],
)
async def test_invalid_actor_ids_are_refused_before_anything_is_stored(
    tmp_path: Path, actor_id: str
) -> None:
    path = tmp_path / "i.db"
    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        await rt.send(bank.accounts("ok"), Deposit(1))
        before = dump(path)
        with pytest.raises(InvalidActorRef):
            await rt.send(bank.accounts(actor_id), Deposit(1))
        with pytest.raises(InvalidActorRef):
            await rt.send(ActorRef("account", actor_id), Deposit(1))
        assert dump(path) == before
        assert rt.actors_in_memory == 1


async def test_longest_valid_actor_id_works(tmp_path: Path) -> None:
    async with Runtime.open(url_of(tmp_path / "l.db"), [bank.accounts]) as rt:
        ref = bank.accounts("x" * 255)
        await rt.send(ref, Deposit(2))
        assert await rt.state(ref, refresh=True) == Account(balance=2)


@pytest.mark.parametrize("message_id", ["", "m\x00", "m" * 256])
async def test_invalid_message_ids_are_refused(tmp_path: Path, message_id: str) -> None:
    path = tmp_path / "m.db"
    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        ref = bank.accounts("a")
        await rt.send(ref, Deposit(1))
        before = dump(path)
        with pytest.raises(InvalidActorRef):
            await rt.send(ref, Deposit(1), message_id=message_id)
        assert dump(path) == before
        assert await rt.state(ref) == Account(balance=1)


# -- idempotent re-send ----------------------------------------------------------------------


async def test_resend_with_same_message_id_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    ref = bank.accounts("a")
    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        first = await rt.send(ref, Deposit(10), message_id="m1")
        assert not first.duplicate
        before = dump(path)
        second = await rt.send(ref, Deposit(10), message_id="m1")
        assert second.duplicate
        assert [e.id for e in second.events] == [e.id for e in first.events]
        assert [e.payload for e in second.events] == [Deposited(10)]
        assert dump(path) == before
        assert await rt.state(ref) == Account(balance=10)
        # The same message id on another actor is another message.
        other = await rt.send(bank.accounts("b"), Deposit(1), message_id="m1")
        assert not other.duplicate

    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        before = dump(path)
        third = await rt.send(ref, Deposit(10), message_id="m1")
        assert third.duplicate
        assert [e.id for e in third.events] == [e.id for e in first.events]
        assert [e.dot for e in third.events] == [e.dot for e in first.events]
        assert dump(path) == before
        assert await rt.state(ref) == Account(balance=10)
    assert count(path) == 2


async def test_concurrent_resends_write_once(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    ref = bank.accounts("a")
    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        outs = await asyncio.gather(
            *(rt.send(ref, Deposit(10), message_id="same") for _ in range(20))
        )
        assert sum(not o.duplicate for o in outs) == 1
        assert len({tuple(e.id for e in o.events) for o in outs}) == 1
        assert await rt.state(ref) == Account(balance=10)
    assert count(path) == 1


async def test_resends_across_many_actors_are_recognised_with_shared_lookups(
    tmp_path: Path,
) -> None:
    path = tmp_path / "many.db"
    refs = [bank.accounts(f"acct-{i}") for i in range(100)]
    async with Runtime.open(url_of(path), [bank.accounts]) as rt:
        sends = [(ref, f"m-{i}-{j}") for i, ref in enumerate(refs) for j in range(2)]
        firsts = await asyncio.gather(*(rt.send(r, Deposit(1), message_id=m) for r, m in sends))
        assert not any(o.duplicate for o in firsts)
        before = dump(path)
        queries = rt.store.stats.message_queries
        # A redelivery of each, and of each again at the same time: all recognised.
        again = await asyncio.gather(
            *(rt.send(r, Deposit(1), message_id=m) for r, m in sends + sends)
        )
        assert all(o.duplicate for o in again)
        assert [[e.id for e in o.events] for o in again] == [
            [e.id for e in o.events] for o in firsts + firsts
        ]
        # The duplicate checks of concurrent commands went out together.
        assert rt.store.stats.message_queries - queries < len(again) // 4
        assert dump(path) == before
        assert await rt.state(refs[7]) == Account(balance=2)
    assert count(path) == len(sends)


# -- snapshots -------------------------------------------------------------------------------


async def test_snapshots_packs_and_bounded_loading(tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    kind = dataclasses.replace(bank.accounts, snapshot_every=5)
    ref = kind("a")
    amounts = list(range(1, 13))
    async with Runtime.open(url_of(path), [kind], writer="w") as rt:
        for amount in amounts:
            await rt.send(ref, Deposit(amount))
        store = rt.store
        w = rt.writer
        snapshots = await store.snapshots(ref)
        assert [s.clock for s in snapshots] == [VectorClock({w: 5}), VectorClock({w: 10})]
        assert snapshots[0].parents == ()
        assert snapshots[1].parents == (snapshots[0].clock,)
        heads = await store.heads(ref)
        assert [h.clock for h in heads] == [VectorClock({w: 10})]
        for s, first in zip(snapshots, (1, 6), strict=True):
            pack = await store.pack(ref, s.clock)
            assert pack is not None
            assert [e.n for e in pack.events] == list(range(first, first + 5))
            assert all(e.actor == ref for e in pack.events)
            stored = msgspec.msgpack.decode(s.state, type=Account)
            assert stored == Account(balance=sum(range(1, first + 5)))
        loose = await store.loose_events(ref, VectorClock({w: 10}))
        assert [e.n for e in loose] == [11, 12]

    full_replay = fold(bank.evolve, bank.accounts.initial, [Deposited(a) for a in amounts])
    async with Runtime.open(url_of(path), [kind]) as rt:
        assert rt.store.stats.events_read == 0
        assert await rt.state(ref) == full_replay
        assert rt.store.stats.events_read == 2
        assert rt.store.stats.snapshots_read == 1
        assert await rt.clock(ref) == VectorClock({w: 12})
        # The next snapshot, by the new writer, has the old head as its parent.
        for amount in (13, 14, 15):
            await rt.send(ref, Deposit(amount))
        snapshots = await rt.store.snapshots(ref)
        assert len(snapshots) == 3
        assert snapshots[2].parents == (VectorClock({w: 10}),)
        assert snapshots[2].clock == VectorClock({w: 12, rt.writer: 3})
        pack = await rt.store.pack(ref, snapshots[2].clock)
        assert pack is not None
        assert [(e.writer, e.n) for e in pack.events] == [
            (w, 11),
            (w, 12),
            (rt.writer, 1),
            (rt.writer, 2),
            (rt.writer, 3),
        ]
    async with Runtime.open(url_of(path), [kind]) as rt:
        assert await rt.state(ref) == Account(balance=sum(range(1, 16)))
        assert rt.store.stats.events_read == 0


# -- isolation -------------------------------------------------------------------------------


async def test_one_actor_sees_one_message_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "iso.db"
    ref = counters("c")
    async with Runtime.open(url_of(path), [counters]) as rt:
        outs = await asyncio.gather(*(rt.send(ref, Incr()) for _ in range(200)))
        assert sorted(o.events[0].payload.value for o in outs) == list(range(1, 201))
        assert await rt.state(ref) == Tally(200)
    async with Runtime.open(url_of(path), [counters]) as rt:
        assert await rt.state(ref) == Tally(200)
    assert count(path) == 200


async def test_many_actors_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    refs = [counters(f"c{i}") for i in range(40)]
    async with Runtime.open(url_of(path), [counters]) as rt:
        await asyncio.gather(*(rt.send(ref, Incr()) for _ in range(25) for ref in refs))
        for ref in refs:
            assert await rt.state(ref) == Tally(25)
        # Concurrent commands share transactions.
        assert rt.store.stats.transactions < 1000
    async with Runtime.open(url_of(path), [counters]) as rt:
        states = await asyncio.gather(*(rt.state(ref) for ref in refs))
        assert states == [Tally(25)] * len(refs)


# -- passivation -----------------------------------------------------------------------------


async def test_passivation_bounds_actors_in_memory() -> None:
    async with Runtime.open("sqlite://:memory:", [bank.accounts], max_actors=50) as rt:
        for i in range(2000):
            await rt.send(bank.accounts(f"a{i}"), Deposit(i + 1))
            assert rt.actors_in_memory <= 50
        for i in range(0, 2000, 97):
            ref = bank.accounts(f"a{i}")
            assert await rt.state(ref) == Account(balance=i + 1)
            out = await rt.send(ref, Withdraw(1))
            assert out.state == Account(balance=i)
            assert await rt.clock(ref) == VectorClock({rt.writer: 2})
            assert rt.actors_in_memory <= 50
        assert rt.actors_in_memory == 50


async def test_passivation_with_concurrent_senders() -> None:
    async with Runtime.open("sqlite://:memory:", [counters], max_actors=10) as rt:
        refs = [counters(f"c{i}") for i in range(100)]
        for _ in range(3):
            await asyncio.gather(*(rt.send(ref, Incr()) for ref in refs))
        assert rt.actors_in_memory <= 10
        states = [await rt.state(ref) for ref in refs]
        assert states == [Tally(3)] * len(refs)


# -- closing ---------------------------------------------------------------------------------


async def test_closed_runtime_refuses_work() -> None:
    rt = await Runtime.open("sqlite://:memory:", [bank.accounts])
    ref = bank.accounts("a")
    await rt.send(ref, Deposit(1))
    await rt.aclose()
    await rt.aclose()
    with pytest.raises(ClosedError):
        await rt.send(ref, Deposit(1))
    with pytest.raises(ClosedError):
        await rt.state(ref)
    with pytest.raises(ClosedError):
        await rt.clock(ref)


async def test_close_waits_for_commands_under_way(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    rt = await Runtime.open(url_of(path), [counters])
    sends = [asyncio.ensure_future(rt.send(counters(f"c{i}"), Incr())) for i in range(20)]
    await asyncio.sleep(0)
    await rt.aclose()
    outs = await asyncio.gather(*sends, return_exceptions=True)
    done = [o for o in outs if not isinstance(o, BaseException)]
    assert all(isinstance(o, ClosedError) for o in outs if isinstance(o, BaseException))
    assert count(path) == len(done)


# -- upcasting and unknown event types -------------------------------------------------------


class Ledger(msgspec.Struct, frozen=True):
    cents: int = 0
    notes: tuple[str, ...] = ()


class Pay(msgspec.Struct, frozen=True):
    amount: int


class V1:
    class Renamed(msgspec.Struct, frozen=True):
        amount: int


class V2:
    class Renamed(msgspec.Struct, frozen=True):
        cents: int
        note: str


class Other(msgspec.Struct, frozen=True):
    pass


def v1_decide(state: Ledger, command: Pay) -> list[V1.Renamed]:
    return [V1.Renamed(command.amount)]


def v1_evolve(state: Ledger, event: V1.Renamed) -> Ledger:
    return Ledger(state.cents + 100 * event.amount, state.notes)


def v2_decide(state: Ledger, command: Pay) -> list[V2.Renamed]:
    return [V2.Renamed(command.amount * 100, "new")]


def v2_evolve(state: Ledger, event: V2.Renamed) -> Ledger:
    return Ledger(state.cents + event.cents, (*state.notes, event.note))


def upcast_v1(fields: dict[str, Any]) -> dict[str, Any]:
    return {"cents": fields["amount"] * 100, "note": f"was {fields['amount']}"}


ledger_v1: ActorType[Ledger, Pay, V1.Renamed] = ActorType(
    name="ledger", initial=Ledger(), decide=v1_decide, evolve=v1_evolve,
    commands=[Pay], events=[V1.Renamed],
)  # fmt: skip
ledger_v2: ActorType[Ledger, Pay, V2.Renamed] = ActorType(
    name="ledger", initial=Ledger(), decide=v2_decide, evolve=v2_evolve,
    commands=[Pay], events=[V2.Renamed], upcasters={"Renamed": [upcast_v1]},
)  # fmt: skip
ledger_other: ActorType[Ledger, Pay, Other] = ActorType(
    name="ledger", initial=Ledger(), decide=lambda s, c: [Other()], evolve=lambda s, e: s,
    commands=[Pay], events=[Other],
)  # fmt: skip


async def test_upcasting_old_events(tmp_path: Path) -> None:
    path = tmp_path / "up.db"
    ref = ledger_v1("l")
    async with Runtime.open(url_of(path), [ledger_v1]) as rt:
        for amount in (1, 2, 3):
            out = await rt.send(ref, Pay(amount))
            assert out.events[0].version == 1
        assert await rt.state(ref) == Ledger(600)

    async with Runtime.open(url_of(path), [ledger_v2]) as rt:
        assert await rt.state(ref) == Ledger(600, ("was 1", "was 2", "was 3"))
        out = await rt.send(ref, Pay(4))
        assert (out.events[0].type, out.events[0].version) == ("Renamed", 2)
        assert out.state == Ledger(1000, ("was 1", "was 2", "was 3", "new"))
        # A duplicate re-send decodes the stored v1 event through the upcaster too.
        con = sqlite3.connect(path)
        versions = [row[0] for row in con.execute("SELECT version FROM events ORDER BY seq")]
        con.close()
        assert versions == [1, 1, 1, 2]

    async with Runtime.open(url_of(path), [ledger_v2]) as rt:
        assert await rt.state(ref) == Ledger(1000, ("was 1", "was 2", "was 3", "new"))


async def test_upcast_duplicate_outcome(tmp_path: Path) -> None:
    path = tmp_path / "upd.db"
    ref = ledger_v1("l")
    async with Runtime.open(url_of(path), [ledger_v1]) as rt:
        await rt.send(ref, Pay(7), message_id="p")
    async with Runtime.open(url_of(path), [ledger_v2]) as rt:
        out = await rt.send(ledger_v2("l"), Pay(7), message_id="p")
        assert out.duplicate
        assert [e.payload for e in out.events] == [V2.Renamed(700, "was 7")]


async def test_unknown_stored_event_type_fails_loudly_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "unk.db"
    ref = ledger_v1("l")
    async with Runtime.open(url_of(path), [ledger_v1]) as rt:
        await rt.send(ref, Pay(1))
    before = dump(path)
    async with Runtime.open(url_of(path), [ledger_other]) as rt:
        with pytest.raises(UnknownEventType):
            await rt.state(ref)
        with pytest.raises(UnknownEventType):
            await rt.send(ref, Pay(2))
        with pytest.raises(UnknownEventType):
            await rt.clock(ref)
    assert dump(path) == before
    async with Runtime.open(url_of(path), [ledger_v1]) as rt:
        assert await rt.state(ref) == Ledger(100)


# -- cancellation ----------------------------------------------------------------------------


@pytest.mark.parametrize("spins", [0, 1, 2, 3, 5, 8])
async def test_cancelled_send_leaves_a_consistent_actor(tmp_path: Path, spins: int) -> None:
    path = tmp_path / "cancel.db"
    ref = counters("c")
    async with Runtime.open(url_of(path), [counters]) as rt:
        await rt.send(ref, Incr())
        task = asyncio.ensure_future(rt.send(ref, Incr()))
        for _ in range(spins):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Whether or not the cancelled command was written, the actor goes on from the truth.
        out = await rt.send(ref, Incr())
        stored = count(path)
        assert out.state == Tally(stored)
        assert await rt.state(ref, refresh=True) == Tally(stored)
    async with Runtime.open(url_of(path), [counters]) as rt:
        assert await rt.state(ref) == Tally(count(path))


# -- writers whose clocks disagree -----------------------------------------------------------


def skew(rt: Runtime, ms: int) -> None:
    """Make ``rt`` stamp its events ``ms`` milliseconds off the wall clock."""
    rt._ids = IdGenerator(clock=lambda: time.time_ns() // 1_000_000 + ms)


async def test_events_sorting_before_the_loaded_ones_are_replayed_in_order(
    tmp_path: Path,
) -> None:
    # A writer whose clock runs ahead; the next one's events sort before the ones it saw.
    path = tmp_path / "skew.db"
    kind = dataclasses.replace(bank.accounts, snapshot_every=4)
    ref = kind("a")
    async with Runtime.open(url_of(path), [kind]) as rt:
        skew(rt, 60_000)
        await rt.send(ref, Deposit(10))
        await rt.send(ref, Deposit(20))
    async with Runtime.open(url_of(path), [kind]) as rt:
        assert await rt.state(ref) == Account(balance=30)
        out = await rt.send(ref, Withdraw(25))
        assert out.state == Account(balance=5)
        assert await rt.state(ref, refresh=True) == Account(balance=5)
        out = await rt.send(ref, Withdraw(5))  # the fourth event: a snapshot
        assert out.state == Account(balance=0)
        assert len(await rt.store.snapshots(ref)) == 1
    async with Runtime.open(url_of(path), [kind]) as rt:
        assert await rt.state(ref) == Account(balance=0)


async def test_replay_order_follows_causality_across_writers(tmp_path: Path) -> None:
    """A writer whose clock lags still stamps its events after those its decide saw."""
    path = tmp_path / "causal.db"
    ref = counters("c")
    async with Runtime.open(url_of(path), [counters]) as rt:
        skew(rt, 60_000)
        await rt.send(ref, Incr())
        await rt.send(ref, Incr())
    async with Runtime.open(url_of(path), [counters]) as rt:
        # decide sees count 2 and says 3; replayed before 1 and 2, evolve refuses it.
        earlier = await rt.store.loose_events(ref, VectorClock())
        out = await rt.send(ref, Incr())
        assert out.state == Tally(3)
        assert out.events[0].timestamp > max(e.timestamp for e in earlier)
    async with Runtime.open(url_of(path), [counters]) as rt:
        assert await rt.state(ref) == Tally(3)


# -- opening ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"max_actors": 0}, {"max_payload": 0}, {"writer": "w\x00"}, {"writer": "w" * 256}],
    ids=["max_actors", "max_payload", "nul-writer", "long-writer"],
)
async def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises((ConfigurationError, InvalidActorRef)):
        await Runtime.open(url_of(tmp_path / "o.db"), [bank.accounts], **options)


async def test_an_actor_type_given_twice_is_refused(tmp_path: Path) -> None:
    twice = [bank.accounts, dataclasses.replace(bank.accounts, snapshot_every=3)]
    with pytest.raises(ConfigurationError, match="given twice"):
        await Runtime.open(url_of(tmp_path / "o.db"), twice)


async def test_a_writer_id_is_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with Runtime.open(url_of(path), [bank.accounts], writer="solo") as rt:
        await rt.send(bank.accounts("a"), Deposit(1))
        first = rt.writer
    # The same name again is a new writer: its dots can never collide with the old ones.
    async with Runtime.open(url_of(path), [bank.accounts], writer="solo") as rt:
        assert rt.writer != first and rt.writer.startswith("solo.")
        out = await rt.send(bank.accounts("a"), Deposit(1))
        assert out.events[0].dot == (rt.writer, 1)
    # A store refuses an id that was claimed on it before.
    store = await open_store(url_of(path))
    try:
        before = dump(path)
        with pytest.raises(StoreError, match="solo"):
            await store.register_writer(first)
        assert dump(path) == before
    finally:
        await store.aclose()


async def test_an_actor_ref_is_required() -> None:
    async with Runtime.open("sqlite://:memory:", [bank.accounts]) as rt:
        with pytest.raises(TypeError):
            await rt.send("account/a", Deposit(1))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await rt.state(("account", "a"))  # type: ignore[arg-type]


def refuse_added(state: Junk, event: Any) -> Junk:
    if isinstance(event, Added):
        raise ZeroDivisionError("no longer")
    return junk_evolve(state, event)


async def test_evolve_failing_on_stored_events_is_a_handler_error(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    ref = junk("j")
    async with Runtime.open(url_of(path), [junk]) as rt:
        await rt.send(ref, Add(1))
    before = dump(path)
    changed = dataclasses.replace(junk, evolve=refuse_added)
    async with Runtime.open(url_of(path), [changed]) as rt:
        with pytest.raises(HandlerError) as info:
            await rt.state(ref)
        assert isinstance(info.value.__cause__, ZeroDivisionError)
        with pytest.raises(HandlerError):
            await rt.send(ref, Add(1))
    assert dump(path) == before
