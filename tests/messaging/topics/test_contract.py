"""The contract of every event bus (``sourcery._messaging.topics.base.EventBus``), run against each
implementation in ``conftest.BUSES``: the same patterns route the same events, named
queues keep what nobody listened to, unacknowledged deliveries come back."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from sourcery._core.errors import ClosedError, ConfigurationError
from sourcery._core.ids import id_to_bytes, new_id
from sourcery._core.records import Cursor, EventRecord
from sourcery._messaging.topics import Delivery, EventBus, Subscription, matches, open_bus

_seq = itertools.count(1)


def record(
    actor_type: str, event_type: str, *, actor_id: str = "a-1", payload: bytes = b"p"
) -> EventRecord:
    return EventRecord(
        actor_type=actor_type,
        actor_id=actor_id,
        writer="w1",
        n=next(_seq),
        id=id_to_bytes(new_id()),
        timestamp=1_700_000_000_000,
        initiated_by="m-1",
        type=event_type,
        version=1,
        payload=payload,
    )


def at(*records: EventRecord, base: int = 0) -> list[tuple[Cursor, EventRecord]]:
    """Records with increasing positions (128-bit ones, as PostgreSQL makes)."""
    return [(Cursor((base + i + 1) << 64 | 7, r.id), r) for i, r in enumerate(records)]


END = "marker.End"


async def until_end(sub: Subscription, timeout: float = 10.0) -> list[Delivery]:
    """Every delivery before the next ``marker.End`` one (the subscription must bind it)."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        async for d in sub:
            if d.routing_key == END:
                return got
            got.append(d)
    raise AssertionError("the subscription ended")


async def publish_with_end(bus: EventBus, events: Sequence[tuple[Cursor, EventRecord]]) -> None:
    await bus.publish(list(events))
    await bus.publish(at(record("marker", "End"), base=10_000))


KEYS = [
    ("account", "Deposited"),
    ("account", "Withdrawn"),
    ("order", "Placed"),
    ("shop.order", "Placed"),
    ("a.b.c", "D"),
]
PATTERNS = [
    "account.*",
    "*.Placed",
    "#",
    "#.Placed",
    "shop.#",
    "account.Deposited",
    "*.*",
    "*.*.*",
    "a.#.D",
    "a.b.c.D.#",
    "#.b.#",
    "nothing.here",
]


@pytest.mark.parametrize("pattern", PATTERNS)
async def test_a_subscription_gets_exactly_the_matching_events_in_order(
    bus: EventBus, pattern: str
) -> None:
    events = at(*(record(t, e) for t, e in KEYS * 2))
    async with bus.subscribe([pattern, END]) as sub:
        await publish_with_end(bus, events)
        got = await until_end(sub)
    expected = [(p, r) for p, r in events if matches(pattern, f"{r.actor_type}.{r.type}")]
    assert [(d.position, d.record) for d in got] == expected
    assert all(d.routing_key == f"{d.record.actor_type}.{d.record.type}" for d in got)


async def test_several_patterns_deliver_an_event_once(bus: EventBus) -> None:
    events = at(record("account", "Deposited"), record("order", "Placed"))
    async with bus.subscribe(["account.*", "#", "*.Deposited", END]) as sub:
        await publish_with_end(bus, events)
        got = await until_end(sub)
    assert [d.record for d in got] == [r for _, r in events]


async def test_every_subscription_gets_its_own_copy(bus: EventBus) -> None:
    events = at(*(record("account", "Deposited") for _ in range(5)))
    async with bus.subscribe(["account.*", END]) as one, bus.subscribe(["#"]) as two:
        await publish_with_end(bus, events)
        first = await until_end(one)
        second = await until_end(two)
    assert [d.record for d in first] == [d.record for d in second] == [r for _, r in events]


async def test_delivery_exposes_the_envelope_exactly(bus: EventBus) -> None:
    hostile = record(
        "k\u00e9y-\U0001f600",
        "Ev\u00e9nt",
        actor_id="id/with.dots\u2028",
        payload=bytes(range(256)),
    )
    events = at(hostile, base=2**63 - 1)
    async with bus.subscribe(["#"]) as sub:
        await publish_with_end(bus, events)
        got = await until_end(sub)
    (d,) = got
    assert d.position == events[0][0] and d.position.seq > 2**64
    assert d.record == hostile
    assert (d.actor.type, d.actor.id, d.type, d.version, d.payload, d.timestamp) == (
        hostile.actor_type,
        hostile.actor_id,
        hostile.type,
        1,
        bytes(range(256)),
        hostile.timestamp,
    )
    assert d.id.to_bytes(16, "big") == hostile.id
    assert d.initiated_by == "m-1" and d.dot == ("w1", hostile.n)


async def test_an_anonymous_subscription_sees_only_what_comes_while_it_is_bound(
    bus: EventBus,
) -> None:
    before = at(record("account", "Deposited"))
    await bus.publish(before)
    async with bus.subscribe(["#"]) as sub:
        after = at(record("account", "Withdrawn"), base=1)
        await publish_with_end(bus, after)
        got = await until_end(sub)
    assert [d.record for d in got] == [after[0][1]]


async def test_a_named_queue_keeps_what_is_published_while_nobody_listens(bus_url: str) -> None:
    async with await open_bus(bus_url) as bus:
        async with bus.subscribe(["account.*"], queue="audit"):
            pass  # declares and binds the queue
        missed = at(*(record("account", "Deposited") for _ in range(3)))
        await bus.publish(missed)
        await bus.publish(at(record("order", "Placed"), base=5))
    # Another connection (another process, as far as the broker knows) gets them.
    async with (
        await open_bus(bus_url) as bus,
        bus.subscribe(["account.*", END], queue="audit") as sub,
    ):
        await publish_with_end(bus, [])
        got = await until_end(sub)
    assert [d.record for d in got] == [r for _, r in missed]


async def test_an_unacknowledged_delivery_comes_back_to_the_named_queue(bus: EventBus) -> None:
    events = at(*(record("account", "Deposited") for _ in range(3)))
    async with bus.subscribe(["#"], queue="work") as sub:
        await bus.publish(events)
        first = await anext(sub)
        second = await anext(sub)  # acknowledges the first
    assert [first.record, second.record] == [r for _, r in events[:2]]
    async with bus.subscribe(["#"], queue="work") as sub:
        again = [await anext(sub), await anext(sub)]
    assert [d.record for d in again] == [r for _, r in events[1:]]


async def test_subscriptions_sharing_a_queue_share_its_deliveries(bus: EventBus) -> None:
    events = at(*(record("account", "Deposited") for _ in range(20)))
    seen: list[Delivery] = []

    async def consume(sub: Subscription) -> None:
        async for d in sub:
            seen.append(d)
            if len(seen) == len(events):
                return

    async with (
        bus.subscribe(["#"], queue="shared") as one,
        bus.subscribe(["#"], queue="shared") as two,
    ):
        await bus.publish(events)
        async with asyncio.timeout(10):
            tasks = [asyncio.create_task(consume(s)) for s in (one, two)]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
    assert sorted(d.position.seq for d in seen) == [p.seq for p, _ in events]


@pytest.mark.parametrize(
    "patterns",
    [[""], ["a..b"], ["a*"], ["#b"], ["a.*b"], [], "account.*", [3], ["x" * 256]],
)
async def test_invalid_patterns_are_refused_before_anything_is_bound(
    bus: EventBus, patterns: object
) -> None:
    with pytest.raises(ConfigurationError):
        bus.subscribe(patterns)  # type: ignore[arg-type]


async def test_a_closed_bus_refuses_work_and_ends_its_subscriptions(bus_url: str) -> None:
    bus = await open_bus(bus_url)
    async with bus.subscribe(["#"]) as sub:
        waiting = asyncio.create_task(anext(sub))
        await asyncio.sleep(0.05)
        await bus.aclose()
        with pytest.raises(ClosedError):
            await asyncio.wait_for(waiting, 5)
    with pytest.raises(ClosedError):
        await bus.publish(at(record("account", "Deposited")))
    await bus.aclose()  # idempotent


@pytest.mark.parametrize("name", ["", "a b", "caf\u00e9", "x" * 201, "a/b"])
async def test_queue_names_the_broker_cannot_take_are_refused(bus: EventBus, name: str) -> None:
    with pytest.raises(ConfigurationError):
        bus.subscribe(["#"], queue=name)
