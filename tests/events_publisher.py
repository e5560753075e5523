"""A worker-like process for the kill -9 test of ``test_publishing.py``: it commits
deposits and runs a publisher that publishes only when woken, so the test knows which
committed events cannot have been published when it kills the process.

Usage: python events_publisher.py STORE_URL BUS_URL
"""

from __future__ import annotations

import asyncio
import sys

from sourcery import Runtime
from sourcery._messaging.publishing import Publisher
from sourcery._messaging.topics import open_bus
from sourcery.examples.bank import Deposit, accounts


async def main(store_url: str, bus_url: str) -> None:
    bus = await open_bus(bus_url)
    async with (
        bus,
        Runtime.open(store_url, [accounts]) as rt,
        Publisher.running(rt.store, bus, interval=3600) as publisher,
    ):
        for i in range(1, 10_000):
            await rt.send(accounts(f"a{i % 4}"), Deposit(amount=i))
            if i == 10:
                publisher.wake()
                while publisher.published < 10:
                    await asyncio.sleep(0.01)
            print("sent", i, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
