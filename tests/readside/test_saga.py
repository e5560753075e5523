"""The transfer saga: every transfer ends completed, refunded or failed, each once, and
money is conserved, embedded and with the process manager killed mid-stream."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sourcery import Runtime, react
from sourcery._core.codec import Codec
from sourcery._readside.reactions import message_id
from sourcery.examples.transfers import (
    Freeze,
    Fund,
    Request,
    saga,
    transfers,
    wallets,
)

from .views import all_events

TESTS_DIR = Path(__file__).resolve().parents[1]
WALLETS = [f"w{i}" for i in range(6)]
FUNDS = 200
FROZEN = "w5"
WALLET_CODEC = Codec(wallets)


async def open_wallets(runtime: Runtime) -> None:
    for name in WALLETS:
        await runtime.send(wallets(name), Fund(FUNDS))
    await runtime.send(wallets(FROZEN), Freeze())


async def request(runtime: Runtime, rng: random.Random, n: int) -> None:
    source, target = rng.sample(WALLETS, 2)
    await runtime.send(transfers(f"t{n}"), Request(source, target, rng.randint(1, 120)))


async def check_transfers(url: str, requested: int) -> Counter[str]:
    """Each transfer finished once, with the wallet events its outcome needs; money kept."""
    async with Runtime.open(url, [wallets, transfers]) as reader:
        total = sum([(await reader.state(wallets(n))).balance for n in WALLETS])
        outcomes = Counter(
            [(await reader.state(transfers(f"t{n}"))).status for n in range(requested)]
        )
    assert total == FUNDS * len(WALLETS)
    assert set(outcomes) <= {"completed", "refunded", "failed"}, outcomes
    steps: dict[str, Counter[str]] = {f"t{n}": Counter() for n in range(requested)}
    finished: Counter[str] = Counter()
    for record in await all_events(url):
        if record.actor_type == "wallet" and record.type not in ("Funded", "Frozen"):
            transfer = WALLET_CODEC.decode_payload(record.type, record.version, record.payload)
            steps[transfer.transfer][record.type] += 1  # type: ignore[union-attr]
        elif record.type == "Finished":
            finished[record.actor_id] += 1
    assert set(finished.values()) == {1} and len(finished) == requested
    for name, seen in steps.items():
        assert set(seen.values()) == {1}, (name, seen)  # no step twice
        assert set(seen) in (
            {"Debited", "Credited"},
            {"Debited", "CreditRefused", "Refunded"},
            {"DebitRefused"},
        ), (name, seen)
    return outcomes


def test_message_ids_come_from_the_event_and_the_handler() -> None:
    assert message_id("m", "h", 255, 1) == "pm:m:h:000000000000000000000000000000ff:1"


async def test_the_saga_embedded(make_url: Callable[[], str]) -> None:
    url = make_url()
    rng = random.Random(4)
    async with Runtime.open(url, [wallets, transfers]) as runtime:
        await open_wallets(runtime)
        async with react(runtime, saga, target=url, batch=7) as running:
            for n in range(40):
                await request(runtime, rng, n)
            await running.caught_up(timeout=60)
            status = await running.status()
            assert status.state == "running" and status.lag == 0
    outcomes = await check_transfers(url, 40)
    assert set(outcomes) == {"completed", "refunded", "failed"}


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_the_saga_with_its_process_killed(make_url: Callable[[], str]) -> None:
    url = make_url()
    rng = random.Random(os.urandom(8))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])}
    requested = mid_stream = 0
    async with Runtime.open(url, [wallets, transfers]) as runtime:
        await open_wallets(runtime)
        for _ in range(12):
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                str(TESTS_DIR / "saga_process.py"),
                url,
                str(rng.choice([1, 4, 20])),
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            assert child.stdout is not None
            assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"ready"
            for _ in range(rng.randint(5, 15)):
                await request(runtime, rng, requested)
                requested += 1
            await asyncio.sleep(rng.uniform(0, 0.15))
            child.send_signal(signal.SIGKILL)
            await child.wait()
            finished = sum(r.type == "Finished" for r in await all_events(url))
            mid_stream += finished < requested
    async with (
        Runtime.open(url, [wallets, transfers]) as runtime,
        react(runtime, saga, target=url) as running,
    ):
        await running.caught_up(timeout=60)
    outcomes = await check_transfers(url, requested)
    print(f"{requested} transfers, 12 kills ({mid_stream} mid-stream): {dict(outcomes)}")
    assert mid_stream >= 2
