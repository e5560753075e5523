"""Run in a fresh process by the benchmark: touch N actors once, report peak memory."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from sourcery import Runtime
from sourcery.examples.bank import Deposit, accounts


def _status_mb(field: str) -> float:
    """A figure from /proc/self/status: VmHWM is the peak resident set, reset by exec
    (unlike getrusage's maxrss, which a forked child inherits from its parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


async def touch(path: str, actors: int) -> dict[str, float]:
    before = _status_mb("VmRSS")
    async with Runtime.open(f"sqlite:///{path}", [accounts]) as rt:
        most = 0

        async def client(start: int) -> None:
            nonlocal most
            for i in range(start, actors, 100):
                await rt.send(accounts(f"acct-{i}"), Deposit(1))
                most = max(most, rt.actors_in_memory)

        await asyncio.gather(*(client(k) for k in range(100)))
        limit = rt.max_actors
    peak = _status_mb("VmHWM")
    return {
        "memory_actors_touched": actors,
        "memory_max_actors_setting": limit,
        "memory_most_actors_held": most,
        "memory_rss_before_mb": before,
        "memory_peak_rss_mb": peak,
        "memory_growth_mb": peak - before,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(touch(sys.argv[1], int(sys.argv[2])))))
