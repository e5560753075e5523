"""Exactly once through ``kill -9``: a projection process killed at random moments while
commands keep arriving; its tables end equal to a fold of every stored event."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sourcery import Runtime, project
from sourcery.examples.bank import Open, accounts
from sourcery.examples.bank_views import balances, ledger

from .views import all_events, check_ledger, random_command, rows

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
    pytest.mark.slow,
]

TESTS_DIR = Path(__file__).resolve().parents[1]
RUNS = 20
ACCOUNTS = [f"k{i}" for i in range(8)]


async def traffic(runtime: Runtime, stop: asyncio.Event, seed: int) -> int:
    """Commands until ``stop``, a few milliseconds apart; how many were acknowledged."""
    rng = random.Random(seed)
    done = 0
    while not stop.is_set():
        if await random_command(runtime, rng, ACCOUNTS, deposits=0.7) is not None:
            done += 1
        await asyncio.sleep(rng.uniform(0, 0.004))
    return done


async def position(url: str) -> int:
    found = await rows(url, "SELECT events FROM sourcery_projections WHERE name = 'bank-ledger'")
    return int(found[0][0]) if found else 0


async def test_a_projection_process_killed_at_random_moments(
    make_url: Callable[[], str],
) -> None:
    url = make_url()
    rng = random.Random(os.urandom(8))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])}
    mid_work = 0
    async with Runtime.open(url, [accounts]) as runtime:
        for name in ACCOUNTS:
            await runtime.send(accounts(name), Open(name))
        stop = asyncio.Event()
        writing = asyncio.create_task(traffic(runtime, stop, rng.randrange(1 << 30)))
        for run in range(RUNS):
            before = await position(url) if run else 0  # the child makes the table
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                str(TESTS_DIR / "projection_process.py"),
                url,
                str(rng.choice([1, 3, 10, 50])),
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line.strip() == b"ready", line
            await asyncio.sleep(rng.uniform(0, 0.4))
            child.send_signal(signal.SIGKILL)
            await child.wait()
            after = await position(url)
            if before < after < len(await all_events(url)):
                mid_work += 1  # killed with work done and work left
        stop.set()
        acknowledged = await writing
        async with project(url, ledger) as a, project(url, balances) as b:
            await a.caught_up(timeout=60)
            await b.caught_up(timeout=60)
        events = await check_ledger(url)
        assert await position(url) == len(events) == acknowledged + len(ACCOUNTS)
        table = await rows(url, "SELECT account, balance FROM balances")
        assert len(table) == len(ACCOUNTS)
        for account, balance in table:
            assert int(balance) == (await runtime.state(accounts(account))).balance
    print(f"{RUNS} kills, {mid_work} of a projection that had projected and was behind")
    assert mid_work >= RUNS // 4
