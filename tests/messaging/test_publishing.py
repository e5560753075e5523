"""The store-driven publisher: every committed event reaches the bus, at least once, in store
order, and the checkpoint moves only after the bus confirmed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from services import amqp_down, amqp_url

from sourcery import Runtime
from sourcery._core.errors import BrokerError
from sourcery._core.records import Cursor, EventRecord
from sourcery._messaging.publishing import Publisher
from sourcery._messaging.topics import Delivery, MemoryBus, Subscription, open_bus
from sourcery._stores import open_store
from sourcery.examples.bank import Deposit, Open, accounts


async def take(sub: Subscription, n: int, timeout: float = 10.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.append(await anext(sub))
    return got


async def test_published_events_match_the_store_order_and_the_checkpoint_follows(
    tmp_path: Path,
) -> None:
    bus = MemoryBus(uuid.uuid4().hex)
    async with Runtime.open(f"sqlite:///{tmp_path / 's.db'}", [accounts]) as rt:
        async with bus.subscribe(["account.*"]) as sub:
            for i in range(5):
                await rt.send(accounts(f"a{i}"), Open(owner="o"))
                await rt.send(accounts(f"a{i}"), Deposit(amount=i + 1))
            publisher = Publisher(rt.store, bus, batch=3)
            assert await publisher.publish_pending() == 10
            assert await publisher.publish_pending() == 0
            got = await take(sub, 10)
        stored = await rt.store.read_events(Cursor(), 100)
        assert [(d.position, d.record) for d in got] == stored
        assert (await rt.store.checkpoint(publisher.source)).events == stored[-1][0]
        assert publisher.source == f"publish:{bus.name}"


class FailingBus(MemoryBus):
    """A bus that refuses every publish after the first ``allowed`` ones."""

    def __init__(self, allowed: int) -> None:
        super().__init__(uuid.uuid4().hex)
        self.allowed = allowed

    async def publish(self, events: Sequence[tuple[Cursor, EventRecord]]) -> None:
        if self.allowed <= 0:
            raise BrokerError("refused")
        self.allowed -= 1
        await super().publish(events)


async def test_a_refused_publish_leaves_the_checkpoint_where_it_was(tmp_path: Path) -> None:
    async with Runtime.open(f"sqlite:///{tmp_path / 's.db'}", [accounts]) as rt:
        for i in range(4):
            await rt.send(accounts(f"a{i}"), Open(owner="o"))
        bus = FailingBus(allowed=1)
        publisher = Publisher(rt.store, bus, batch=2)
        with pytest.raises(BrokerError):
            await publisher.publish_pending()
        stored = await rt.store.read_events(Cursor(), 100)
        assert (await rt.store.checkpoint(publisher.source)).events == stored[1][0]
        # A new publisher on the same bus name resumes there, and the rest goes out.
        again = Publisher(rt.store, bus)
        bus.allowed = 10
        async with bus.subscribe(["#"]) as sub:
            assert await again.publish_pending() == 2
            assert [d.record for d in await take(sub, 2)] == [r for _, r in stored[2:]]


async def test_running_publishes_what_is_committed_while_it_runs_and_retries(
    tmp_path: Path,
) -> None:
    bus = FailingBus(allowed=0)
    async with Runtime.open(f"sqlite:///{tmp_path / 's.db'}", [accounts]) as rt:
        async with bus.subscribe(["account.Opened"]) as sub:
            async with Publisher.running(rt.store, bus, interval=0.01) as publisher:
                for i in range(3):
                    await rt.send(accounts(f"a{i}"), Open(owner="o"))
                    publisher.wake()
                async with asyncio.timeout(5):
                    while publisher.failures < 2:
                        await asyncio.sleep(0.01)
                bus.allowed = 100
                got = await take(sub, 3)
            assert publisher.failures == 0
        assert [d.actor.id for d in got] == ["a0", "a1", "a2"]


class GlitchyBus(MemoryBus):
    """A bus whose first publish raises an error nobody expected (a bug, not an outage)."""

    def __init__(self) -> None:
        super().__init__(uuid.uuid4().hex)
        self.glitches = 1

    async def publish(self, events: Sequence[tuple[Cursor, EventRecord]]) -> None:
        if self.glitches:
            self.glitches -= 1
            raise RuntimeError("a bug in the bus")
        await super().publish(events)


async def test_an_unexpected_error_is_logged_and_publishing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = GlitchyBus()
    async with (
        Runtime.open(f"sqlite:///{tmp_path / 's.db'}", [accounts]) as rt,
        bus.subscribe(["account.Opened"]) as sub,
    ):
        async with Publisher.running(rt.store, bus, interval=0.01) as publisher:
            await rt.send(accounts("a0"), Open(owner="o"))
            publisher.wake()
            got = await take(sub, 1)
            await rt.send(accounts("a1"), Open(owner="o"))
            publisher.wake()
            got += await take(sub, 1)
        assert publisher.failures == 0
    assert bus.glitches == 0
    assert [d.actor.id for d in got] == ["a0", "a1"]
    errors = [
        r for r in caplog.records if r.name == "sourcery._messaging.publishing" and r.exc_info
    ]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)


# -- a publishing process killed between commit and publish ----------------------------------

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down()))
async def test_events_committed_by_a_killed_process_are_published_late_never_lost(
    tmp_path: Path,
) -> None:
    store_url, bus_url = f"sqlite:///{tmp_path / 's.db'}", amqp_url()
    async with await open_bus(bus_url) as bus:
        async with bus.subscribe(["#"], queue="audit"):
            pass  # the durable queue now keeps every event published from here on
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p
        )
        with (tmp_path / "err.txt").open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(TESTS_DIR / "events_publisher.py"), store_url, bus_url],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        assert proc.stdout is not None
        try:
            while True:
                line = await asyncio.to_thread(proc.stdout.readline)
                if not line:
                    pytest.fail(f"child exited: {(tmp_path / 'err.txt').read_text()[-3000:]}")
                if line.split() == [b"sent", b"25"]:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        store = await open_store(store_url)
        try:
            stored = await store.read_events(Cursor(), 100_000)
            # Sends 11..25 were committed and never published: the restart publishes them.
            late = await Publisher(store, bus).publish_pending()
        finally:
            await store.aclose()
        assert late >= 15
        assert len(stored) >= 25
        await bus.publish([(Cursor(2**120), END)])
        got: list[Delivery] = []
        async with bus.subscribe(["#"], queue="audit") as sub:
            async with asyncio.timeout(15):
                async for d in sub:
                    if d.record == END:
                        break
                    got.append(d)
    assert {d.record.id for d in got} == {r.id for _, r in stored}
    assert {(d.position, d.record) for d in got} == set(stored)


END = EventRecord(
    actor_type="marker",
    actor_id="end",
    writer="test",
    n=1,
    id=bytes(16),
    timestamp=0,
    initiated_by="end",
    type="End",
    version=1,
    payload=b"",
)
