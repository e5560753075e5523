"""A projection process for the kill test: the bank's ledger and balances on a store.

``python projection_process.py URL BATCH`` prints ``ready`` once both run, then runs until
it is killed. It lives at the top of ``tests/`` (on ``sys.path``) so a child can run it.
"""

from __future__ import annotations

import asyncio
import sys

from sourcery import project
from sourcery.examples.bank_views import balances, ledger


async def main(url: str, batch: int) -> None:
    async with project(url, ledger, batch=batch), project(url, balances, batch=batch):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
