"""A subscriber process for the kill -9 test of ``test_subscriptions.py``.

It resumes a catch-up subscription from its checkpoint file, appends one line per delivery
(``run position actor writer n``) to its output and fsyncs it, then saves the position
(write a temporary file, fsync, rename): so after a SIGKILL the checkpoint is never past
what the output holds.

Usage: python events_subscriber.py STORE_URL BUS_URL OUTPUT CHECKPOINT RUN
"""

from __future__ import annotations

import asyncio
import os
import sys

from sourcery._core.records import BEGINNING, Cursor
from sourcery._messaging.subscriptions import subscribe
from sourcery._messaging.topics import open_bus
from sourcery._stores import open_store


def load(path: str) -> Cursor:
    try:
        with open(path) as f:
            seq, check = f.read().split()
    except FileNotFoundError:
        return BEGINNING
    return Cursor(int(seq), bytes.fromhex(check))


def save(path: str, position: Cursor) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{position.seq} {position.check.hex()}")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def main(store_url: str, bus_url: str, output: str, checkpoint: str, run: str) -> None:
    store = await open_store(store_url)
    bus = await open_bus(bus_url)
    try:
        after = load(checkpoint)
        with open(output, "a") as out:
            async with subscribe(store, bus, ["account.*"], after=after, queue="crashy") as sub:
                print("ready", flush=True)
                async for d in sub:
                    out.write(f"{run} {d.position.seq} {d.actor.id} {d.dot[0]} {d.dot[1]}\n")
                    out.flush()
                    os.fsync(out.fileno())
                    save(checkpoint, d.position)
    finally:
        await bus.aclose()
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
