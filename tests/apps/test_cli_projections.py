"""``sourcery project`` and ``sourcery projections status|skip`` on a SQLite store."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from sourcery import Event, Projection, ProjectionParked, ProjectionTransaction, Runtime, project
from sourcery._apps.cli import main
from sourcery._readside.admin import statuses
from sourcery.examples.bank import Deposit, Deposited, accounts

picky = Projection("picky", [accounts])


@picky.on(Deposited)
async def _deposited(event: Event[Deposited], tx: ProjectionTransaction) -> None:
    if event.payload.amount == 13:
        raise ValueError("no 13s")


def test_status_and_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/store.db"

    async def park() -> int:
        async with Runtime.open(url, [accounts]) as runtime:
            thirteen = (await runtime.send(accounts("a"), Deposit(13))).events[0].id
            async with project(url, picky, max_failures=2, backoff=0.01) as running:
                with pytest.raises(ProjectionParked):
                    await running.caught_up(timeout=30)
            return thirteen

    thirteen = asyncio.run(park())
    assert main(["projections", "status", url]) == 0
    shown = capsys.readouterr().out
    assert "picky" in shown and "parked" in shown and "no 13s" in shown
    assert main(["projections", "skip", "picky", "--event", "1", "--store", url]) == 1
    assert main(["projections", "skip", "picky", "--event", str(thirteen), "--store", url]) == 0
    (status,) = asyncio.run(statuses(url))
    assert (status.state, status.lag, status.events) == ("running", 0, 1)


def test_project_runs_until_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"

    async def scenario() -> None:
        async with Runtime.open(url, [accounts]) as runtime:
            for amount in range(1, 30):
                await runtime.send(accounts(f"a{amount % 3}"), Deposit(amount))
        tests = str(Path(__file__).resolve().parents[1])
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sourcery",
            "project",
            "sourcery.examples.bank_views:ledger",
            "--store",
            url,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path])},
        )
        assert child.stdout is not None
        assert b"running bank-ledger" in await asyncio.wait_for(child.stdout.readline(), 60)
        for _ in range(300):
            found = await statuses(url)
            if found and found[0].events == 29:
                break
            await asyncio.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 30) == 0
        (status,) = await statuses(url)
        assert (status.name, status.events, status.lag) == ("bank-ledger", 29, 0)

    asyncio.run(scenario())
