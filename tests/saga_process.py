"""A process manager process for the saga kill test: a runtime and the transfer saga.

``python saga_process.py URL BATCH`` prints ``ready``, then runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from sourcery import Runtime, react
from sourcery.examples.transfers import saga, transfers, wallets


async def main(url: str, batch: int) -> None:
    async with (
        Runtime.open(url, [wallets, transfers]) as runtime,
        react(runtime, saga, target=url, batch=batch),
    ):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
